"""``docker-compose.yml``, the ``Dockerfile`` and ``.dockerignore``, read as data.

No Docker engine runs where the tests do, so these tests check what can go wrong without
one: the services of the seed documents exist and run the right tasks, the data lives in
declared named volumes, every ``invoke`` task (and option) named anywhere exists in the real
``invoke --list``, no password is ever on a command line, and the image holds what the tasks
need (the engines' dump and restore clients, of the compose server's major) and runs them as
a non-root user who can write the data and backups folders. What the image's user can do is
tested by running the tasks that way: tests/test_container.py.
"""

import functools
import itertools
import json
import re
import shlex
from pathlib import PurePosixPath

import pytest
import yaml

from db.engines import open_database
from db.schedule import parse_duration
from tests.conftest import PROJECT_ROOT, ok, one_error_line, run_invoke, sqlite_url

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"

DATA_DIR = "/app/data"
BACKUPS_DIR = "/app/backups"
POSTGRES_DATA_DIR = "/var/lib/postgresql/data"
# The PostgreSQL client major each Debian release ships (postgresql-client-N).
DEBIAN_POSTGRES_CLIENT = {"bookworm": 15, "trixie": 17}
ONE_SHOT_TASKS = {
    "db-migrate": ("db.migrate", []),
    "db-seed": ("db.seed", []),
    # No terminal to confirm on in a container: without --yes, db.reset refuses.
    "db-reset": ("db.reset", ["--yes"]),
}
TOOLKIT_SERVICES = ["db", "db-backup", *ONE_SHOT_TASKS]
SHELL_SEPARATORS = {"&&", "||", ";", "|", "&"}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}: a value Compose substitutes.
SUBSTITUTION = re.compile(r"\$\{(?P<name>\w+)(?::?[-?](?P<default>[^}]*))?\}")
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
# $${NAME:+WORD}: WORD when NAME is set, left by Compose ($$) to the container's shell.
CONTAINER_CONDITIONAL = re.compile(r"\$\$\{(?P<name>\w+):\+(?P<word>[^}]*)\}")


# -- reading the files -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose():
    """The parsed docker-compose.yml (anchors and ``<<`` merges resolved)."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose):
    """The services of docker-compose.yml, by name."""
    return compose["services"]


@pytest.fixture(scope="module")
def invoke_tasks():
    """The task names printed by the real ``invoke --list`` of the project."""
    listing = run_invoke("--list")
    assert listing.returncode == 0, listing.stderr
    # Task lines are indented by two spaces; wrapped descriptions by many more.
    return set(re.findall(r"^  (\S+)", listing.stdout, flags=re.MULTILINE))


@functools.cache
def task_options(task):
    """Return the options ``invoke --help TASK`` lists (``--yes``, ``-y``...)."""
    help_text = run_invoke("--help", task).stdout
    return set(re.findall(r"(?<![\w-])(--?\w[\w-]*)", help_text.partition("Options:")[2]))


def dockerfile():
    """Return the Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile_arguments(keyword):
    """Return the arguments of every ``KEYWORD`` instruction of the Dockerfile, in order."""
    return [arguments for found, arguments in dockerfile() if found == keyword]


def dockerfile_environment():
    """Return the variables the Dockerfile's ENV instructions set, the last one winning."""
    variables = {}
    for arguments in dockerfile_arguments("ENV"):
        words = shlex.split(arguments)
        if "=" in words[0]:
            variables.update(word.split("=", 1) for word in words)
        else:  # the legacy form: ENV NAME value
            variables[words[0]] = " ".join(words[1:])
    return variables


def apt_installs():
    """Return the ``apt-get install`` commands of the Dockerfile, each as a list of words."""
    installs = []
    for run in dockerfile_arguments("RUN"):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            if words[:2] == ["apt-get", "install"]:
                installs.append(words)
    return installs


def installed_packages():
    """Return the Debian packages the Dockerfile installs."""
    return {word for words in apt_installs() for word in words[2:] if not word.startswith("-")}


def image_major(image):
    """Return the major version of an image tag such as ``postgres:15-alpine``."""
    found = re.fullmatch(r"[\w./-]+:(\d+)(?:[.-].*)?", image)
    assert found, f"{image}: no major version in the tag"
    return int(found.group(1))


def exec_or_shell_form(arguments):
    """Return a CMD/ENTRYPOINT as Compose writes it: a list (exec form) or a string (shell)."""
    return json.loads(arguments) if arguments.startswith("[") else arguments


def environment(service):
    """Return a service's environment as a dict, whichever syntax it is written in."""
    variables = service.get("environment") or {}
    if isinstance(variables, list):
        variables = dict(item.partition("=")[::2] for item in variables)
    return {name: str(value) for name, value in variables.items()}


def named_volumes(service):
    """Return {mount point: volume name} for the named volumes a service mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "volume" and volume.get("source"):
                mounts[volume["target"]] = volume["source"]
            continue
        source, _, rest = volume.partition(":")
        if rest and not source.startswith((".", "/", "~", "$")):
            mounts[rest.split(":")[0]] = source
    return mounts


# -- reading commands --------------------------------------------------------------------


def shell_words(command):
    """Split a command (exec list, shell string or healthcheck test) into shell words.

    Each list item is split too, so ``["sh", "-c", "invoke db.setup && sleep infinity"]``
    gives ``sh -c invoke db.setup && sleep infinity``, ``&&`` a word of its own.
    """
    words = []
    for part in [command] if isinstance(command, str) else command:
        lexer = shlex.shlex(part, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words.extend(lexer)
    return words


def option_words(arguments):
    """Yield the options among a task's arguments; a container-shell ``$${NAME:+--option}``
    counts as the option it adds when NAME is set."""
    for argument in arguments:
        conditional = CONTAINER_CONDITIONAL.fullmatch(argument)
        word = conditional["word"] if conditional else argument
        if word.startswith("-"):
            yield word


def option_values(arguments):
    """Return {option: the argument after it} of a task's ``--option VALUE`` arguments."""
    return {
        option: value
        for option, value in itertools.pairwise([*arguments, None])
        if option.startswith("-")
    }


def invoke_calls(command):
    """Return each ``invoke TASK ARGS...`` in a command as (TASK, [ARGS])."""
    words = shell_words(command)
    calls = []
    for position, word in enumerate(words):
        if PurePosixPath(word).name == "invoke":
            call = []
            for argument in words[position + 1 :]:
                if argument in SHELL_SEPARATORS:
                    break
                call.append(argument)
            assert call, f"`invoke` without a task in {command!r}"
            calls.append((call[0], call[1:]))
    return calls


def container_commands(services):
    """Yield (where, command) for everything a container runs: in compose, in the image."""
    for name, service in services.items():
        for key in ("entrypoint", "command"):
            if service.get(key):
                yield f"{name}: {key}", service[key]
        if service.get("healthcheck"):
            yield f"{name}: healthcheck", service["healthcheck"]["test"]
    for keyword in ("ENTRYPOINT", "CMD"):
        for arguments in dockerfile_arguments(keyword):
            yield f"Dockerfile: {keyword}", exec_or_shell_form(arguments)


def dockerignore_excludes(path):
    """Whether Docker leaves ``path`` out of the build context.

    As Docker does: the last pattern matching the path, or a folder holding it, decides; a
    ``!`` pattern takes back in; ``*`` and ``?`` stop at ``/``, ``**`` crosses folders.
    """
    parts = PurePosixPath(path).parts
    paths_and_folders = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    excluded = False
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern = glob_pattern(line.removeprefix("!").strip("/"))
        if any(pattern.fullmatch(candidate) for candidate in paths_and_folders):
            excluded = not line.startswith("!")
    return excluded


def glob_pattern(glob):
    """Return the regular expression of a .dockerignore glob."""
    pieces = re.split(r"(\*\*/|\*\*|\*|\?|\[[^\]]*\])", glob)
    meanings = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile(
        "".join(
            meanings.get(piece, piece if piece.startswith("[") else re.escape(piece))
            for piece in pieces
        )
    )


# -- the services ------------------------------------------------------------------------


def test_the_services_of_the_seed_documents_exist(services):
    assert {"db", "db-migrate", "db-seed", "db-reset", "postgres"} <= set(services)


@pytest.mark.parametrize(("name", "expected_call"), ONE_SHOT_TASKS.items())
def test_each_one_shot_service_runs_its_task_once(services, name, expected_call):
    service = services[name]

    assert invoke_calls(service["command"]) == [expected_call]
    assert "entrypoint" not in service
    assert service.get("restart", "no") == "no", "a one-shot service is never restarted"


def test_docker_compose_up_starts_db_and_its_scheduled_backups_only(services):
    """The one-shot services and PostgreSQL wait to be named, so `up` never resets anything."""
    always_started = {name for name, service in services.items() if not service.get("profiles")}

    assert always_started == {"db", "db-backup"}


def test_db_sets_up_the_database_on_start_then_stays_up_for_exec(services):
    db = services["db"]
    words = shell_words(db["command"])

    assert [task for task, _ in invoke_calls(db["command"])] == ["db.setup"]
    # Up only once set up (&&), then a process that never ends, for `docker compose exec`.
    assert "&&" in words
    assert words[-2:] == ["sleep", "infinity"]
    assert db.get("restart") in {"always", "unless-stopped", "on-failure"}, (
        "db retries db.setup until its database accepts connections"
    )


def test_db_is_healthy_while_every_migration_is_applied(services):
    healthcheck = services["db"]["healthcheck"]

    assert invoke_calls(healthcheck["test"]) == [("db.status", ["--check"])]
    assert healthcheck["test"][0] in {"CMD", "CMD-SHELL"}


# -- sample data -------------------------------------------------------------------------


def compose_default(service, variable):
    """Return the default of a ``${NAME:-default}`` variable in a service's environment."""
    substitution = SUBSTITUTION.fullmatch(environment(service)[variable])
    assert substitution, f"{variable} comes from the shell or .env, with a default"
    return substitution["name"], substitution["default"]


def run_as_compose_does(name, services, url, *extra):
    """Run the invoke task of service ``name`` for real, in the environment compose gives it
    by default, on the database at ``url``; ``extra``: arguments added to the task's."""
    ((task, arguments),) = invoke_calls(services[name]["command"])
    _, environment_name = compose_default(services[name], "INVOKE_DB_ENVIRONMENT")
    return run_invoke(
        task, *arguments, *extra, url=url, env={"INVOKE_DB_ENVIRONMENT": environment_name}
    )


def user_and_image_rows(url):
    database = open_database(url)
    try:
        return tuple(
            database.execute_sql(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("users", "images")
        )
    finally:
        database.close()


@pytest.mark.parametrize("name", TOOLKIT_SERVICES)
def test_the_toolkit_runs_as_production_unless_the_environment_says_otherwise(services, name):
    assert compose_default(services[name], "INVOKE_DB_ENVIRONMENT") == (
        "CLONEGALLERY_ENVIRONMENT",
        "production",
    )


def test_db_sets_up_without_the_sample_seeders(services):
    assert invoke_calls(services["db"]["command"]) == [("db.setup", ["--no-sample"])]


def test_what_db_runs_on_start_leaves_no_sample_rows(services, tmp_path):
    """db's own command in compose's default environment, run for real: the database is
    migrated and holds no sample user or image; a restart (a second run) changes nothing."""
    url = sqlite_url(tmp_path / "clonegallery.db")

    ok(run_as_compose_does("db", services, url))
    ok(run_as_compose_does("db", services, url))

    assert user_and_image_rows(url) == (0, 0)
    ok(run_invoke("db.status", "--check", url=url))


def test_db_seed_refuses_sample_data_in_production_and_seeds_it_when_told(services, tmp_path):
    """As the header documents: db-seed alone is refused in production; the developer's
    `db-seed invoke db.seed --force` seeds the sample gallery."""
    url = sqlite_url(tmp_path / "clonegallery.db")
    ok(run_as_compose_does("db", services, url))

    refused = run_as_compose_does("db-seed", services, url)
    one_error_line(refused, 2, "production", "--no-sample", "--force")
    assert user_and_image_rows(url) == (0, 0)

    ok(run_as_compose_does("db-seed", services, url, "--force"))
    assert user_and_image_rows(url) == (5, 8)


def test_db_seed_seeds_the_sample_gallery_when_the_environment_is_development(services, tmp_path):
    """The header's other way: CLONEGALLERY_ENVIRONMENT=development in .env, then db-seed."""
    url = sqlite_url(tmp_path / "clonegallery.db")
    development = {"INVOKE_DB_ENVIRONMENT": "development"}
    ok(run_as_compose_does("db", services, url))
    ((task, arguments),) = invoke_calls(services["db-seed"]["command"])

    ok(run_invoke(task, *arguments, url=url, env=development))

    assert user_and_image_rows(url) == (5, 8)


def test_the_header_tells_a_developer_how_to_get_the_sample_gallery():
    header = COMPOSE_FILE.read_text(encoding="utf-8").split("\nname:", 1)[0]

    assert "CLONEGALLERY_ENVIRONMENT=development" in header
    assert "docker compose run --rm db-seed invoke db.seed --force" in header


def test_db_keeps_its_data_in_a_declared_named_volume(compose, services):
    volume = named_volumes(services["db"]).get(DATA_DIR)

    assert volume, f"db mounts no named volume at {DATA_DIR}"
    assert volume in compose.get("volumes", {})


@pytest.mark.parametrize("name", ONE_SHOT_TASKS)
def test_one_shot_services_work_on_the_database_of_db(services, name):
    assert named_volumes(services[name]).get(DATA_DIR) == named_volumes(services["db"])[DATA_DIR]
    assert (
        environment(services[name])["DATABASE_URL"] == environment(services["db"])["DATABASE_URL"]
    )


@pytest.mark.parametrize("name", TOOLKIT_SERVICES)
def test_the_toolkit_uses_DATABASE_URL_else_sqlite_in_the_volume(services, name):
    substitution = SUBSTITUTION.fullmatch(environment(services[name])["DATABASE_URL"])

    assert substitution, "DATABASE_URL comes from the shell or .env, with a default"
    assert substitution["name"] == "DATABASE_URL"
    assert substitution["default"] == f"sqlite:///{DATA_DIR}/clonegallery.db"


def test_postgres_is_opt_in_with_its_own_volume_and_health_check(compose, services):
    postgres = services["postgres"]
    volume = named_volumes(postgres).get(POSTGRES_DATA_DIR)

    assert postgres["image"].startswith("postgres:")
    assert "postgres" in postgres["profiles"]
    assert volume in compose.get("volumes", {})
    assert volume != named_volumes(services["db"])[DATA_DIR]
    assert "pg_isready" in shell_words(postgres["healthcheck"]["test"])


def test_the_toolkit_and_postgres_share_one_password_variable(services):
    """The server's password reaches the tool as PGPASSWORD: no password in DATABASE_URL."""
    server = SUBSTITUTION.fullmatch(environment(services["postgres"])["POSTGRES_PASSWORD"])

    for name in TOOLKIT_SERVICES:
        client = SUBSTITUTION.fullmatch(environment(services[name])["PGPASSWORD"])
        assert (client["name"], client["default"]) == (server["name"], server["default"])


# -- backups -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOOLKIT_SERVICES)
def test_every_toolkit_service_keeps_backups_in_their_own_volume(compose, services, name):
    """Each service can back up and restore (db-migrate runs db.restore), into a volume that
    is not the data's: losing one volume does not lose both."""
    mounts = named_volumes(services[name])

    assert mounts.get(BACKUPS_DIR) == "db-backups"
    assert "db-backups" in compose.get("volumes", {})
    assert mounts[BACKUPS_DIR] != mounts[DATA_DIR]
    assert environment(services[name])["INVOKE_DB_BACKUPS"] == BACKUPS_DIR


def test_db_backup_runs_scheduled_pruned_backups_until_stopped(services):
    backup = services["db-backup"]
    ((task, arguments),) = invoke_calls(backup["command"])
    options = option_values(arguments)
    every = SUBSTITUTION.fullmatch(options["--every"])
    words = shell_words(backup["command"])

    assert task == "db.backup"
    assert (every["name"], every["default"]) == ("BACKUP_EVERY", "6h")
    assert parse_duration("--every", every["default"])
    keeps = {period: options[f"--keep-{period}"] for period in ("daily", "weekly", "monthly")}
    assert keeps == {"daily": "7", "weekly": "4", "monthly": "6"}
    assert backup.get("restart") == "unless-stopped"
    # SIGTERM reaches invoke itself: tini passes it to the shell's child, which `exec` made
    # invoke (a shell in between would die, leaving the backup to a SIGKILL).
    assert backup.get("init") is True
    assert words[words.index("invoke") - 1] == "exec"
    assert backup["depends_on"]["db"]["condition"] == "service_healthy"


def test_db_backup_encrypts_when_recipients_are_configured(services):
    backup = services["db-backup"]
    ((_, arguments),) = invoke_calls(backup["command"])
    conditionals = [CONTAINER_CONDITIONAL.fullmatch(a) for a in arguments]
    recipients = SUBSTITUTION.fullmatch(environment(backup)["CLONEGALLERY_BACKUP_RECIPIENTS"])

    assert [(c["name"], c["word"]) for c in conditionals if c] == [
        ("CLONEGALLERY_BACKUP_RECIPIENTS", "--encrypt")
    ]
    # From the shell or .env; unset, no encryption (and no empty argument).
    assert (recipients["name"], recipients["default"]) == ("CLONEGALLERY_BACKUP_RECIPIENTS", "")


def test_db_backup_is_healthy_while_its_newest_backup_is_recent(services):
    backup = services["db-backup"]
    healthcheck = backup["healthcheck"]
    ((task, arguments),) = invoke_calls(healthcheck["test"])
    max_age = SUBSTITUTION.fullmatch(option_values(arguments)["--max-age"])
    ((_, backup_arguments),) = invoke_calls(backup["command"])
    every = SUBSTITUTION.fullmatch(option_values(backup_arguments)["--every"])

    assert task == "db.backups"
    assert healthcheck["test"][0] == "CMD-SHELL" and "|| exit 1" in healthcheck["test"][1]
    assert max_age["name"] == "BACKUP_MAX_AGE"
    # A backup may be late, not missed: the default age allows for a run taking a while.
    assert parse_duration("--max-age", max_age["default"]) > parse_duration(
        "--every", every["default"]
    )
    assert healthcheck.get("start_period"), "the first backup needs time before it counts"


# -- tasks and passwords in every command ------------------------------------------------


def test_every_task_a_container_runs_exists(services, invoke_tasks):
    calls = [
        (where, task)
        for where, command in container_commands(services)
        for task, _ in invoke_calls(command)
    ]

    assert calls, "no container runs an invoke task"
    for where, task in calls:
        assert task in invoke_tasks, f"{where}: `invoke {task}` is not in `invoke --list`"


def test_every_option_given_to_a_task_exists(services):
    for where, command in container_commands(services):
        for task, arguments in invoke_calls(command):
            for option in option_words(arguments):
                assert option.split("=")[0] in task_options(task), (
                    f"{where}: `invoke {task}` has no option {option}"
                )


def test_passwords_are_set_only_from_variables(services):
    for name, service in services.items():
        for variable, value in environment(service).items():
            assert not CREDENTIALS_IN_URL.search(value), f"{name}: {variable} holds a password"
            if "PASSWORD" in variable.upper():
                assert SUBSTITUTION.fullmatch(value), f"{name}: {variable} is a literal"


def test_no_password_is_on_any_command_line(services):
    password_defaults = {
        SUBSTITUTION.fullmatch(value)["default"]
        for service in services.values()
        for variable, value in environment(service).items()
        if "PASSWORD" in variable.upper()
    } - {None, ""}

    assert password_defaults, "the compose file sets no password at all"
    for where, command in container_commands(services):
        text = " ".join(shell_words(command))
        assert not CREDENTIALS_IN_URL.search(text), f"{where}: a URL with a password"
        assert not re.search(r"pass(word)?=", text, flags=re.IGNORECASE), where
        for password in password_defaults:
            assert password not in text, f"{where}: the password {password!r}"


# -- the image ---------------------------------------------------------------------------


def test_the_image_is_a_slim_official_python_on_a_named_debian():
    """Named, so that the client tools' majors change only when this file does."""
    (base,) = dockerfile_arguments("FROM")

    assert re.fullmatch(rf"python:3\.\d+-slim-({'|'.join(DEBIAN_POSTGRES_CLIENT)})", base), base


def test_the_image_carries_the_engines_dump_and_restore_clients():
    """pg_dump/pg_restore (postgresql-client-N), mariadb-dump/mariadb (mariadb-client),
    without what they merely recommend; apt's lists do not stay in the image."""
    packages = installed_packages()

    assert any(re.fullmatch(r"postgresql-client-\d+", package) for package in packages), packages
    assert "mariadb-client" in packages
    for words in apt_installs():
        assert "--no-install-recommends" in words, words
    assert any("rm -rf /var/lib/apt/lists/*" in run for run in dockerfile_arguments("RUN"))


def test_the_postgresql_client_is_the_major_of_its_debian_and_of_the_compose_server(services):
    """pg_dump refuses a newer server; a newer pg_restore sends settings an older server does
    not know (pg_restore 17 into 16: transaction_timeout): one major on both sides."""
    (base,) = dockerfile_arguments("FROM")
    debian = base.rsplit("-", 1)[1]
    (client,) = (
        int(package.rsplit("-", 1)[1])
        for package in installed_packages()
        if package.startswith("postgresql-client-")
    )

    assert client == DEBIAN_POSTGRES_CLIENT[debian], f"{debian} ships postgresql-client-15"
    assert image_major(services["postgres"]["image"]) <= client
    assert image_major(services["postgres"]["image"]) == client


def test_the_image_installs_the_project_with_the_postgresql_driver():
    installs = [run for run in dockerfile_arguments("RUN") if "pip install" in run]

    assert any(re.search(r"\.\[[^\]]*\bpostgres\b[^\]]*\]", run) for run in installs), installs


def test_the_image_holds_the_tasks_migrations_and_seeders_in_app():
    copied = {
        source.rstrip("/")
        for arguments in dockerfile_arguments("COPY")
        for source in shlex.split(arguments)[:-1]
        if not source.startswith("--")
    }

    assert {"tasks.py", "migrations", "seeders", "db", "pyproject.toml"} <= copied
    assert dockerfile_arguments("WORKDIR")[-1] == "/app"


def test_the_image_runs_as_a_non_root_user_who_owns_the_data_folder():
    user = dockerfile_arguments("USER")[-1].split(":")[0]
    runs = dockerfile_arguments("RUN")

    assert user not in {"root", "0"}
    assert any(re.search(rf"\b(useradd|adduser)\b.*\b{user}\b", run) for run in runs)
    # A new named volume takes the ownership of the folder it is mounted on.
    assert any(re.search(rf"chown\b.*\b{user}\b.*{DATA_DIR}\b", run) for run in runs)


def test_the_image_keeps_backups_in_a_folder_its_user_owns_apart_from_the_data():
    user = dockerfile_arguments("USER")[-1].split(":")[0]
    runs = dockerfile_arguments("RUN")

    assert dockerfile_environment()["INVOKE_DB_BACKUPS"] == BACKUPS_DIR
    assert any(re.search(rf"\bmkdir\b.*{BACKUPS_DIR}\b", run) for run in runs)
    assert any(re.search(rf"chown\b.*\b{user}\b.*{BACKUPS_DIR}\b", run) for run in runs)
    assert not PurePosixPath(BACKUPS_DIR).is_relative_to(DATA_DIR)
    assert dockerfile_environment()["DATABASE_URL"] == f"sqlite:///{DATA_DIR}/clonegallery.db"


def test_the_build_context_holds_every_file_the_image_copies():
    sources = [
        source
        for arguments in dockerfile_arguments("COPY")
        for source in shlex.split(arguments)[:-1]
        if not source.startswith("--")
    ]
    for source in sources:
        path = PROJECT_ROOT / source
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files = [f for f in files if "__pycache__" not in f.parts]
        assert files, f"COPY {source}: nothing to copy"
        for file in files:
            relative = file.relative_to(PROJECT_ROOT).as_posix()
            assert not dockerignore_excludes(relative), f".dockerignore leaves out {relative}"


@pytest.mark.parametrize(
    "path", [".git/HEAD", ".env", "clonegallery.db", ".venv/bin/python", "backups/x.db"]
)
def test_the_build_context_leaves_out_history_secrets_and_local_data(path):
    assert dockerignore_excludes(path)


def test_the_image_on_its_own_is_production_and_sets_up_without_the_sample_gallery():
    assert dockerfile_environment()["INVOKE_DB_ENVIRONMENT"] == "production"
    (command,) = dockerfile_arguments("CMD")
    assert invoke_calls(exec_or_shell_form(command)) == [("db.setup", ["--no-sample"])]
