"""db.migrate --sql: the SQL pending migrations would run on the configured engine, with
nothing applied (db/capture.py), through the real ``invoke`` on every engine."""

import re

import pytest

from db.capture import SCRATCH_ROLE
from db.engines import engine_for_url, open_database
from db.engines.base import database_name_of, side_database_name, with_database
from db.runner import Runner
from tests.conftest import MIGRATIONS_DIR, NEXT_VERSION, ok, one_error_line, run_invoke

PROJECT_MIGRATIONS = ("001_initial_schema", "002_add_indexes", "003_add_triggers")
# 006 builds its indexes outside a transaction (PostgreSQL's CREATE INDEX CONCURRENTLY).
OUTSIDE = "006_partial_and_covering_indexes"

KARMA = '''"""Give users karma and a motto."""

import peewee as pw


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("users", "karma", pw.IntegerField(default=7)),
        migrator.add_column("users", "motto", pw.CharField(default="it's mine")),
    )
'''

OUTSIDE_A_TRANSACTION = """-- an index of users' names, built on its own
-- migrate:up transaction:false lock_timeout:10s
CREATE INDEX users_name ON users (name);
-- migrate:down
DROP INDEX users_name;
"""


def migrated(url):
    """Apply the project's migrations to the database at ``url``; return its history."""
    database = open_database(url)
    try:
        Runner(database, MIGRATIONS_DIR).migrate()
        return history(database)
    finally:
        database.close()


def history(database):
    return database.execute_sql("SELECT version FROM migrations ORDER BY version").fetchall()


def columns_of(url, table):
    database = open_database(url, create=False)
    try:
        return {column.name for column in database.get_columns(table)}
    finally:
        database.close()


def tables_of(url):
    database = open_database(url, create=False)
    try:
        return database.get_tables()
    finally:
        database.close()


def sql_of(url, migrations_dir=None, *options):
    return ok(run_invoke("db.migrate", "--sql", *options, url=url, migrations_dir=migrations_dir))


def test_the_project_migrations_print_as_sql_on_a_fresh_database_which_stays_empty(
    engine, engine_db, engine_url
):
    printed = sql_of(engine_url).stdout

    for name in PROJECT_MIGRATIONS:
        assert re.search(rf"^-- {name}\.py: in a transaction", printed, re.MULTILINE), printed
    assert re.search(r"^CREATE TABLE [`\"]users[`\"] \(", printed, re.MULTILINE)
    assert re.search(
        r"^CREATE INDEX [`\"]images_uploaded_at[`\"] ON [`\"]images[`\"]", printed, re.MULTILINE
    )
    assert "CHECK (email LIKE '%_@_%._%')" in printed  # the driver's %% written back as %
    steps = steps_of(printed)
    assert all(line.endswith(";") for lines in steps.values() for line in lines), steps
    assert re.search(rf"^-- {OUTSIDE}\.py: outside a transaction", printed, re.MULTILINE)
    assert {*PROJECT_MIGRATIONS, OUTSIDE} <= steps.keys()
    for name, lines in steps.items():
        if engine == "mysql" or name == OUTSIDE:  # MySQL's DDL commits as it runs
            assert "BEGIN;" not in lines and "COMMIT;" not in lines, name
        elif lines:  # 004 has no SQL on SQLite
            assert lines[0] == "BEGIN;" and lines[-1] == "COMMIT;", name
            assert lines.count("BEGIN;") == lines.count("COMMIT;") == 1, name
    assert tables_of(engine_url) == []  # not even the history table


def steps_of(printed):
    """Return {migration: its statement lines} of what db.migrate --sql printed."""
    steps, current = {}, None
    for line in printed.splitlines():
        header = re.match(r"^-- (\w+)\.(py|sql): ", line)
        if header:
            current = steps.setdefault(header[1], [])
        elif line and not line.startswith("--") and current is not None:
            current.append(line)
    return steps


def test_a_python_migration_shows_the_update_of_its_default_with_the_literal_and_applies_nothing(
    engine, engine_url, project_migrations, write_migration
):
    before = migrated(engine_url)
    write_migration(f"{NEXT_VERSION}_karma.py", KARMA)

    printed = sql_of(engine_url, project_migrations).stdout

    assert f"-- {NEXT_VERSION}_karma.py: in a transaction" in printed
    assert re.search(r"^ALTER TABLE [`\"]users[`\"] ADD COLUMN [`\"]karma[`\"]", printed, re.M)
    assert re.search(r"^UPDATE [`\"]users[`\"] SET [`\"]karma[`\"] = 7;$", printed, re.M)
    motto = r"'it\\'s mine'" if engine == "mysql" else r"'it''s mine'"
    assert re.search(rf"^UPDATE [`\"]users[`\"] SET [`\"]motto[`\"] = {motto};$", printed, re.M)
    if engine == "sqlite":  # NOT NULL needs peewee's rebuild, which saw the added column
        assert 'INSERT INTO "users__tmp__" (' in printed and '"karma", "motto")' in printed
    database = open_database(engine_url, create=False)
    try:
        assert history(database) == before
    finally:
        database.close()
    assert not {"karma", "motto"} & columns_of(engine_url, "users")
    if engine == "mysql":  # the side database the statements ran in is gone
        assert not engine_for_url(engine_url).exists(side_url(engine_url))


def side_url(url):
    """Where db.migrate --sql builds its side database on MySQL, beside ``url``'s."""
    return with_database(url, side_database_name(database_name_of(url), SCRATCH_ROLE))


def test_a_side_database_that_already_exists_is_refused_and_left_as_it_is(
    engine, engine_url, project_migrations
):
    if engine != "mysql":
        pytest.skip("only MySQL captures in a side database")
    ok(run_invoke("db.migrate", "--to", "001", url=engine_url, migrations_dir=project_migrations))
    someones = side_url(engine_url)
    engine_for_url(someones).create(someones)
    kept = open_database(someones)
    try:
        kept.execute_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY)")

        result = run_invoke(
            "db.migrate", "--sql", url=engine_url, migrations_dir=project_migrations
        )

        one_error_line(result, 2, "_sqlcapture already exists", "drop it")
        assert kept.get_tables() == ["notes"]
    finally:
        kept.close()
        engine_for_url(someones).drop(someones)


def test_a_step_outside_a_transaction_prints_without_begin_and_with_its_own_lock_timeout(
    engine, engine_url, project_migrations, write_migration
):
    migrated(engine_url)
    write_migration(f"{NEXT_VERSION}_users_name.sql", OUTSIDE_A_TRANSACTION)

    printed = sql_of(engine_url, project_migrations).stdout

    header = (
        f"-- {NEXT_VERSION}_users_name.sql: outside a transaction: "
        "each statement commits as it runs; "
    )
    assert header + "lock timeout 10s, statement timeout no limit" in printed
    assert printed.rstrip().endswith("CREATE INDEX users_name ON users (name);")
    assert "BEGIN;" not in printed
    assert "users_name" not in {index.name for index in open_indexes(engine_url, "users")}


def open_indexes(url, table):
    database = open_database(url, create=False)
    try:
        return database.get_indexes(table)
    finally:
        database.close()


def test_the_configured_timeouts_head_each_migration(engine, engine_db, engine_url):
    printed = ok(
        run_invoke(
            "db.migrate",
            "--sql",
            "--to",
            "001",
            url=engine_url,
            env={"INVOKE_DB_LOCK_TIMEOUT": "2m", "INVOKE_DB_STATEMENT_TIMEOUT": "30s"},
        )
    ).stdout

    assert "001_initial_schema.py: in a" in printed
    assert "lock timeout 2m, statement timeout 30s" in printed
    assert "002_add_indexes" not in printed


def test_nothing_pending_is_said_as_an_sql_comment(engine, engine_url):
    migrated(engine_url)

    assert sql_of(engine_url).stdout == "-- nothing to apply: no pending migrations\n"


def test_sql_with_dry_run_is_one_usage_line(db_url):
    result = run_invoke("db.migrate", "--sql", "--dry-run", url=db_url)

    one_error_line(result, 2, "--sql", "--dry-run")


def test_an_unknown_to_is_refused_as_db_migrate_refuses_it(db_url):
    result = run_invoke("db.migrate", "--sql", "--to", "009", url=db_url)

    one_error_line(result, 2, "--to 009", "known: 001")


def test_a_changed_applied_migration_is_refused_as_drift(db_url, project_migrations):
    migrated(db_url)
    edited = project_migrations / "003_add_triggers.py"
    edited.write_text(edited.read_text() + "\n# edited\n")

    result = run_invoke("db.migrate", "--sql", url=db_url, migrations_dir=project_migrations)

    one_error_line(result, 1, "003_add_triggers", "changed")


@pytest.mark.engine
def test_a_server_database_that_does_not_exist_is_refused_in_one_line():
    from tests import servers

    servers.require_server("postgres")
    url = servers.new_database_url("postgres")

    result = run_invoke("db.migrate", "--sql", url=url)

    one_error_line(result, 2, "does not exist yet", "live schema")
