"""The command line's edges, as a user meets them through ``invoke`` and ``clonegallery-db``.

Two ways in to the same tasks, both run here as real subprocesses:

- ``invoke db.status`` from the checkout (``run_invoke``): Invoke's own program, whose
  parse errors keep Invoke's exit 1 and wording;
- ``clonegallery-db status`` (run as ``python -m db``, which works installed or not): the
  toolkit's own program, run from another directory with the project folder given by
  ``--project DIR``, ``CLONEGALLERY_PROJECT`` or the current directory. Its parse errors
  exit 2 with one ``error:`` line.

Exit codes a pipeline can rely on: 0 success, 1 failed, 2 bad usage or configuration,
3 not in step (``db.status --check``, ``db.check``), 141 the reader went away (``| head``).
Every ``--json`` output is an object with ``"format_version": 1`` whose times carry their
UTC offset; in ``--json`` mode an error is such an object too.
"""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import import_module

import pytest

from db.seeders import Seeder
from tests.conftest import NEXT_VERSION, PROJECT_ROOT, one_error_line, run_invoke, sqlite_url

RUNNERS = ["invoke", "clonegallery-db"]
UNREACHABLE_SERVER = "postgresql://postgres@127.0.0.1:1/clonegallery"
NUMERIC_OPTIONS = {
    "backup": ["keep", "keep-daily", "keep-weekly", "keep-monthly"],
    "populate": ["images", "users", "seed"],
    "rollback": ["steps"],
    "transfer": ["batch"],
}
# A line of a task's options list that begins with a single-dash letter: "-d, --debug".
SHORT_FLAG = re.compile(r"^\s+-[A-Za-z](?:[ ,]|$)")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
# The shell's status for a process killed by SIGPIPE, or one that exits as if it were.
CLOSED_PIPE_STATUS = 128 + signal.SIGPIPE
REVERSIBLE_A = (
    "-- migrate:up\nCREATE TABLE a (id INTEGER PRIMARY KEY);\n-- migrate:down\nDROP TABLE a;\n"
)


# -- helpers -----------------------------------------------------------------------------


def clean_environment(extra=None):
    """Return this process's environment without anything that names a database or project."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    for name in ("DATABASE_URL", "CLONEGALLERY_PROJECT"):
        environment.pop(name, None)
    environment.update({k: str(v) for k, v in (extra or {}).items()})
    return environment


def console_script_command(*args):
    """Return the command line of ``clonegallery-db ARGS`` (``python -m db``: installed or not)."""
    return [sys.executable, "-m", "db", *map(str, args)]


def run_console_script(*args, cwd, env=None):
    """Run ``clonegallery-db ARGS`` in ``cwd`` as a real subprocess; return the CompletedProcess."""
    return Program(console_script_command(), clean_environment(env), "").run(*args, cwd=cwd)


def invoke_environment(project, env=None):
    """Return the environment that points ``invoke`` at the project folder's files."""
    settings = {
        "DATABASE_URL": sqlite_url(project / "clonegallery.db"),
        "INVOKE_DB_MIGRATIONS": project / "migrations",
        "INVOKE_DB_SEEDERS": project / "seeders",
        "INVOKE_DB_BACKUPS": project / "backups",
        **(env or {}),
    }
    return {name: str(value) for name, value in settings.items()}


def as_the_shell_reports(returncode):
    """Return a process's exit status as a shell shows it: 128 + N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def options_section(help_text):
    """Return the lines of ``--help TASK`` after its ``Options:`` heading."""
    assert "Options:" in help_text, help_text
    return help_text.split("Options:", 1)[1].splitlines()


def succeeded(result):
    """Assert the command exited 0 without a traceback; return its stdout."""
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def json_object(result, exit_code):
    """Assert the command exited ``exit_code`` with one JSON object (nothing else) on stdout,
    and no traceback; return the object."""
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert isinstance(document, dict), result.stdout
    return document


def timestamps_in(value):
    """Yield every string in a JSON document that reads as a date and time."""
    if isinstance(value, dict):
        for item in value.values():
            yield from timestamps_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from timestamps_in(item)
    elif isinstance(value, str) and TIMESTAMP.match(value):
        yield value


def utc_time(text):
    """Assert ``text`` is an ISO 8601 time with a UTC offset (+00:00 or Z); return it."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))  # 3.10 does not read "Z"
    assert moment.tzinfo is not None, f"{text!r} carries no UTC offset"
    assert moment.utcoffset() == timedelta(0), f"{text!r} is not in UTC"
    return moment


def assert_recent_utc_times(document, at_least):
    """Assert the document holds ``at_least`` times, each in UTC with its offset and within
    the last hour (a local time labelled UTC would be hours off in New York)."""
    found = list(timestamps_in(document))
    assert len(found) >= at_least, document
    now = datetime.now(timezone.utc)
    for text in found:
        assert abs(now - utc_time(text)) < timedelta(hours=1), f"{text!r} is not now in UTC"


def applied_versions(path):
    """Return the versions in an SQLite database's history table, oldest first."""
    with closing(sqlite3.connect(path)) as connection:
        return [row[0] for row in connection.execute("SELECT version FROM migrations ORDER BY 1")]


def table_names(path):
    """Return the table names of an SQLite database."""
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}


def files_in(folder):
    """Return the names of the files in ``folder`` (none when it does not exist)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def listed_task_names(listing, collection=None):
    """Return the task names of ``--list --list-format=json`` output, of one collection."""
    tree = json.loads(listing)
    if collection is not None:
        tree = next(c for c in tree["collections"] if c["name"] == collection)
    return sorted(task["name"] for task in tree["tasks"])


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, project_migrations):
    """A project folder: a copy of the project's migrations and seeders, no database yet
    (its default SQLite file is ``db_path``, tmp_path/clonegallery.db)."""
    shutil.copytree(PROJECT_ROOT / "seeders", tmp_path / "seeders")
    return tmp_path


@pytest.fixture
def migrated_project(project, migrated_db):
    """The project folder with its database migrated to the newest version."""
    return project


@pytest.fixture
def elsewhere(tmp_path):
    """A directory that is not the project folder, to run the console script from."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


@pytest.fixture(params=RUNNERS)
def runner(request):
    """Which program runs the tasks: ``invoke`` or the toolkit's ``clonegallery-db``."""
    return request.param


@dataclass
class Program:
    """How to start ``runner`` on a project folder: the command line before the task,
    its environment, and the prefix of a task's name (``db.`` under ``invoke``)."""

    argv: list
    env: dict
    prefix: str

    def command(self, *args):
        """Return the command line that runs ``args``, a task name first after any core option."""
        return [*self.argv, *map(str, args)]

    def run(self, *args, cwd):
        """Run the program with ``args`` as a real subprocess; return the CompletedProcess."""
        return subprocess.run(
            self.command(*args),
            cwd=cwd,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def program(runner, tmp_path):
    """``runner`` started on the project folder tmp_path: ``invoke`` pointed at its files
    through the environment, or ``clonegallery-db --project tmp_path``."""
    if runner == "invoke":
        argv = [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT)]
        return Program(argv, clean_environment(invoke_environment(tmp_path)), "db.")
    return Program(console_script_command("--project", tmp_path), clean_environment(), "")


@pytest.fixture
def cli(program, elsewhere):
    """Run a db task on the project folder from another directory: ``cli("status",
    "--json")`` runs ``invoke db.status --json`` or ``clonegallery-db --project DIR
    status --json``, as ``runner`` says; ``env`` adds to the environment."""

    def run(task, *args, env=None):
        extra = {name: str(value) for name, value in (env or {}).items()}
        started = Program(program.argv, {**program.env, **extra}, program.prefix)
        return started.run(program.prefix + task, *args, cwd=elsewhere)

    return run


# -- short flags and numbers -------------------------------------------------------------


def test_no_task_has_a_short_flag_but_the_refused_d(program, elsewhere):
    # One letter cannot mean one thing across twenty tasks (-d was --debug, --dry-run and
    # --data-only): only Invoke's own core flags (-h, -l ...) are short, and a task's help
    # lists the task's own options only, with -d, which every task refuses.
    listing = succeeded(program.run("--list", "--list-format=json", cwd=elsewhere))
    tasks = listed_task_names(listing, "db" if program.prefix else None)
    assert len(tasks) >= 20, tasks

    short = {}
    for task in tasks:
        help_text = succeeded(program.run("--help", program.prefix + task, cwd=elsewhere))
        lines = [line.split()[0] for line in options_section(help_text) if SHORT_FLAG.match(line)]
        if lines != ["-d"]:
            short[task] = lines

    assert short == {}


@pytest.mark.parametrize("task", ["rollback", "migrate", "reset"])
def test_d_is_refused_so_a_dry_run_spelled_the_old_way_changes_nothing(
    migrated_project, elsewhere, task
):
    # Without a -d of the task's own, Invoke would read it as its core --debug and run
    # the task for real.
    database = migrated_project / "clonegallery.db"
    before = database.read_bytes()

    result = run_console_script("--project", migrated_project, task, "-d", cwd=elsewhere)

    one_error_line(result, 2, "-d", "--dry-run")
    assert database.read_bytes() == before


@pytest.mark.parametrize("task", NUMERIC_OPTIONS)
def test_numeric_options_are_shown_as_numbers_in_the_tasks_help(program, elsewhere, task):
    help_text = succeeded(program.run("--help", program.prefix + task, cwd=elsewhere))

    for option in NUMERIC_OPTIONS[task]:
        assert re.search(rf"^\s+--{option}=INT\b", help_text, re.MULTILINE), (option, help_text)


@pytest.mark.parametrize(
    "args, option",
    [
        (["backup", "--keep=abc"], "--keep"),
        (["backup", "--keep-daily", "seven"], "--keep-daily"),
        (["populate", "--images=lots"], "--images"),
        (["rollback", "--steps=two"], "--steps"),
        (["transfer", "sqlite:///copy.db", "--batch=big"], "--batch"),
    ],
)
def test_a_number_option_given_a_word_exits_2_naming_the_option(project, elsewhere, args, option):
    result = run_console_script("--project", project, *args, cwd=elsewhere)

    one_error_line(result, 2, option)
    assert result.stdout == ""
    assert not (project / "clonegallery.db").exists()
    assert not (elsewhere / "copy.db").exists()


def test_a_backup_whose_keep_is_not_a_number_writes_no_backup(migrated_project, elsewhere):
    result = run_console_script(
        "--project", migrated_project, "backup", "--keep=abc", cwd=elsewhere
    )

    one_error_line(result, 2, "--keep")
    assert files_in(migrated_project / "backups") == []


def test_a_number_option_takes_a_number(project, elsewhere, db_path):
    succeeded(run_console_script("--project", project, "migrate", cwd=elsewhere))
    before = applied_versions(db_path)

    succeeded(run_console_script("--project", project, "rollback", "--steps=2", cwd=elsewhere))

    assert applied_versions(db_path) == before[:-2]


# -- parse errors: the toolkit's program says 2, Invoke's keeps its 1 ---------------------

PARSE_ERRORS = {
    "unknown option": (["status", "--bogus"], ["--bogus"]),
    "unknown task": (["nope"], ["nope"]),
    "missing positional argument": (["verify"], ["path"]),
    "option without its value": (["migrate", "--to"], ["--to"]),
    "word for a number": (["rollback", "--steps=abc"], ["--steps"]),
}
INVOKE_PARSE_ERRORS = {
    "unknown option": (["db.status", "--bogus"], "No idea what '--bogus' is!"),
    "unknown task": (["db.nope"], "No idea what 'db.nope' is!"),
    "missing positional argument": (
        ["db.verify"],
        "'db.verify' did not receive required positional arguments: 'path'",
    ),
    "option without its value": (["db.migrate", "--to"], "needed value and was not given one"),
}


@pytest.mark.parametrize("case", PARSE_ERRORS)
def test_under_clonegallery_db_a_parse_error_exits_2_with_one_error_line(project, elsewhere, case):
    args, named = PARSE_ERRORS[case]

    result = run_console_script("--project", project, *args, cwd=elsewhere)

    one_error_line(result, 2, *named)
    assert result.stdout == ""
    assert not (project / "clonegallery.db").exists()


@pytest.mark.parametrize("case", INVOKE_PARSE_ERRORS)
def test_under_invoke_a_parse_error_keeps_invokes_exit_1_and_its_message(project, case):
    # The README's exit-code table says so: 2 is the toolkit's own program's promise.
    args, message = INVOKE_PARSE_ERRORS[case]

    result = run_invoke(*args, env=invoke_environment(project))

    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert not (project / "clonegallery.db").exists()


def test_under_invoke_too_a_number_option_given_a_word_exits_2_naming_the_option(project):
    # The number is the toolkit's own check (Invoke alone would end in a ValueError
    # traceback), so both programs say it the same way.
    result = run_invoke("db.rollback", "--steps=abc", env=invoke_environment(project))

    one_error_line(result, 2, "--steps", "abc")
    assert not (project / "clonegallery.db").exists()


# -- the console script: clonegallery-db / python -m db -----------------------------------


def test_the_console_script_runs_the_db_tasks_without_the_db_prefix(project, elsewhere):
    ours = run_console_script("--project", project, "--list", "--list-format=json", cwd=elsewhere)
    invokes = run_invoke("--list", "--list-format=json")

    assert listed_task_names(succeeded(ours)) == listed_task_names(succeeded(invokes), "db")
    assert "status" in listed_task_names(ours.stdout)


def test_the_project_folder_is_a_core_option_of_the_console_script(elsewhere):
    result = run_console_script("--help", cwd=elsewhere)

    assert re.search(r"^\s+--project(?:=| )", succeeded(result), re.MULTILINE), result.stdout


def test_migrate_to_002_from_another_directory_migrates_the_project_given_by_project(
    project, elsewhere, db_path
):
    result = run_console_script("--project", project, "migrate", "--to", "002", cwd=elsewhere)

    succeeded(result)
    assert applied_versions(db_path) == ["001", "002"]
    assert files_in(elsewhere) == []


def test_the_project_folder_can_come_from_clonegallery_project(project, elsewhere, db_path):
    result = run_console_script(
        "migrate", "--to", "001", cwd=elsewhere, env={"CLONEGALLERY_PROJECT": project}
    )

    succeeded(result)
    assert applied_versions(db_path) == ["001"]
    assert files_in(elsewhere) == []


def test_without_a_project_folder_the_current_directory_is_the_project(project, db_path):
    succeeded(run_console_script("migrate", "--to", "001", cwd=project))

    status = json.loads(succeeded(run_console_script("status", "--json", cwd=project)))

    assert applied_versions(db_path) == ["001"]
    assert status["current_version"] == "001"
    assert status["up_to_date"] is False


def test_the_project_folders_own_migrations_are_the_ones_applied(
    tmp_path, elsewhere, write_migration, db_path
):
    write_migration("001_create_a.sql", REVERSIBLE_A)

    succeeded(run_console_script("--project", tmp_path, "migrate", cwd=elsewhere))

    assert applied_versions(db_path) == ["001"]
    assert "a" in table_names(db_path)


def test_setup_in_a_project_folder_creates_its_database_and_seeds_it(project, elsewhere, db_path):
    succeeded(run_console_script("--project", project, "setup", cwd=elsewhere))

    status = json.loads(
        succeeded(run_console_script("--project", project, "status", "--json", cwd=elsewhere))
    )
    assert status["up_to_date"] is True
    assert status["seeders"] and {s["state"] for s in status["seeders"]} == {"applied"}
    assert db_path.exists()


def test_a_backup_goes_to_the_project_folders_backups(migrated_project, elsewhere):
    succeeded(run_console_script("--project", migrated_project, "backup", cwd=elsewhere))

    assert any(name.startswith("clonegallery") for name in files_in(migrated_project / "backups"))
    assert files_in(elsewhere) == []


def test_invoke_yaml_in_the_project_folder_names_the_database(project, elsewhere, tmp_path):
    other = tmp_path / "other.db"
    (project / "invoke.yaml").write_text(f"db:\n  url: {sqlite_url(other)}\n")

    succeeded(run_console_script("--project", project, "migrate", "--to", "001", cwd=elsewhere))

    assert applied_versions(other) == ["001"]
    assert not (project / "clonegallery.db").exists()


def test_a_bad_url_in_the_project_folders_invoke_yaml_exits_2_naming_it(project, elsewhere):
    (project / "invoke.yaml").write_text("db:\n  url: nosuch://somewhere/gallery\n")

    result = run_console_script("--project", project, "status", cwd=elsewhere)

    one_error_line(result, 2, "nosuch")


def test_pyproject_declares_the_clonegallery_db_console_script_and_it_runs(
    migrated_project, elsewhere
):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"].get(
        "scripts", {}
    )
    assert "clonegallery-db" in scripts, scripts
    module, _, attribute = scripts["clonegallery-db"].partition(":")
    target = import_module(module)
    for name in attribute.split("."):
        target = getattr(target, name)
    assert callable(target)
    # What the installed script does: import the entry point and exit with what it returns.
    wrapper = (
        "import sys\nfrom importlib import import_module\n"
        f"target = import_module({module!r})\n"
        f"for name in {attribute!r}.split('.'):\n    target = getattr(target, name)\n"
        "sys.argv[0] = 'clonegallery-db'\nsys.exit(target())\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", wrapper, "--project", str(migrated_project), "status", "--check"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=clean_environment(),
        timeout=120,
    )

    assert "up to date" in succeeded(result)


# -- a closed pipe -----------------------------------------------------------------------


def test_a_reader_that_leaves_after_one_line_ends_the_command_quietly_with_141(
    program, tmp_path, migrations_dir
):
    # More output than a pipe holds, so the command is still writing when `head -1` leaves.
    description = "step_with_a_description_long_enough_to_fill_the_pipe_in_not_so_many_lines"
    (tmp_path / "seeders").mkdir()
    for version in range(1001, 2501):
        (migrations_dir / f"{version}_{description}.sql").write_text("-- migrate:up\n")
    process = subprocess.Popen(
        program.command(program.prefix + "status"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=program.env,
        stdin=subprocess.DEVNULL,
    )
    first_line = process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    returncode = process.wait(timeout=120)

    assert first_line.startswith(b"database: ")
    for noise in ("Traceback", "BrokenPipeError", "Exception ignored"):
        assert noise not in stderr, stderr
    assert as_the_shell_reports(returncode) == CLOSED_PIPE_STATUS, stderr


@pytest.mark.parametrize("task", ["status", "stats"])
def test_output_into_a_pipe_nobody_reads_is_no_traceback(program, migrated_project, task):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line (`| head -0`)
    try:
        result = subprocess.run(
            program.command(program.prefix + task),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=program.env,
            timeout=120,
        )
    finally:
        os.close(write_end)

    for noise in ("Traceback", "BrokenPipeError", "Exception ignored"):
        assert noise not in result.stderr, result.stderr
    assert as_the_shell_reports(result.returncode) == CLOSED_PIPE_STATUS, result.stderr


# -- db.explain takes its query positionally ---------------------------------------------


def test_explain_takes_the_select_positionally_as_it_takes_sql(cli, migrated_project):
    query = "SELECT * FROM images WHERE privacy = 'public'"

    positional = cli("explain", query)
    as_option = cli("explain", "--sql", query)

    assert "plan:" in succeeded(positional)
    assert positional.stdout == succeeded(as_option)


def test_explain_builtin_needs_no_query(cli, migrated_project):
    result = cli("explain", "--builtin")

    assert result.returncode in (0, 1), result.stderr  # 1: a full scan of a large table
    assert "Traceback" not in result.stderr
    assert "queries" in result.stdout, result.stderr


def test_explain_refuses_a_positional_statement_that_is_not_a_select(
    cli, migrated_project, db_path
):
    result = cli("explain", "DROP TABLE tags")

    one_error_line(result, 2)
    assert "tags" in table_names(db_path)


# -- exit codes: 0 success, 1 failed, 2 bad usage, 3 not in step -------------------------


def test_status_check_exits_0_up_to_date_and_3_with_a_pending_migration(
    cli, migrated_project, write_migration
):
    succeeded(cli("status", "--check"))
    write_migration(
        f"{NEXT_VERSION}_add_karma.sql",
        "-- migrate:up\nALTER TABLE images ADD COLUMN karma INTEGER;\n",
    )

    result = cli("status", "--check")

    assert result.returncode == 3, result.stdout + result.stderr
    assert f"{NEXT_VERSION}_add_karma" in result.stdout
    assert "Traceback" not in result.stderr


def test_check_exits_0_in_step_and_3_after_a_column_is_added_by_hand(
    engine_url, engine_migrated_db
):
    succeeded(run_invoke("db.check", url=engine_url))
    engine_migrated_db.execute_sql("ALTER TABLE images ADD COLUMN karma INTEGER")

    result = run_invoke("db.check", url=engine_url)

    assert result.returncode == 3, result.stdout + result.stderr
    assert "images.karma" in result.stdout
    assert "Traceback" not in result.stderr


def test_check_in_the_console_script_exits_3_on_a_difference(
    migrated_project, migrated_db, elsewhere
):
    migrated_db.execute_sql("ALTER TABLE tags ADD COLUMN colour TEXT")

    result = run_console_script("--project", migrated_project, "check", cwd=elsewhere)

    assert result.returncode == 3, result.stdout + result.stderr
    assert "tags.colour" in result.stdout


@pytest.mark.parametrize("args", [["status", "--check"], ["check"]], ids=" ".join)
def test_an_unreachable_server_is_a_failure_exit_1_not_a_database_out_of_step(args):
    result = run_invoke(f"db.{args[0]}", *args[1:], url=UNREACHABLE_SERVER)

    one_error_line(result, 1, "127.0.0.1")


# -- JSON: a format version, times in UTC, errors as JSON too ----------------------------


@pytest.mark.parametrize("task", ["status", "stats", "check"])
def test_every_json_output_is_an_object_with_format_version_1(cli, migrated_project, task):
    document = json_object(cli(task, "--json"), 0)

    assert document["format_version"] == 1


def test_status_json_of_a_database_that_does_not_exist_has_format_version_1(cli, project, db_path):
    document = json_object(cli("status", "--json"), 0)

    assert document["format_version"] == 1
    assert document["exists"] is False
    assert not db_path.exists()


def test_check_json_with_a_difference_exits_3_with_format_version_1(
    cli, migrated_project, migrated_db
):
    migrated_db.execute_sql("ALTER TABLE tags ADD COLUMN colour TEXT")

    document = json_object(cli("check", "--json"), 3)

    assert document["format_version"] == 1
    assert document["in_step"] is False
    assert [d["detail"] for d in document["differences"]] == [
        "tags.colour: column not in the models"
    ]


def test_status_json_check_with_a_pending_migration_exits_3_with_json_alone(
    cli, migrated_project, write_migration
):
    write_migration(f"{NEXT_VERSION}_nothing.sql", "-- migrate:up\n")

    document = json_object(cli("status", "--json", "--check"), 3)

    assert document["format_version"] == 1


def test_status_json_times_carry_their_utc_offset_on_every_engine(engine_url, engine_migrated_db):
    Seeder(engine_migrated_db, PROJECT_ROOT / "seeders").seed()

    result = run_invoke("db.status", "--json", url=engine_url, env={"TZ": "America/New_York"})

    document = json_object(result, 0)
    assert document["format_version"] == 1
    applied = [m for m in document["migrations"] if m["applied_at"]]
    seeded = [s for s in document["seeders"] if s["applied_at"]]
    assert applied and seeded
    assert_recent_utc_times(document, at_least=len(applied) + len(seeded))


def test_stats_json_time_of_the_latest_backup_carries_its_utc_offset(migrated_project, elsewhere):
    new_york = {"TZ": "America/New_York"}
    succeeded(
        run_console_script("--project", migrated_project, "backup", cwd=elsewhere, env=new_york)
    )

    result = run_console_script(
        "--project", migrated_project, "stats", "--json", cwd=elsewhere, env=new_york
    )

    document = json_object(result, 0)
    assert document["format_version"] == 1
    assert document["latest_backup"] is not None
    assert_recent_utc_times(document, at_least=1)


JSON_ERRORS = {
    "bad url: 2": (["db.status", "--json"], "nosuch://somewhere/gallery", 2, "nosuch"),
    "no database yet: 2": (["db.stats", "--json"], None, 2, "does not exist yet"),
    "unreachable server: 1": (["db.check", "--json"], UNREACHABLE_SERVER, 1, "127.0.0.1"),
    "unreachable server, --check: 1": (
        ["db.status", "--json", "--check"],
        UNREACHABLE_SERVER,
        1,
        "127.0.0.1",
    ),
}


@pytest.mark.parametrize("case", JSON_ERRORS)
def test_in_json_mode_an_error_is_a_json_object_on_stdout_and_the_exit_code(db_url, case):
    args, url, exit_code, named = JSON_ERRORS[case]

    result = run_invoke(*args, url=url or db_url)

    document = json_object(result, exit_code)
    assert set(document) == {"format_version", "error", "exit_code"}
    assert document["format_version"] == 1
    assert document["exit_code"] == exit_code
    assert named in document["error"]
    assert "\n" not in document["error"]


def test_in_json_mode_the_console_scripts_errors_are_json_too(project, elsewhere):
    (project / "invoke.yaml").write_text("db:\n  url: nosuch://somewhere/gallery\n")

    result = run_console_script("--project", project, "status", "--json", cwd=elsewhere)

    document = json_object(result, 2)
    assert set(document) == {"format_version", "error", "exit_code"}
    assert (document["format_version"], document["exit_code"]) == (1, 2)
    assert "nosuch" in document["error"]


def test_project_given_after_the_task_is_refused_not_ignored(migrated_project, elsewhere):
    result = run_console_script("status", "--project", migrated_project, cwd=elsewhere)

    one_error_line(result, 2, "--project goes before")


def test_schema_check_and_output_together_are_refused(migrated_project, elsewhere):
    committed = migrated_project / "schema.sql"

    result = run_console_script(
        "--project", migrated_project, "schema", "--check", committed, "--output", committed,
        cwd=elsewhere,
    )  # fmt: skip

    one_error_line(result, 2, "--check", "--output")
    assert not committed.exists()


def test_a_project_whose_invoke_yaml_is_broken_is_one_error_line(project, elsewhere):
    (project / "invoke.yaml").write_text("db: [unclosed\n")

    result = run_console_script("--project", project, "status", cwd=elsewhere)

    one_error_line(result, 2, "invoke.yaml", str(project))


@pytest.mark.parametrize("where", ["--project", "CLONEGALLERY_PROJECT"])
def test_a_project_that_is_not_a_folder_is_one_error_line(tmp_path, elsewhere, where):
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("not a project")
    options = ["--project", not_a_folder] if where == "--project" else []
    env = {} if options else {"CLONEGALLERY_PROJECT": str(not_a_folder)}

    result = run_console_script(*options, "status", cwd=elsewhere, env=env)

    one_error_line(result, 2, where, "no such folder")


def test_a_hint_names_the_task_the_way_the_program_running_it_does(project, elsewhere):
    under_invoke = run_invoke("db.stats", url=f"sqlite:///{project / 'none.db'}")
    under_console_script = run_console_script("--project", project, "stats", cwd=elsewhere)

    one_error_line(under_invoke, 2, "does not exist yet", "invoke db.setup")
    one_error_line(under_console_script, 2, "does not exist yet", "clonegallery-db setup")
