"""The ``db.*`` Invoke tasks as a user sees them: real ``invoke`` subprocesses, real SQLite files.

Every refusal is checked the same way: the exit code a pipeline can rely on, exactly one
``error: ...`` line on stderr naming what is at fault, no traceback, and the database
exactly as it was before (see ``fingerprint``).
"""

import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from db.loader import discover
from tests.conftest import MIGRATIONS_DIR, one_error_line, run_invoke


def reversible_table(name):
    """Return an SQL migration creating table ``name`` and dropping it on rollback."""
    return (
        f"-- migrate:up\nCREATE TABLE {name} (id INTEGER PRIMARY KEY);\n"
        f"-- migrate:down\nDROP TABLE {name};\n"
    )


CREATE_A, CREATE_B, CREATE_C = (reversible_table(name) for name in "abc")
BROKEN_SQL = (
    "-- migrate:up\n"
    "CREATE TABLE b (id INTEGER PRIMARY KEY);\n"
    "CREATE TABLEX oops (id INTEGER);\n"
    "-- migrate:down\n"
    "DROP TABLE b;\n"
)
FAILS_HALFWAY = (
    "def up(migrator, db):\n"
    '    db.execute_sql("CREATE TABLE half (id INTEGER PRIMARY KEY)")\n'
    '    raise RuntimeError("boom halfway")\n'
)
UP_WITHOUT_DOWN = 'def up(migrator, db):\n    db.execute_sql("CREATE TABLE b (id INTEGER)")\n'
DOWN_WITHOUT_UP = "def down(migrator, db):\n    pass\n"
SQL_WITHOUT_MARKERS = "CREATE TABLE b (id INTEGER PRIMARY KEY);\n"

TASK_OPTIONS = {
    "db.setup": ["no-sample", "force", "debug"],
    "db.migrate": ["to", "dry-run", "allow-out-of-order", "sql", "strict", "debug"],
    "db.lint": ["version", "debug"],
    "db.baseline": ["version", "debug"],
    "db.rollback": ["to", "steps", "dry-run", "debug"],
    "db.status": ["json", "check", "debug"],
    "db.transfer": ["to", "force", "batch", "debug"],
    "db.new-migration": ["name", "sql", "auto", "debug"],
    "db.backup": [
        "output",
        "compress",
        "keep",
        "keep-daily",
        "keep-weekly",
        "keep-monthly",
        "verify",
        "every",
        "encrypt",
        "debug",
    ],
    "db.backups": ["all", "max-age", "pitr", "debug"],
    "db.verify": ["path", "identity", "debug"],
    "db.restore": ["path", "yes", "identity", "to-time", "latest", "data-dir", "port", "debug"],
    "db.replicate": ["init", "debug"],
    "db.schema": ["output", "check", "debug"],
    "db.optimize": ["debug"],
    "db.explain": ["sql", "builtin", "debug"],
    "db.stats": ["json", "debug"],
    "db.top": ["limit", "reset", "json", "debug"],
    "db.diagram": ["output", "debug"],
    "db.check": ["json", "debug"],
    "db.health": ["json", "prometheus", "every", "debug"],
    "db.locks": ["json", "kill", "yes", "debug"],
}
# Every task that works on a database takes --tenant; these also --all-tenants [--jobs].
ALL_TENANTS_TASKS = ("db.migrate", "db.rollback", "db.seed", "db.status", "db.check")
ALL_TENANTS_TASKS += ("db.stats", "db.health")
for _task, _options in TASK_OPTIONS.items():
    _options.append("tenant")
    if _task in ALL_TENANTS_TASKS:
        _options += ["all-tenants", "jobs"]
TASK_OPTIONS |= {
    "db.tenants": ["json", "debug"],
    "db.tenant-create": ["name", "no-sample", "force", "debug"],
    "db.tenant-drop": ["name", "yes", "debug"],
}
OPTION_LINE = re.compile(r"^\s+(?:-\w(?: [A-Z]+)?, )?--(?P<option>[a-z-]+)(?:=[A-Z]+)?\s{2,}\S")


# -- helpers -----------------------------------------------------------------------------


def fingerprint(path):
    """Return the database's schema and history rows, or None when the file does not exist."""
    if not Path(path).exists():
        return None
    with closing(sqlite3.connect(path)) as connection:
        schema = connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
        history = []
        if ("table", "migrations") in {(kind, name) for kind, name, _, _ in schema}:
            history = connection.execute("SELECT * FROM migrations ORDER BY version").fetchall()
    return schema, history


def schema_of(path):
    """Return the schema objects of the database, without the history rows."""
    return fingerprint(path)[0]


def tables(path):
    """Return the table names of the database, history table included."""
    return sorted(name for kind, name, _, _ in schema_of(path) if kind == "table")


def applied_versions(path):
    """Return the versions in the history table, oldest first."""
    return [row[0] for row in fingerprint(path)[1]]


def succeeded(result):
    """Assert the command exited 0 without a word on stderr; return its stdout."""
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def status_json(result):
    """Return the parsed output of a successful ``db.status --json``."""
    return json.loads(succeeded(result))


def states(result):
    """Return {version: state} from a successful ``db.status --json``."""
    return {m["version"]: m["state"] for m in status_json(result)["migrations"]}


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def cli(db_url, migrations_dir):
    """Run ``invoke ARGS`` on the test's SQLite file with the test's own migrations folder."""

    def run(*args, **kwargs):
        return run_invoke(*args, url=db_url, migrations_dir=migrations_dir, **kwargs)

    return run


@pytest.fixture
def project_cli(db_url):
    """Run ``invoke ARGS`` on the test's SQLite file with the project's real migrations."""

    def run(*args, **kwargs):
        return run_invoke(*args, url=db_url, **kwargs)

    return run


@pytest.fixture
def project_migrations():
    """The names of the project's real migrations, oldest first."""
    names = [migration.name for migration in discover(MIGRATIONS_DIR)]
    assert names, f"no migrations in {MIGRATIONS_DIR}"
    return names


@pytest.fixture
def abc(write_migration):
    """Three reversible SQL migrations, 001 to 003, creating tables a, b and c."""
    return [
        write_migration("001_create_a.sql", CREATE_A),
        write_migration("002_create_b.sql", CREATE_B),
        write_migration("003_create_c.sql", CREATE_C),
    ]


@pytest.fixture
def a_applied(cli, write_migration):
    """Migration 001 (table a) applied; the test adds what comes next."""
    path = write_migration("001_create_a.sql", CREATE_A)
    succeeded(cli("db.migrate"))
    return path


# -- what the tasks say about themselves -------------------------------------------------


def test_invoke_list_shows_every_db_task_with_a_one_line_help():
    listing = succeeded(run_invoke("--list"))

    for task in TASK_OPTIONS:
        assert re.search(rf"^\s+{re.escape(task)}\s+[A-Z]\w+ .+", listing, re.MULTILINE), task


@pytest.mark.parametrize("task", TASK_OPTIONS)
def test_help_documents_every_option_of_the_task(task):
    text = succeeded(run_invoke("--help", task))

    options_section = text.split("Options:", 1)[1]
    documented = {
        match["option"]
        for line in options_section.splitlines()
        if (match := OPTION_LINE.match(line))
    }
    assert documented == set(TASK_OPTIONS[task])
    docstring = text.split("Docstring:", 1)[1].split("Options:", 1)[0].strip()
    assert docstring and "\n" not in docstring


# -- the happy path on the project's real migrations -------------------------------------


def test_setup_creates_a_new_sqlite_file_and_applies_every_migration(
    project_cli, db_path, project_migrations
):
    output = succeeded(project_cli("db.setup"))

    for name in project_migrations:
        # 004 is PostgreSQL's row-level security: on SQLite it runs no SQL, and says so.
        empty = "; its up ran no SQL" if name == "004_row_level_security" else ""
        assert re.search(rf"^applied {name} \(\d+ ms{empty}\)$", output, re.MULTILINE), name
    assert output.rstrip().endswith(
        f"set up: applied {len(project_migrations)} migration(s), ran 6 seeder(s)"
    )
    assert applied_versions(db_path) == [name[:3] for name in project_migrations]


def test_a_second_setup_says_it_is_already_set_up_and_changes_nothing(project_cli, db_path):
    succeeded(project_cli("db.setup"))
    before = fingerprint(db_path)

    assert "already set up" in succeeded(project_cli("db.setup"))
    assert fingerprint(db_path) == before


def test_status_shows_every_migration_applied_and_up_to_date(
    project_cli, db_path, project_migrations
):
    succeeded(project_cli("db.setup"))

    output = succeeded(project_cli("db.status"))

    assert f"database: sqlite:///{db_path}" in output
    assert f"current version: {project_migrations[-1][:3]}" in output
    for name in project_migrations:
        assert re.search(rf"^{name[:3]}\s+applied\s+\d{{4}}-.*\s{name}$", output, re.MULTILINE)
    assert output.rstrip().endswith("up to date")
    assert "NOT" not in output


def test_status_json_gives_the_database_the_version_and_every_migration(
    project_cli, db_path, project_migrations
):
    succeeded(project_cli("db.setup"))

    report = status_json(project_cli("db.status", "--json"))

    assert report.keys() == {
        "format_version", "database", "exists", "current_version", "up_to_date", "migrations",
        "seeders", "incomplete_transfer", "invalid_indexes", "replication",
    }  # fmt: skip
    assert report["database"] == f"sqlite:///{db_path}"
    assert report["exists"] is True
    assert report["up_to_date"] is True
    assert report["incomplete_transfer"] is None
    assert report["replication"] is None  # SQLite has no standbys (tests/test_standby.py)
    assert report["current_version"] == project_migrations[-1][:3]
    assert [m["name"] for m in report["migrations"]] == project_migrations
    for migration in report["migrations"]:
        assert migration.keys() == {
            "version",
            "name",
            "state",
            "applied_at",
            "duration_ms",
            "error",
            "baseline",
        }
        assert migration["error"] is None
        assert migration["baseline"] is None
        assert migration["version"] == migration["name"][:3]
        assert migration["state"] == "applied"
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", migration["applied_at"])
        assert isinstance(migration["duration_ms"], int)
    for seeder in report["seeders"]:
        assert seeder.keys() == {"name", "state", "applied_at", "kind"}
        assert seeder["state"] == "applied"


def test_status_check_exits_0_when_up_to_date_and_3_when_a_migration_is_pending(
    cli, a_applied, write_migration
):
    assert cli("db.status", "--check").returncode == 0

    write_migration("002_create_b.sql", CREATE_B)
    result = cli("db.status", "--check")

    assert result.returncode == 3
    assert "NOT up to date" in result.stdout
    assert result.stderr == ""


def test_status_of_a_database_that_does_not_exist_does_not_create_it(cli, db_path, abc):
    output = succeeded(cli("db.status"))

    assert "does not exist yet" in output
    assert "current version: none" in output
    report = status_json(cli("db.status", "--json"))
    assert report["exists"] is False
    assert report["current_version"] is None
    assert {m["state"] for m in report["migrations"]} == {"pending"}
    assert cli("db.status", "--check").returncode == 3
    assert not db_path.exists()
    assert list(db_path.parent.glob(db_path.name + "*")) == []


def test_migrate_dry_run_lists_the_plan_and_creates_no_database(
    project_cli, db_path, project_migrations
):
    output = succeeded(project_cli("db.migrate", "--dry-run"))

    assert f"would apply {len(project_migrations)} migrations" in output
    assert ", ".join(project_migrations) in output
    assert "nothing changed" in output
    assert not db_path.exists()


def test_migrate_dry_run_on_a_database_lists_only_the_pending_and_changes_nothing(
    cli, db_path, a_applied, write_migration
):
    write_migration("002_create_b.sql", CREATE_B)
    before = fingerprint(db_path)

    output = succeeded(cli("db.migrate", "--dry-run"))

    assert "would apply 1 migrations: 002_create_b (nothing changed)" in output
    assert fingerprint(db_path) == before


def test_migrate_to_stops_after_that_version(cli, db_path, abc):
    succeeded(cli("db.migrate", "--to", "002"))

    assert applied_versions(db_path) == ["001", "002"]
    assert states(cli("db.status", "--json"))["003"] == "pending"


def test_new_migration_writes_the_next_numbered_python_file_which_status_shows_pending(
    cli, db_path, abc, migrations_dir
):
    succeeded(cli("db.migrate"))

    output = succeeded(cli("db.new-migration", "Add karma to users!"))

    created = migrations_dir / "004_add_karma_to_users.py"
    assert output.strip() == f"created {created}"
    assert "def up(migrator, db):" in created.read_text()
    assert "def down(migrator, db):" in created.read_text()
    assert states(cli("db.status", "--json"))["004"] == "pending"
    # The skeleton is a valid, reversible migration as it stands.
    succeeded(cli("db.migrate"))
    assert applied_versions(db_path) == ["001", "002", "003", "004"]
    succeeded(cli("db.rollback"))
    assert applied_versions(db_path) == ["001", "002", "003"]


def test_new_migration_sql_writes_an_sql_file_with_up_and_down_markers(cli, migrations_dir):
    succeeded(cli("db.new-migration", "--sql", "tag colours"))
    succeeded(cli("db.new-migration", "--sql", "album order"))

    first, second = sorted(migrations_dir.iterdir())
    assert [first.name, second.name] == ["001_tag_colours.sql", "002_album_order.sql"]
    text = first.read_text()
    assert text.index("-- migrate:up") < text.index("-- migrate:down")
    assert states(cli("db.status", "--json")) == {"001": "pending", "002": "pending"}


def test_rollback_reverts_only_the_last_migration_by_default(
    project_cli, db_path, project_migrations
):
    succeeded(project_cli("db.setup"))

    output = succeeded(project_cli("db.rollback"))

    assert f"reverted {project_migrations[-1]}" in output
    assert "rolled back 1 migration(s)" in output
    assert applied_versions(db_path) == [name[:3] for name in project_migrations[:-1]]


def test_rollback_to_0_reverts_every_migration_and_setup_rebuilds_the_same_schema(
    project_cli, db_path, project_migrations
):
    succeeded(project_cli("db.setup"))
    built = schema_of(db_path)

    output = succeeded(project_cli("db.rollback", "--to", "0"))

    assert f"rolled back {len(project_migrations)} migration(s)" in output
    assert applied_versions(db_path) == []
    leftovers = [
        (kind, name)
        for kind, name, table, _ in schema_of(db_path)
        if table not in ("migrations", "sqlite_sequence")
    ]
    assert leftovers == []
    succeeded(project_cli("db.setup"))
    assert schema_of(db_path) == built


def test_rollback_steps_2_reverts_the_last_two_migrations(project_cli, db_path, project_migrations):
    if len(project_migrations) < 3:
        pytest.skip("needs three project migrations")
    succeeded(project_cli("db.setup"))

    output = succeeded(project_cli("db.rollback", "--steps", "2"))

    assert output.index(project_migrations[-1]) < output.index(project_migrations[-2])
    assert applied_versions(db_path) == [name[:3] for name in project_migrations[:-2]]


def test_rollback_dry_run_lists_the_plan_and_changes_nothing(cli, db_path, abc):
    succeeded(cli("db.migrate"))
    before = fingerprint(db_path)

    output = succeeded(cli("db.rollback", "--steps", "2", "--dry-run"))

    assert "would roll back 003_create_c, 002_create_b (nothing changed)" in output
    assert fingerprint(db_path) == before


# -- bad input: refused with one line, a meaningful exit code, and nothing changed -------


@pytest.mark.parametrize("task", ["db.setup", "db.migrate", "db.rollback", "db.status"])
def test_an_unknown_url_scheme_is_refused_naming_the_url(task, migrations_dir, tmp_path):
    before = sorted(tmp_path.iterdir())

    result = run_invoke(task, url="foo://x", migrations_dir=migrations_dir)

    one_error_line(result, 2, "'foo'", "foo://x", "sqlite:///")
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("task", ["db.setup", "db.migrate", "db.rollback"])
def test_an_sqlite_file_in_a_missing_folder_is_refused_naming_the_folder(
    task, migrations_dir, tmp_path, abc
):
    missing = tmp_path / "no" / "such" / "folder"

    result = run_invoke(task, url=f"sqlite:///{missing}/app.db", migrations_dir=migrations_dir)

    one_error_line(result, 2, str(missing), "does not exist")
    assert not (tmp_path / "no").exists()


def test_a_missing_migrations_folder_is_named(db_url, tmp_path):
    missing = tmp_path / "nowhere"

    for task in ("db.migrate", "db.status", "db.new-migration"):
        args = (task, "add karma") if task == "db.new-migration" else (task,)
        result = run_invoke(*args, url=db_url, migrations_dir=missing)
        one_error_line(result, 2, str(missing), "does not exist")
    assert not missing.exists()


def test_a_refused_setup_on_a_new_database_leaves_no_file_behind(cli, db_path, write_migration):
    write_migration("4_bad.py", UP_WITHOUT_DOWN)

    one_error_line(cli("db.setup"), 2, "4_bad.py")
    assert fingerprint(db_path) is None


def test_an_sql_error_names_the_file_keeps_earlier_migrations_and_leaves_nothing_of_its_own(
    cli, db_path, write_migration, tmp_path, migrations_dir
):
    write_migration("001_create_a.sql", CREATE_A)
    write_migration("002_broken.sql", BROKEN_SQL)
    write_migration("003_create_c.sql", CREATE_C)
    reference = tmp_path / "reference.db"
    succeeded(
        run_invoke(
            "db.migrate", "--to", "001", url=f"sqlite:///{reference}", migrations_dir=migrations_dir
        )
    )

    result = cli("db.migrate")

    one_error_line(result, 1, "002_broken.sql", "line 3", "TABLEX", "rolled back")
    assert "applied 001_create_a" in result.stdout
    assert applied_versions(db_path) == ["001"]
    assert tables(db_path) == ["a", "migrations"]
    assert schema_of(db_path) == schema_of(reference)
    expected = {"001": "applied", "002": "pending", "003": "pending"}
    assert states(cli("db.status", "--json")) == expected


def test_a_python_migration_failing_halfway_leaves_nothing_and_names_its_file_and_line(
    cli, db_path, a_applied, write_migration
):
    write_migration("002_fails_halfway.py", FAILS_HALFWAY)
    before = fingerprint(db_path)

    result = cli("db.migrate")

    one_error_line(result, 1, "002_fails_halfway.py", "line 3", "RuntimeError", "boom halfway")
    assert fingerprint(db_path) == before
    assert "half" not in tables(db_path)


def test_a_python_migration_that_does_not_import_is_refused_naming_file_and_line(
    cli, db_path, a_applied, write_migration
):
    write_migration("002_typo.py", "def up(migrator, db)\n    pass\n")
    before = fingerprint(db_path)

    one_error_line(cli("db.migrate"), 2, "002_typo.py", "line 1")
    assert fingerprint(db_path) == before


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["db.migrate", "--to", "009"], ["--to 009", "known: 001, 002, 003"]),
        (["db.migrate", "--to", "abc"], ["--to abc", "002"]),
        (["db.rollback", "--to", "009"], ["--to 009", "applied: 001, 002"]),
        (["db.rollback", "--to", "003"], ["--to 003", "applied: 001, 002"]),
    ],
    ids=["migrate-to-009", "migrate-to-abc", "rollback-to-009", "rollback-to-pending-003"],
)
def test_an_unknown_to_version_is_refused_naming_it(cli, db_path, abc, args, named):
    succeeded(cli("db.migrate", "--to", "002"))
    before = fingerprint(db_path)

    one_error_line(cli(*args), 2, *named)
    assert fingerprint(db_path) == before


@pytest.mark.parametrize(
    ("steps", "named"),
    [("0", "1 or more, not 0"), ("-1", "1 or more, not -1"), ("abc", "whole number, not 'abc'")],
)
def test_bad_steps_are_refused_naming_the_value(cli, db_path, abc, steps, named):
    succeeded(cli("db.migrate"))
    before = fingerprint(db_path)

    one_error_line(cli("db.rollback", "--steps", steps), 2, "--steps", named)
    assert fingerprint(db_path) == before


def test_to_together_with_steps_is_refused(cli, db_path, abc):
    succeeded(cli("db.migrate"))
    before = fingerprint(db_path)

    one_error_line(cli("db.rollback", "--to", "001", "--steps", "1"), 2, "--to", "--steps")
    assert fingerprint(db_path) == before


def test_an_edited_applied_migration_is_shown_changed_and_stops_migrate_and_rollback(
    cli, db_path, a_applied, write_migration
):
    a_applied.write_text(CREATE_A.replace("id INTEGER", "id BIGINT"))
    write_migration("002_create_b.sql", CREATE_B)
    before = fingerprint(db_path)

    assert states(cli("db.status", "--json")) == {"001": "changed", "002": "pending"}
    assert cli("db.status", "--check").returncode == 3
    for task in ("db.migrate", "db.rollback"):
        one_error_line(cli(task), 1, "001_create_a", "changed after it was applied")
    assert fingerprint(db_path) == before


def test_a_deleted_applied_migration_is_shown_missing_and_stops_migrate_and_rollback(
    cli, db_path, abc
):
    succeeded(cli("db.migrate", "--to", "002"))
    abc[1].unlink()
    before = fingerprint(db_path)

    expected = {"001": "applied", "002": "missing", "003": "pending"}
    assert states(cli("db.status", "--json")) == expected
    assert cli("db.status", "--check").returncode == 3
    for task in ("db.migrate", "db.rollback"):
        one_error_line(cli(task), 1, "002_create_b", "file is gone")
    assert fingerprint(db_path) == before


def test_changing_only_line_endings_of_an_applied_migration_is_not_drift(cli, db_path, a_applied):
    a_applied.write_bytes(CREATE_A.replace("\n", "\r\n").encode())

    assert states(cli("db.status", "--json")) == {"001": "applied"}
    assert cli("db.status", "--check").returncode == 0
    assert "already up to date" in succeeded(cli("db.migrate"))
    succeeded(cli("db.rollback"))
    assert tables(db_path) == ["migrations"]


@pytest.mark.parametrize("name", ["4_bad.py", "004-bad.sql", "004_Bad.sql"])
def test_a_misnamed_migration_file_is_refused_naming_it(
    cli, db_path, a_applied, write_migration, name
):
    write_migration(name, "CREATE TABLE bad (id INTEGER);\n")
    before = fingerprint(db_path)

    for task in ("db.migrate", "db.status", "db.rollback"):
        one_error_line(cli(task), 2, name, "NNN_description")
    assert fingerprint(db_path) == before


def test_two_files_with_the_same_version_are_refused_naming_both(
    cli, db_path, a_applied, write_migration
):
    write_migration("002_create_b.sql", CREATE_B)
    write_migration("002_create_c.sql", CREATE_C)
    before = fingerprint(db_path)

    for task in ("db.migrate", "db.status"):
        one_error_line(cli(task), 2, "002_create_b.sql", "002_create_c.sql", "version 002")
    assert fingerprint(db_path) == before


def test_a_python_migration_without_up_is_refused_before_anything_runs(
    cli, db_path, a_applied, write_migration
):
    write_migration("002_create_b.sql", CREATE_B)
    write_migration("003_no_up.py", DOWN_WITHOUT_UP)
    before = fingerprint(db_path)

    one_error_line(cli("db.migrate"), 2, "003_no_up.py", "no up(migrator, db)")
    assert fingerprint(db_path) == before


@pytest.mark.parametrize(
    ("name", "text"),
    [("002_no_down.py", UP_WITHOUT_DOWN), ("002_no_markers.sql", SQL_WITHOUT_MARKERS)],
    ids=["python-without-down", "sql-without-markers"],
)
def test_rolling_back_a_migration_without_a_down_step_is_refused(
    cli, db_path, a_applied, write_migration, name, text
):
    write_migration(name, text)
    write_migration("003_create_c.sql", CREATE_C)
    succeeded(cli("db.migrate"))
    before = fingerprint(db_path)

    # --to 0 would revert 003 first: the plan is refused before it does.
    for args in (["--steps", "2"], ["--to", "0"]):
        one_error_line(cli("db.rollback", *args), 1, name, "cannot be rolled back")
    assert fingerprint(db_path) == before
    succeeded(cli("db.rollback"))
    assert applied_versions(db_path) == ["001", "002"]


def test_a_pending_migration_numbered_below_an_applied_one_needs_allow_out_of_order(
    cli, db_path, write_migration
):
    write_migration("001_create_a.sql", CREATE_A)
    write_migration("003_create_c.sql", CREATE_C)
    succeeded(cli("db.migrate"))
    write_migration("002_create_b.sql", CREATE_B)
    before = fingerprint(db_path)

    one_error_line(cli("db.migrate"), 1, "002_create_b.sql", "003", "--allow-out-of-order")
    assert fingerprint(db_path) == before

    assert "applied 002_create_b" in succeeded(cli("db.migrate", "--allow-out-of-order"))
    assert applied_versions(db_path) == ["001", "002", "003"]


@pytest.mark.parametrize("name", ["", "   ", "---", "!?"])
def test_new_migration_needs_a_name_with_letters_or_digits(cli, migrations_dir, name):
    one_error_line(cli("db.new-migration", name), 2, "description")
    assert list(migrations_dir.iterdir()) == []


# -- tracebacks on demand, passwords never -----------------------------------------------


def test_debug_shows_the_traceback_behind_the_error_line(cli, db_path, a_applied, write_migration):
    write_migration("002_fails_halfway.py", FAILS_HALFWAY)
    before = fingerprint(db_path)

    result = cli("db.migrate", "--debug")

    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert 'raise RuntimeError("boom halfway")' in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: 002_fails_halfway.py failed")
    assert fingerprint(db_path) == before


def test_invoke_db_debug_1_shows_the_traceback_too(cli, a_applied, write_migration):
    write_migration("002_fails_halfway.py", FAILS_HALFWAY)

    result = cli("db.migrate", env={"INVOKE_DB_DEBUG": "1"})

    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: 002_fails_halfway.py failed")


@pytest.mark.parametrize("debug", [[], ["--debug"]], ids=["plain", "debug"])
def test_a_password_in_the_database_url_is_never_printed(migrations_dir, debug):
    url = "foo://bob:s3cret@127.0.0.1:1/x"

    result = run_invoke("db.status", *debug, url=url, migrations_dir=migrations_dir)

    assert result.returncode == 2
    assert "s3cret" not in result.stdout + result.stderr
    assert "foo://bob:***@127.0.0.1:1/x" in result.stderr
    if not debug:
        one_error_line(result, 2, "foo://bob:***@127.0.0.1:1/x")


def test_a_postgresql_url_that_cannot_be_opened_is_one_error_line(migrations_dir):
    url = "postgresql://bob:s3cret@127.0.0.1:1/x"

    result = run_invoke("db.status", url=url, migrations_dir=migrations_dir)

    assert "s3cret" not in result.stdout + result.stderr
    assert result.returncode in (1, 2)
    one_error_line(result, result.returncode, "postgresql://bob:***@127.0.0.1:1/x")


def test_a_password_given_as_a_url_parameter_is_never_printed(migrations_dir):
    url = "foo://bob@127.0.0.1:1/x?password=s3cret"

    result = run_invoke("db.status", url=url, migrations_dir=migrations_dir)

    one_error_line(result, 2, "foo://bob@127.0.0.1:1/x")
    assert "s3cret" not in result.stdout + result.stderr


def test_a_file_that_is_not_a_database_is_named_and_left_alone(cli, db_path):
    db_path.write_text("holiday notes, not a database\n")

    for task in ("db.status", "db.migrate", "db.rollback"):
        one_error_line(cli(task), 1, str(db_path), "file is not a database")
    assert db_path.read_text() == "holiday notes, not a database\n"


def test_a_foreign_migrations_table_is_refused_not_overwritten(project_cli, db_path):
    # The seed's old scripts kept a `migrations (version, description)` table.
    with closing(sqlite3.connect(db_path)) as connection:
        connection.execute("CREATE TABLE migrations (version TEXT PRIMARY KEY, description TEXT)")
        connection.execute("INSERT INTO migrations VALUES ('001', 'Initial schema')")
        connection.commit()
    before = fingerprint(db_path)

    for task in ("db.status", "db.migrate", "db.rollback"):
        one_error_line(project_cli(task), 1, "'migrations'", "not this toolkit's history")
    assert fingerprint(db_path) == before
