"""The GitHub Actions workflow (.github/workflows/ci.yml) against what it stands for: a
workflow GitHub can read, running the sessions a bare ``nox`` runs (what .ci/run runs),
the tests on every Python that noxfile.py runs them on, with a server for each engine the
tests use, where tests/servers.py looks for it.

No JSON schema of GitHub workflows is at hand offline, so the shape is checked by hand:
the keys GitHub documents for a workflow, a job and a step. noxfile.py and
tests/servers.py are read with ``ast`` rather than imported: nox is not installed in the
environments the tests run in, and importing tests/servers.py reads the developer's own
server settings.
"""

import ast
import re
import shlex
import sys
from urllib.parse import urlparse

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli where the standard library has no tomllib
    import tomli as tomllib

WORKFLOW_FILE = PROJECT_ROOT / ".github" / "workflows" / "ci.yml"
NOXFILE = PROJECT_ROOT / "noxfile.py"
SERVERS_FILE = PROJECT_ROOT / "tests" / "servers.py"
PYPROJECT = PROJECT_ROOT / "pyproject.toml"

WORKFLOW_KEYS = {"name", "run-name", "on", "permissions", "env", "defaults", "concurrency", "jobs"}
JOB_KEYS = {
    "name", "needs", "permissions", "runs-on", "environment", "concurrency", "outputs",
    "env", "defaults", "if", "steps", "timeout-minutes", "strategy", "continue-on-error",
    "container", "services",
}  # fmt: skip
STEP_KEYS = {
    "id", "if", "name", "uses", "run", "shell", "with", "env", "continue-on-error",
    "timeout-minutes", "working-directory",
}  # fmt: skip
SERVICE_KEYS = {"image", "credentials", "env", "ports", "volumes", "options"}
ACTION = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[\w.-]+$")  # owner/repo[/path]@ref
MATRIX_REFERENCE = re.compile(r"\$\{\{\s*matrix\.([\w-]+)\s*\}\}")
PYTHON_CLASSIFIER = re.compile(r"^Programming Language :: Python :: (3\.\d+)$")
# The images that serve each server engine of the tests, and the variable that lets the
# tests reach it as tests/servers.py's URL says: no password.
SERVER_IMAGES = {"postgres": ("postgres",), "mysql": ("mariadb", "mysql")}
PASSWORDLESS = {
    "postgres": ("POSTGRES_HOST_AUTH_METHOD", "trust"),
    "mysql": ("MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "1"),
}
SERVER_SETTINGS = {"postgres": "CLONEGALLERY_TEST_POSTGRES", "mysql": "CLONEGALLERY_TEST_MYSQL"}


# --- reading the files --------------------------------------------------------------------


@pytest.fixture(scope="module")
def workflow():
    """The workflow as GitHub reads it: YAML 1.1, where a bare ``on`` key is the boolean
    true, so it is put back under its name."""
    loaded = yaml.safe_load(WORKFLOW_FILE.read_text(encoding="utf-8"))
    if True in loaded:
        loaded["on"] = loaded.pop(True)
    return loaded


@pytest.fixture(scope="module")
def tests_job(workflow):
    """The job that runs nox's tests session."""
    (job,) = [job for job in workflow["jobs"].values() if "tests" in sessions_run_by(job)]
    return job


def steps_of(workflow):
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def nox_commands(job):
    """Return the argument lists of the ``nox`` commands a job's steps run."""
    commands = []
    for step in job["steps"]:
        for line in step.get("run", "").replace("\\\n", " ").splitlines():
            words = shlex.split(line.replace("${{", "'${{").replace("}}", "}}'"))
            if words[:1] == ["nox"]:
                commands.append(words[1:])
    return commands


def sessions_run_by(job):
    """Return the nox sessions a job runs, by name (``tests-${{ matrix.python }}``: tests)."""
    sessions = set()
    for arguments in nox_commands(job):
        assert arguments[:1] == ["-s"], f"nox {' '.join(arguments)}: name the sessions with -s"
        for name in arguments[1:]:
            sessions.add(re.sub(r"-\$\{\{.*\}\}$", "", name))
    return sessions


def noxfile_tree():
    return ast.parse(NOXFILE.read_text(encoding="utf-8"))


def noxfile_assignment(name):
    """Return the source of what noxfile.py assigns to ``name`` at module level."""
    for node in noxfile_tree().body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == [name]:
            return ast.unparse(node.value)
    raise AssertionError(f"noxfile.py does not assign {name}")


def noxfile_constant(name):
    """Return the literal value noxfile.py assigns to ``name`` at module level."""
    return ast.literal_eval(noxfile_assignment(name))


def nox_sessions():
    """Return {session name: its @nox.session decorator's keywords, as source}."""
    sessions = {}
    for node in noxfile_tree().body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            called = decorator.func if isinstance(decorator, ast.Call) else decorator
            if ast.unparse(called) != "nox.session":
                continue
            keywords = getattr(decorator, "keywords", [])
            options = {keyword.arg: ast.unparse(keyword.value) for keyword in keywords}
            sessions[ast.literal_eval(options.get("name", repr(node.name)))] = options
    return sessions


def pythons_of_the_classifiers():
    """The Pythons pyproject.toml's classifiers list, read as nox.project.python_versions
    reads them (noxfile.py's PYTHON_VERSIONS), in version order."""
    classifiers = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["classifiers"]
    found = [match[1] for match in map(PYTHON_CLASSIFIER.match, classifiers) if match]
    return sorted(found, key=lambda version: tuple(map(int, version.split("."))))


def default_server_url(engine):
    """The server tests/servers.py uses for ``engine`` when nothing says otherwise."""
    for node in ast.walk(ast.parse(SERVERS_FILE.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) == "os.environ.get"
            and ast.literal_eval(node.args[0]) == SERVER_SETTINGS[engine]
        ):
            return ast.literal_eval(node.args[1])
    raise AssertionError(f"tests/servers.py has no default for {SERVER_SETTINGS[engine]}")


# --- a workflow GitHub reads --------------------------------------------------------------


def test_the_workflow_has_a_trigger_and_jobs_and_only_keys_github_knows(workflow):
    assert set(workflow) <= WORKFLOW_KEYS
    assert workflow["on"], "the workflow runs on nothing"
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert workflow["jobs"]
    for name, job in workflow["jobs"].items():
        assert re.fullmatch(r"[A-Za-z_][\w-]*", name), f"job id {name!r}"
        assert set(job) <= JOB_KEYS, f"job {name}: {set(job) - JOB_KEYS}"
        assert isinstance(job["runs-on"], str) and job["runs-on"], f"job {name}: runs-on"
        assert job["steps"], f"job {name} has no step"


def test_every_step_either_uses_an_action_at_a_version_or_runs_a_command(workflow):
    for step in steps_of(workflow):
        assert set(step) <= STEP_KEYS, f"{step}: {set(step) - STEP_KEYS}"
        assert ("uses" in step) != ("run" in step), f"{step}: one of uses and run"
        if "uses" in step:
            assert ACTION.match(step["uses"]), f"{step['uses']}: owner/repo@version"
        else:
            assert isinstance(step["run"], str) and step["run"].strip()


def test_every_job_checks_the_code_out_and_sets_python_up_first(workflow):
    for name, job in workflow["jobs"].items():
        actions = [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]

        assert actions[:2] == ["actions/checkout", "actions/setup-python"], f"job {name}"


def test_a_job_refers_only_to_its_own_matrix(workflow):
    for name, job in workflow["jobs"].items():
        matrix = job.get("strategy", {}).get("matrix", {})
        referred = set(MATRIX_REFERENCE.findall(yaml.safe_dump(job)))

        assert referred <= set(matrix), f"job {name} refers to matrix.{referred - set(matrix)}"


# --- the sessions nox runs ----------------------------------------------------------------


def test_the_workflow_runs_every_session_a_bare_nox_runs(workflow):
    default_sessions = {
        name for name, options in nox_sessions().items() if options.get("default") != "False"
    }
    run = set().union(*(sessions_run_by(job) for job in workflow["jobs"].values()))

    assert {"tests", "lint", "docs"} <= default_sessions
    assert run == default_sessions


def test_the_tests_run_once_per_python_of_the_matrix_with_that_python_set_up(tests_job):
    (setup,) = [s for s in tests_job["steps"] if s.get("uses", "").startswith("actions/setup-")]

    assert nox_commands(tests_job) == [["-s", "tests-${{ matrix.python }}"]]
    assert setup["with"]["python-version"] == "${{ matrix.python }}"
    assert tests_job["strategy"]["fail-fast"] is False  # one Python's failure hides no other's


def test_the_matrix_is_every_python_nox_runs_the_tests_on(tests_job):
    matrix = tests_job["strategy"]["matrix"]["python"]

    assert matrix == pythons_of_the_classifiers()
    assert all(isinstance(version, str) for version in matrix)  # 3.10 is not 3.1
    assert "3.14" in matrix
    assert noxfile_constant("MAIN_PYTHON") in matrix  # the one that runs every engine
    assert noxfile_constant("NOT_YET_EVERYWHERE") <= set(matrix)


def test_noxfile_reads_the_tests_pythons_from_the_classifiers_as_this_test_does():
    assert noxfile_assignment("PYPROJECT") == "nox.project.load_toml('pyproject.toml')"
    assert noxfile_assignment("PYTHON_VERSIONS") == "nox.project.python_versions(PYPROJECT)"
    assert nox_sessions()["tests"]["python"] == "available(PYTHON_VERSIONS)"


def test_the_classifiers_are_read_as_nox_itself_reads_them():
    nox = pytest.importorskip("nox", reason="nox is not installed in nox's own sessions")

    pythons = nox.project.python_versions(nox.project.load_toml(str(PYPROJECT)))

    assert pythons == pythons_of_the_classifiers()


# --- the servers --------------------------------------------------------------------------


def test_each_server_engine_of_the_tests_has_a_service_where_the_tests_look_for_it(tests_job):
    server_engines = [e for e in noxfile_constant("ENGINES") if e != "sqlite"]
    services = tests_job["services"]

    assert sorted(server_engines) == sorted(SERVER_IMAGES)
    for engine in server_engines:
        server = urlparse(default_server_url(engine))
        (service,) = [
            service
            for service in services.values()
            if service["image"].split(":")[0] in SERVER_IMAGES[engine]
        ]
        variable, value = PASSWORDLESS[engine]

        assert set(service) <= SERVICE_KEYS
        assert server.hostname in ("127.0.0.1", "localhost")
        assert f"{server.port}:{server.port}" in [str(port) for port in service["ports"]]
        assert server.password is None and str(service["env"][variable]) == value
        assert "--health-cmd" in service["options"]  # the jobs start once it answers
        assert re.fullmatch(r"[\w.-]+:\d+(\.\d+)*", service["image"])  # a pinned major
