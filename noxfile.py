"""Nox sessions: ``nox`` runs the tests on every installed Python, the linters and the docs' build.

nox -s tests-3.12 -- -k status     # one Python, arguments passed to pytest
nox -s lint
nox -s lint-migrations           # invoke db.lint on the project's migrations (SQLite, PostgreSQL)
nox -s docs                      # the documentation site (mkdocs.yml, docs/), --strict, into site/
nox -s mutation -- db/loader.py  # mutation testing of one module (or folder)
"""

import json
import os
import shutil
from pathlib import Path

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON_VERSIONS = nox.project.python_versions(PYPROJECT)
# Versions listed in pyproject.toml that this machine may not have yet; they run
# where installed and are left out elsewhere. The others must exist: under CI=true
# nox fails on a missing interpreter.
NOT_YET_EVERYWHERE = {"3.14"}
ENGINES = ["sqlite", "postgres", "mysql"]
# The Python that runs the suite on every engine; the others run it on SQLite. What
# differs between Pythons is our code's and the drivers' behaviour, which SQLite
# exercises whole; the servers behave the same whichever Python talks to them, and
# running them under every Python would take CI past its time budget.
MAIN_PYTHON = "3.11"
# The server-bound tests mostly wait on the servers' disks: run them side by side.
PYTEST_WORKERS = "4"

nox.options.reuse_venv = "yes"


def available(versions):
    """Return the versions to run: all required ones, and the optional ones found here."""
    return [v for v in versions if v not in NOT_YET_EVERYWHERE or shutil.which(f"python{v}")]


def install_for_tests(session):
    session.install(
        "-e",
        ".[postgres,mysql,squawk,litestream]",
        *nox.project.dependency_groups(PYPROJECT, "test"),
    )


@nox.session(python=available(PYTHON_VERSIONS))
def tests(session):
    """Run the whole test suite: on SQLite, PostgreSQL and MariaDB/MySQL with the main
    Python; on SQLite, less the slow crash and concurrency tests, with the others."""
    install_for_tests(session)
    main = session.python == MAIN_PYTHON
    engines = ",".join(ENGINES if main else ["sqlite"])
    chosen = os.environ.get("CLONEGALLERY_TEST_ENGINES", engines)  # a developer's choice wins
    # The crash and concurrency tests (marked slow) kill and race processes: what they
    # prove is the OS's and the engines' part, the same under every Python.
    only_fast = [] if main else ["-m", "not slow"]
    session.run(
        "pytest", "-n", PYTEST_WORKERS, *only_fast, *session.posargs,
        env={"CLONEGALLERY_TEST_ENGINES": chosen},
    )  # fmt: skip


@nox.session(default=False)
@nox.parametrize("engine", ENGINES)
def engine(session, engine):
    """Run the engine-parametrized tests on one engine (a missing server skips, or fails on CI)."""
    install_for_tests(session)
    session.run(
        "pytest", "-n", PYTEST_WORKERS, "-m", "engine", *session.posargs,
        env={"CLONEGALLERY_TEST_ENGINES": engine},
    )  # fmt: skip


@nox.session
def lint(session):
    """Check style and formatting with ruff."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


# The PostgreSQL server lint-migrations makes its scratch database on (the tests' too).
POSTGRES_SERVER = os.environ.get(
    "CLONEGALLERY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432"
)
SCRATCH_DATABASE = """
import sys
from db.engines import engine_for_url
url, action = sys.argv[1:]
engine = engine_for_url(url)
engine.drop(url)
if action == "create":
    engine.create(url)
"""


@nox.session(name="lint-migrations")
def lint_migrations(session):
    """Lint the project's own migrations (invoke db.lint) as they would run on a fresh
    SQLite file and a fresh PostgreSQL database (Squawk)."""
    session.install("-e", ".[postgres,squawk]")
    sqlite = Path(session.create_tmp()) / "lint.db"
    sqlite.unlink(missing_ok=True)
    session.run("invoke", "db.lint", *session.posargs, env={"DATABASE_URL": f"sqlite:///{sqlite}"})
    postgres = f"{POSTGRES_SERVER}/clonegallery_lint_{os.getpid()}"
    session.run("python", "-c", SCRATCH_DATABASE, postgres, "create")
    try:
        session.run("invoke", "db.lint", *session.posargs, env={"DATABASE_URL": postgres})
    finally:
        session.run("python", "-c", SCRATCH_DATABASE, postgres, "drop")


@nox.session
def docs(session):
    """Build the documentation site (mkdocs.yml, docs/) into site/; a broken link, anchor or
    included README section fails it (--strict)."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "docs"))
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs,
        env={"NO_MKDOCS_2_WARNING": "1"},  # Material's banner about MkDocs' future, each run
    )  # fmt: skip


BENCHMARKS = (
    "populate", "backup", "transfer", "startup", "live_migration", "pitr", "querylog", "search",
    "tenants",
)  # fmt: skip
# Each benchmark at a tiny size, its targets unchecked: enough that one cannot break unseen.
SMOKE_SIZES = {
    "populate": ["--images", "2000"],
    "backup": ["--images", "2000", "--pg-images", "2000", "--repeats", "1"],
    "transfer": ["--images", "2000"],
    "startup": ["--repeats", "3"],
    "live_migration": ["--images", "20000", "--settle", "0.5", "--hold", "1"],
    "pitr": ["--images", "2000", "--pg-images", "10000", "--repeats", "1"],
    "querylog": ["--images", "2000", "--repeats", "1"],
    "search": ["--images", "2000", "--searches", "20", "--repeats", "1"],
    "tenants": ["--tenants", "3", "--jobs", "2"],
}


def install_for_bench(session):
    """Install the toolkit with what the benchmarks drive: psycopg, PyMySQL (search), Litestream,
    and pytest (pitr starts its throwaway clusters with tests/clusters.py)."""
    session.install("-e", ".[postgres,mysql,litestream]", "pytest")


@nox.session(default=False)
def bench(session):
    """Benchmark populate, backup/restore and transfer against the engines' own tools,
    start-up against Invoke + peewee, a writer's stalls while migrations change a large
    live PostgreSQL table, and point-in-time recovery's replica lag and restores (slow:
    minutes). ``nox -s bench -- backup --images 100000`` runs one, with options."""
    install_for_bench(session)
    chosen = [name for name in session.posargs if name in BENCHMARKS]
    options = [arg for arg in session.posargs if arg not in BENCHMARKS]
    for name in chosen or BENCHMARKS:
        session.run("python", f"benchmarks/{name}.py", *options)


@nox.session(name="bench-smoke")
def bench_smoke(session):
    """Run every benchmark at a tiny size, checking no target (part of the default run)."""
    install_for_bench(session)
    for name in BENCHMARKS:
        session.run("python", f"benchmarks/{name}.py", *SMOKE_SIZES[name], "--smoke")


# The modules mutation testing covers, and the tests that pin each down (the most
# specific entry wins): a run over one deselects the rest of [tool.mutmut]'s test files
# (pyproject.toml), so a mutant that survives is not retried by every test that merely
# migrates a database or takes a backup first.
MUTATION_TESTS = {
    "db/loader.py": ["tests/test_loader.py", "tests/test_runner.py"],
    "db/runner.py": ["tests/test_runner.py"],
    "db/config.py": ["tests/test_config.py"],
    "db/history.py": ["tests/test_history.py", "tests/test_runner.py"],
    "db/backups/": [
        "tests/test_manifest.py",
        "tests/test_backup.py",
        "tests/test_retention.py",
        "tests/test_backup_leftovers.py",
        "tests/test_encryption.py",
        "tests/test_backup_ownership.py",
        "tests/test_restore.py",
        "tests/test_restore_bad_day.py",
    ],
    "db/backups/owner.py": [
        "tests/test_backup_ownership.py",
        "tests/test_manifest.py",
        "tests/test_retention.py",
    ],
    "db/backups/files.py": [
        "tests/test_backup_leftovers.py",
        "tests/test_manifest.py",
        "tests/test_encryption.py",
    ],
}
# mutmut's exit codes per mutant, as its own "results" names them.
KILLED_CODES = {1, 3, 24, -24, 36, 152, 255}  # a test failed, or the mutant hung (timeout)
SURVIVED_CODES = {0}
NO_TEST_CODES = {5, 33}


@nox.session(default=False)
def mutation(session):
    """Plant small bugs one at a time in the core modules (mutmut, SQLite) and print, per
    module, how many the tests caught (slow). ``nox -s mutation -- db/loader.py`` runs one."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "mutation"))
    paths = session.posargs or list(MUTATION_TESTS)
    for path in paths:  # one run each, with that module's tests only
        deselected = [f"--deselect={test}" for test in tests_not_for(path)]
        session.run(
            "mutmut", "run", "--max-children", "2", mutant_pattern(path),
            env={"CLONEGALLERY_TEST_ENGINES": "sqlite", "PYTEST_ADDOPTS": " ".join(deselected)},
        )  # fmt: skip
    print_mutation_scores(paths)


def tests_not_for(path):
    """Return the mutation test files that do not pin ``path`` down (none for a path
    MUTATION_TESTS does not know: every test then runs)."""
    known = [module for module in MUTATION_TESTS if path.startswith(module.rstrip("/"))]
    if not known:
        return []
    wanted = set(MUTATION_TESTS[max(known, key=len)])
    every = {test for tests in MUTATION_TESTS.values() for test in tests}
    return sorted(every - wanted)


def mutant_pattern(path):
    """Return the mutmut name pattern of a module or folder path (db/backups/ -> db.backups.*)."""
    dotted = path.rstrip("/").removesuffix(".py").replace("/", ".")
    if path.endswith("__init__.py"):
        return dotted.removesuffix(".__init__") + ".x*"  # the package's own functions
    return dotted + ".*"


def modules_under(path):
    """Return the Python files a module or folder path names."""
    found = Path(path)
    return sorted(found.glob("*.py")) if found.is_dir() else [found]


def print_mutation_scores(paths):
    """Print, per module, killed / checked mutants from mutmut's results in mutants/
    (a mutant no test reaches counts as not killed; one not run yet is left out)."""
    print(f"{'module':<28} {'killed':>6} / {'total':<6} {'score':>5}  survived  no-tests  not-run")
    for module in (module for path in paths for module in modules_under(path)):
        meta = Path("mutants") / f"{module}.meta"
        if not meta.exists():
            continue
        codes = list(json.loads(meta.read_text())["exit_code_by_key"].values())
        killed = sum(code in KILLED_CODES for code in codes)
        survived = sum(code in SURVIVED_CODES for code in codes)
        untested = sum(code in NO_TEST_CODES for code in codes)
        checked = sum(code is not None for code in codes)  # others: suspicious, segfault
        score = f"{100 * killed / checked:.0f}%" if checked else "-"
        print(
            f"{module!s:<28} {killed:>6} / {checked:<6} {score:>5}"
            f"  {survived:>8}  {untested:>8}  {len(codes) - checked:>7}"
        )
