"""``docker-compose.yml``, the ``Dockerfile`` and ``.dockerignore``, read as data.

No Docker engine runs where the tests do, so these tests check what can go wrong without
one: the services of the seed documents exist and run the right tasks, the data lives in
declared named volumes, every ``invoke`` task (and option) named anywhere exists in the real
``invoke --list``, no password is ever on a command line, and the image holds what the tasks
need (the engines' dump and restore clients, of the compose server's major) and runs them as
a non-root user who can write the data and backups folders. What the image's user can do is
tested by running the tasks that way: tests/test_container.py.

Continuous protection (issue 15): db-replicate and the server it protects must agree on what
no Docker-less test can watch them do together, so these tests check that they do: the
server archives into the stanza and repository db-replicate is given, both mount that
repository at that path, db-replicate reads the server's data at the path the server reports
and shares its socket, and both images run pgBackRest's one version as one uid. What runs
here runs for real: db-replicate's command on SQLite (Litestream), and postgres-replica's
pg_basebackup, read from the file, against a throwaway server under the compose pg_hba.conf
(the password in PGPASSWORD only), whose copy then streams from it.
"""

import functools
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import pytest
import yaml

from db.engines import open_database
from db.schedule import parse_duration
from tests.clusters import (
    OS_USER,
    Cluster,
    as_postgres,
    bindir,
    cluster_folder,
    free_port,
    require_clusters,
)
from tests.conftest import PROJECT_ROOT, ok, one_error_line, run_invoke, sqlite_url

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"

DATA_DIR = "/app/data"
BACKUPS_DIR = "/app/backups"
POSTGRES_DATA_DIR = "/var/lib/postgresql/data"
POSTGRES_SOCKET_DIR = "/var/run/postgresql"
# The PostgreSQL client major each Debian release ships (postgresql-client-N).
DEBIAN_POSTGRES_CLIENT = {"bookworm": 15, "trixie": 17}
ONE_SHOT_TASKS = {
    "db-migrate": ("db.migrate", []),
    "db-seed": ("db.seed", []),
    # No terminal to confirm on in a container: without --yes, db.reset refuses.
    "db-reset": ("db.reset", ["--yes"]),
}
TOOLKIT_SERVICES = [
    "db", "db-backup", *ONE_SHOT_TASKS, "db-replicate", "postgres-restore", "db-health",
]  # fmt: skip
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


def dockerfile(path=DOCKERFILE):
    """Return a Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile_arguments(keyword, path=DOCKERFILE):
    """Return the arguments of every ``KEYWORD`` instruction of a Dockerfile, in order."""
    return [arguments for found, arguments in dockerfile(path) if found == keyword]


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


def apt_installs(path=DOCKERFILE):
    """Return the ``apt-get install`` commands of a Dockerfile, each as a list of words."""
    installs = []
    for run in dockerfile_arguments("RUN", path):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            if words[:2] == ["apt-get", "install"]:
                installs.append(words)
    return installs


def installed_packages(path=DOCKERFILE):
    """Return the Debian packages a Dockerfile installs (an option's value, as bookworm in
    ``-t bookworm``, is not one)."""
    packages = set()
    for words in apt_installs(path):
        for option, word in itertools.pairwise(words[1:]):
            if not word.startswith("-") and option not in {"-t", "--target-release"}:
                packages.add(word)
    return packages


def server_dockerfile(service):
    """Return the Dockerfile a compose service is built from."""
    build = service["build"]
    return PROJECT_ROOT / build["context"] / build.get("dockerfile", "Dockerfile")


def server_base_image(service):
    """Return the image a built compose service starts FROM (``postgres:15-bookworm``)."""
    (base,) = dockerfile_arguments("FROM", server_dockerfile(service))
    return base


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


def substituted(value):
    """Return ``value`` as Compose makes it when no variable is set: each ``${NAME:-default}``
    replaced by its default."""
    return SUBSTITUTION.sub(lambda found: found["default"] or "", value)


def named_volumes(service, read_only=False):
    """Return {mount point: volume name} for the named volumes a service mounts (with
    ``read_only``, only those mounted ``:ro``); a ``${NAME:-volume}`` source by default."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            named = volume.get("type") == "volume" and volume.get("source")
            if named and (volume.get("read_only") or not read_only):
                mounts[volume["target"]] = volume["source"]
            continue
        source, _, rest = substituted(volume).partition(":")
        target, _, mode = rest.partition(":")
        named = rest and not source.startswith((".", "/", "~", "$"))
        if named and ("ro" in mode.split(",") or not read_only):
            mounts[target] = source
    return mounts


# -- reading commands --------------------------------------------------------------------


def shell_words(command):
    """Split a command (exec list, shell string or healthcheck test) into shell words.

    Each list item is split too, so ``["sh", "-c", "invoke db.setup && sleep infinity"]``
    gives ``sh -c invoke db.setup && sleep infinity``, ``&&`` a word of its own.
    """
    words = []
    for part in [command] if isinstance(command, str) else command:
        # A backslash before a newline continues the line, as in sh.
        lexer = shlex.shlex(part.replace("\\\n", ""), posix=True, punctuation_chars=True)
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

    assert server_base_image(postgres).startswith("postgres:")
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


# -- continuous protection: db-replicate and the server it protects ----------------------


def server_settings(service):
    """Return the ``-c NAME=VALUE`` settings a PostgreSQL service's command gives the server."""
    words = service["command"]
    assert words[0] == "postgres", "the image's entrypoint starts the server it is given"
    return dict(
        value.split("=", 1) for option, value in itertools.pairwise(words) if option == "-c"
    )


def archive_command_options(services):
    """Return the ``--option=value`` words of the compose server's archive_command."""
    words = shlex.split(server_settings(services["postgres"])["archive_command"])
    return dict(word.split("=", 1) for word in words if word.startswith("--"))


def test_db_replicate_protects_the_database_until_stopped_when_asked_for(services):
    replicate = services["db-replicate"]

    assert invoke_calls(replicate["command"]) == [("db.replicate", ["--init"])]
    # Asked for (--profile replicate), or with the server that archives for it.
    assert set(replicate["profiles"]) == {"replicate", "postgres"}
    assert set(services["postgres"]["profiles"]) <= set(replicate["profiles"])
    assert replicate.get("restart") == "unless-stopped"
    # tini gives invoke itself SIGTERM on `docker compose stop`: it stops its tool cleanly.
    assert replicate.get("init") is True
    assert replicate["depends_on"]["db"]["condition"] == "service_healthy"


def test_the_server_archives_its_wal_into_the_stanza_and_repository_of_db_replicate(services):
    """archive_command runs in the server and db.replicate in its own container: the same
    stanza, and one repository (one volume) at one path in both."""
    settings = server_settings(services["postgres"])
    options = archive_command_options(services)
    replicate = environment(services["db-replicate"])
    repository = replicate["INVOKE_DB_REPLICA"]

    assert settings["archive_mode"] == "on"
    assert settings.get("wal_level", "replica") in {"replica", "logical"}
    assert shlex.split(settings["archive_command"])[0] == "pgbackrest"
    assert shlex.split(settings["archive_command"])[-2:] == ["archive-push", "%p"]
    assert options["--stanza"] == replicate["INVOKE_DB_STANZA"]
    assert options["--repo1-path"] == repository
    volume = named_volumes(services["db-replicate"])[repository]
    assert named_volumes(services["postgres"])[repository] == volume
    assert volume == "db-replica" and volume != named_volumes(services["db"])[DATA_DIR]
    assert parse_duration("--every", substituted(replicate["INVOKE_DB_BASE_BACKUP_INTERVAL"]))


def test_the_servers_archive_command_is_the_one_db_replicate_asks_for(services):
    """db.replicate prints these postgresql.conf lines when a server does not archive: the
    compose server has them already, word for word."""
    postgres = pytest.importorskip("db.pitr.postgres")
    options = archive_command_options(services)

    expected = postgres.archive_command(
        options["--repo1-path"], options["--stanza"], POSTGRES_DATA_DIR
    )

    assert server_settings(services["postgres"])["archive_command"] == expected


def test_db_replicate_reads_the_servers_data_where_the_server_has_it_and_shares_its_socket(
    services,
):
    """pgBackRest reads the data directory at the path the server reports (and the
    archive_command names), read-only, and reaches the server on its Unix socket."""
    server, replicate = named_volumes(services["postgres"]), services["db-replicate"]

    assert archive_command_options(services)["--pg1-path"] == POSTGRES_DATA_DIR
    assert named_volumes(replicate, read_only=True)[POSTGRES_DATA_DIR] == server[POSTGRES_DATA_DIR]
    assert named_volumes(replicate)[POSTGRES_SOCKET_DIR] == server[POSTGRES_SOCKET_DIR]
    assert POSTGRES_SOCKET_DIR not in named_volumes(services["db"]), "only db-replicate needs it"


def test_a_point_in_time_recovery_fills_a_volume_of_its_own_at_the_servers_data_path(
    compose, services
):
    """pgBackRest writes the restored server's restore_command with the data directory it
    restored into: the restore service mounts its empty volume where the server will."""
    restore = services["postgres-restore"]
    restored = named_volumes(restore)[POSTGRES_DATA_DIR]
    repository = environment(services["db-replicate"])["INVOKE_DB_REPLICA"]

    assert restored in compose["volumes"]
    assert restored != named_volumes(services["postgres"])[POSTGRES_DATA_DIR]
    assert POSTGRES_DATA_DIR not in named_volumes(restore, read_only=True)
    assert named_volumes(restore)[repository] == named_volumes(services["db-replicate"])[repository]
    assert environment(restore)["INVOKE_DB_STANZA"] == archive_command_options(services)["--stanza"]
    # The server takes the restored volume by name (see the header).
    volume_of_the_server = [v for v in services["postgres"]["volumes"] if POSTGRES_DATA_DIR in v]
    assert volume_of_the_server == [f"${{POSTGRES_DATA_VOLUME:-postgres-data}}:{POSTGRES_DATA_DIR}"]


def test_the_header_shows_how_to_protect_and_restore_on_each_engine():
    header = COMPOSE_FILE.read_text(encoding="utf-8").split("\nname:", 1)[0]
    lines = [line.lstrip("# ").rstrip(" \\") for line in header.splitlines()]

    assert "docker compose --profile replicate up -d" in lines
    assert "docker compose --profile postgres up -d" in lines
    restores = [line for line in lines if "invoke db.restore --to-time" in line]
    assert any(
        line.startswith("docker compose run --rm --no-deps db-replicate") for line in restores
    )
    assert any(line.startswith("docker compose run --rm postgres-restore") for line in restores)
    assert f"--data-dir {POSTGRES_DATA_DIR}" in lines
    assert "POSTGRES_DATA_VOLUME=postgres-restored" in header
    assert "SELECT pg_promote()" in header and "pg_ctl promote" in header
    assert "pg_stat_replication" in header
    assert "docker compose exec db invoke db.status" in header
    assert (
        "DATABASE_READ_URL=postgresql://clonegallery@postgres-replica:5432/clonegallery" in header
    )


def test_every_setting_compose_gives_the_toolkit_is_one_it_reads(services):
    """Invoke reads INVOKE_DB_NAME only for a setting db.NAME that exists: a misspelt one
    would be ignored without a word."""
    from db.cli import namespace

    settings = namespace(project=PROJECT_ROOT).collections["db"].configuration()["db"]
    for name in TOOLKIT_SERVICES:
        for variable in environment(services[name]):
            if variable.startswith("INVOKE_DB_"):
                key = variable.removeprefix("INVOKE_DB_").lower()
                assert key in settings, f"{name}: {variable} sets no setting of db"


def compose_environment(service, **overrides):
    """Return a service's environment as Compose gives it by default, with ``overrides``."""
    values = {name: substituted(value) for name, value in environment(service).items()}
    return {name: value for name, value in {**values, **overrides}.items() if value}


def test_what_db_replicate_runs_on_sqlite_streams_the_database_and_stops_on_sigterm(
    services, tmp_path
):
    """db-replicate's own command, in compose's environment, run for real (Litestream): the
    database's replica appears in INVOKE_DB_REPLICA; `docker compose stop` (SIGTERM) ends it
    with exit 0. --init has nothing to set up on SQLite and is accepted."""
    litestream = Path(sys.executable).parent / "litestream"
    if not litestream.exists():
        pytest.skip("Litestream is not installed (pip install 'clonegallery-db[litestream]')")
    url = sqlite_url(tmp_path / "clonegallery.db")
    ok(run_invoke("db.migrate", url=url))
    replica = tmp_path / "replica"
    ((task, arguments),) = invoke_calls(services["db-replicate"]["command"])
    variables = compose_environment(
        services["db-replicate"],
        DATABASE_URL=url,
        INVOKE_DB_REPLICA=str(replica),
        INVOKE_DB_BACKUPS=str(tmp_path / "backups"),
    )
    environment_now = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT), task, *arguments],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env={**environment_now, **variables},
        )
    try:
        deadline = time.monotonic() + 30
        # Running (it said so), and Litestream has shipped something: the folder alone is
        # made before Litestream starts, when db.replicate records whose replica it is.
        while "protecting" not in out.read_text() or not any(
            path.is_file() for path in (replica / "clonegallery.db").rglob("*.ltx")
        ):
            assert child.poll() is None, err.read_text()
            assert time.monotonic() < deadline, out.read_text() + err.read_text()
            time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == 0, err.read_text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert any(path.is_file() for path in (replica / "clonegallery.db").rglob("*"))


def test_both_images_run_one_pgbackrest_as_one_uid():
    """The server's archive-push and the toolkit's backups share one repository, whose files
    pgBackRest makes for their owner alone: one version (Debian's, of one release), one uid."""
    server = PROJECT_ROOT / "docker" / "postgres.Dockerfile"
    (toolkit_base,) = dockerfile_arguments("FROM")
    debian = toolkit_base.rsplit("-", 1)[1]
    (server_base,) = dockerfile_arguments("FROM", server)
    toolkit_uid = re.search(r"useradd\b.*--uid (\d+)", " ".join(dockerfile_arguments("RUN")))
    server_uid = re.search(r"usermod\b.*--uid (\d+)", " ".join(dockerfile_arguments("RUN", server)))

    assert "pgbackrest" in installed_packages() and "pgbackrest" in installed_packages(server)
    assert server_base.endswith(f"-{debian}"), "the server image's Debian is the toolkit's"
    (server_install,) = (words for words in apt_installs(server) if "pgbackrest" in words)
    assert server_install[server_install.index("-t") + 1] == debian, (
        "the server image also lists PostgreSQL's apt repository, whose pgBackRest is newer"
    )
    for words in apt_installs(server):
        assert "--no-install-recommends" in words, words
    assert toolkit_uid and server_uid and toolkit_uid[1] == server_uid[1]


def test_the_server_allows_replication_from_other_containers_with_a_password(services):
    """postgres-replica connects over the compose network: the image's own pg_hba.conf allows
    replication from localhost only, so the server is given one that allows it."""
    server = services["postgres"]
    hba_file = server_settings(server)["hba_file"]
    copies = [shlex.split(arguments) for arguments in
              dockerfile_arguments("COPY", server_dockerfile(server))]  # fmt: skip
    (source,) = [words[0] for words in copies if words[-1] == hba_file]
    rules = [
        line.split()
        for line in (server_dockerfile(server).parent / source).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    assert ["host", "replication", "all", "all", "scram-sha-256"] in rules
    assert not any(rule[0] == "host" and rule[-1] == "trust" and rule[3] == "all" for rule in rules)
    assert server_settings(services["postgres-replica"])["hba_file"] == hba_file


def test_postgres_replica_copies_the_server_then_streams_from_it(compose, services):
    replica = services["postgres-replica"]
    words = shell_words(replica["entrypoint"])
    basebackup = words[words.index("pg_basebackup") :]
    basebackup = basebackup[: basebackup.index("fi")]
    options = dict(word.split("=", 1) for word in basebackup if "=" in word)

    assert replica["profiles"] == ["postgres-replica"]
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert options["--host"] == "postgres"
    assert "--write-recovery-conf" in basebackup, "-R: it starts as a standby of the server"
    assert options["--wal-method"] == "stream"
    # Only when the volume is empty; then the image's entrypoint starts the server it made.
    assert 'if [ ! -s "$$PGDATA/PG_VERSION" ]' in replica["entrypoint"][2]
    assert words[-3:-1] == ["docker-entrypoint.sh", "$$@"]
    assert replica["command"][0] == "postgres"
    assert server_settings(replica)["cluster_name"] == "postgres-replica"
    own = named_volumes(replica)[POSTGRES_DATA_DIR]
    assert (
        own in compose["volumes"] and own != named_volumes(services["postgres"])[POSTGRES_DATA_DIR]
    )
    assert server_base_image(replica) == server_base_image(services["postgres"])


def test_the_replicas_entrypoint_is_a_valid_sh_script(services):
    """What the container's sh reads: the script once Compose has made $$ a $."""
    entrypoint = services["postgres-replica"]["entrypoint"]
    script = entrypoint[entrypoint.index("-c") + 1].replace("$$", "$")

    checked = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)

    assert checked.returncode == 0, checked.stderr
    assert entrypoint[0] == "sh" and "set -e" in script.splitlines()


def test_the_replicas_password_comes_from_the_servers_variable_never_its_command_line(services):
    replica = services["postgres-replica"]
    server = SUBSTITUTION.fullmatch(environment(services["postgres"])["POSTGRES_PASSWORD"])
    client = SUBSTITUTION.fullmatch(environment(replica)["PGPASSWORD"])
    words = shell_words(replica["entrypoint"])
    basebackup = words[words.index("pg_basebackup") : words.index("fi")]

    assert (client["name"], client["default"]) == (server["name"], server["default"])
    # --no-password: never wait on a prompt no one sees; no password or connection string
    # with one on the command line.
    assert "--no-password" in basebackup
    assert not any(re.match(r"(-W|--password|-d|--dbname)\b", word) for word in basebackup)
    assert not any("password" in word.lower() for word in basebackup if word != "--no-password")


def outward_address():
    """Return this machine's address on its network (not loopback), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only the route is chosen
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.fixture
def compose_server():
    """A real PostgreSQL server with the compose server's pg_hba.conf (hba_file), listening
    also on this machine's network address, as the server does on the compose network;
    its superuser postgres has a password. Yield (cluster, address, password); stopped and
    removed afterwards."""
    require_clusters()
    address = outward_address()
    if address is None:
        pytest.skip("no network address other than loopback")
    password = secrets.token_urlsafe(16)
    with cluster_folder() as folder:
        hba_file = folder / "pg_hba.conf"
        shutil.copy(PROJECT_ROOT / "docker" / "pg_hba.conf", hba_file)
        os.chmod(hba_file, 0o644)
        as_postgres("initdb", "-D", folder / "primary", "-U", "postgres", "--no-sync")
        cluster = Cluster(folder / "primary", free_port())
        options = (
            f"-p {cluster.port} -c listen_addresses=127.0.0.1,{address} "
            f"-k {cluster.data_dir} -c hba_file={hba_file}"
        )
        log = folder / "primary.log"
        as_postgres("pg_ctl", "-D", cluster.data_dir, "-l", log, "-o", options, "-w", "start")
        cluster.running = True
        try:
            # Over 127.0.0.1, trusted as in the container; the statement is not a command line.
            cluster.sql(f"ALTER ROLE postgres PASSWORD '{password}'")
            yield cluster, address, password
        finally:
            cluster.stop()


def replica_basebackup(services, host, port, data_dir):
    """Return postgres-replica's pg_basebackup command, from the compose file, aimed at
    ``host``:``port`` and ``data_dir`` (what $PGDATA and $POSTGRES_USER are there)."""
    words = shell_words(services["postgres-replica"]["entrypoint"])
    command = words[words.index("pg_basebackup") : words.index("fi")]
    given = {
        "--host=postgres": f"--host={host}",
        "--pgdata=$$PGDATA": f"--pgdata={data_dir}",
        "--username=$$POSTGRES_USER": "--username=postgres",
    }
    assert set(given) <= set(command), command
    return [
        str(bindir() / "pg_basebackup"),
        *(given.get(word, word) for word in command[1:]),
        f"--port={port}",
    ]


def test_the_replica_copies_a_real_server_with_the_compose_rules_and_streams_from_it(
    services, compose_server
):
    """On a real PostgreSQL: the compose pg_hba.conf asks a replication connection from
    another machine for the password; postgres-replica's pg_basebackup, with the password
    in PGPASSWORD only, copies the server; started, the copy is a standby streaming."""
    primary, address, password = compose_server
    standby = Cluster(primary.data_dir.parent / "standby", free_port())
    command = replica_basebackup(services, address, primary.port, standby.data_dir)
    as_user = ["runuser", "-u", OS_USER, "--"]
    without = {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    refused = subprocess.run([*as_user, *command], capture_output=True, text=True, env=without)
    assert refused.returncode != 0
    assert "password" in refused.stderr, refused.stderr
    assert not standby.data_dir.exists() or not any(standby.data_dir.iterdir())

    copied = subprocess.run(
        [*as_user, *command],
        capture_output=True,
        text=True,
        env={**without, "PGPASSWORD": password},
        timeout=120,
    )
    assert copied.returncode == 0, copied.stderr
    assert password not in " ".join(command)
    assert (standby.data_dir / "standby.signal").exists()
    # -R keeps the connection, password included, in a file for the data's owner alone.
    assert (standby.data_dir / "postgresql.auto.conf").stat().st_mode & 0o077 == 0
    try:
        standby.start()
        assert standby.sql("SELECT pg_is_in_recovery()") == [(True,)]
        primary.sql("CREATE TABLE written_on_the_primary (id int)")
        standby.wait_for(primary)
        assert standby.sql("SELECT to_regclass('written_on_the_primary') IS NOT NULL") == [(True,)]
        ((state,),) = primary.sql("SELECT state FROM pg_stat_replication")
        assert state == "streaming"
    finally:
        standby.stop()


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
    assert image_major(server_base_image(services["postgres"])) <= client
    assert image_major(server_base_image(services["postgres"])) == client


def test_the_image_installs_the_project_with_the_postgresql_driver():
    installs = [run for run in dockerfile_arguments("RUN") if "pip install" in run]

    assert any(re.search(r"\.\[[^\]]*\bpostgres\b[^\]]*\]", run) for run in installs), installs


def test_the_image_installs_litestream_for_db_replicate_on_sqlite():
    installs = [run for run in dockerfile_arguments("RUN") if "pip install" in run]

    assert any(re.search(r"\.\[[^\]]*\blitestream\b[^\]]*\]", run) for run in installs), installs


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


# -- monitoring: db-health and the exporter that serves its file ----------------------------


def test_db_health_checks_on_a_schedule_into_the_volume_node_exporter_reads(services):
    health, exporter = services["db-health"], services["node-exporter"]
    ((task, arguments),) = invoke_calls(health["command"])
    options = option_values(arguments)
    every = SUBSTITUTION.fullmatch(options["--every"])
    metrics = PurePosixPath(options["--prometheus"])
    textfile_folder = next(
        word.split("=", 1)[1]
        for word in exporter["command"]
        if word.startswith("--collector.textfile.directory=")
    )

    assert task == "db.health" and metrics.suffix == ".prom"
    assert {"--every", "--prometheus"} <= task_options("db.health")
    assert (every["name"], every["default"]) == ("HEALTH_EVERY", "1m")
    assert parse_duration("--every", every["default"])
    volume = named_volumes(health)[str(metrics.parent)]
    assert named_volumes(exporter, read_only=True)[textfile_folder] == volume
    # Opt-in, restarted, and SIGTERM reaches invoke itself (no shell in between).
    assert health["profiles"] == exporter["profiles"] == ["monitoring"]
    assert health["restart"] == "unless-stopped" and health["init"] is True
    assert health["command"][0] == "invoke"


def test_the_image_user_owns_the_metrics_folder(services):
    ((_, arguments),) = invoke_calls(services["db-health"]["command"])
    folder = str(PurePosixPath(option_values(arguments)["--prometheus"]).parent)
    run = " ".join(arguments for keyword, arguments in dockerfile() if keyword == "RUN")

    assert re.search(rf"mkdir -p [^&]*{folder}\b", run)
    assert re.search(rf"chown clonegallery:clonegallery [^&]*{folder}\b", run)
