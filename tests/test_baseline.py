"""db.baseline: adopting a database that already has the schema, made by hand or by the
seed's original scripts, on every engine.

The databases are built for real: by the project's migrations with their history dropped
afterwards, or from the seed era's SQL (tests/fixtures/seed_era); the task runs as a
subprocess, and the tests look at the history and the rows it leaves.
"""

import datetime
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from db.baseline import adopt
from db.engines import engine_for, engine_for_url, open_database
from db.engines.base import database_name_of, side_database_name, with_database
from db.errors import SchemaDiffers
from db.history import History, SeederHistory
from db.loader import discover
from db.runner import Runner
from db.target import Target
from tests import servers
from tests.conftest import MIGRATIONS_DIR, PROJECT_ROOT, ok, one_error_line, run_invoke

SEED_ERA = Path(__file__).parent / "fixtures" / "seed_era"
SEEDERS_DIR = PROJECT_ROOT / "seeders"
SEED_ERA_TIME = datetime.datetime(2024, 12, 19, 10, 30)
# The project's migration versions, read from its folder: counts and lists of what
# db.migrate applies after a baseline follow the project's newest migration.
PROJECT_VERSIONS = [migration.version for migration in discover(MIGRATIONS_DIR)]


def versions_after(version):
    """Return the project's versions newer than ``version``, which db.migrate applies."""
    return [v for v in PROJECT_VERSIONS if int(v) > int(version)]


def execute_file(database, path):
    """Run every statement of an SQL file, as the seed era's scripts did (no parameters:
    a ``%`` in a CHECK stays one)."""
    for statement in engine_for(database).split_statements(path.read_text(encoding="utf-8")):
        database.cursor().execute(statement.sql)


def build_seed_era(database, engine):
    """Make ``database`` what the seed's manage.py setup left: schema, rows, bookkeeping."""
    for path in (
        SEED_ERA / engine / "000_bookkeeping.sql",
        SEED_ERA / engine / "001_initial_schema.sql",
        SEED_ERA / "002_add_indexes.sql",
        SEED_ERA / engine / "003_add_triggers.sql",
        SEED_ERA / "seeders.sql",
    ):
        execute_file(database, path)
    # One known time for every seed-era row, to see it carried over.
    for table in ("migrations", "seeders"):
        database.execute_sql(f"UPDATE {table} SET applied_at = {database.param}", (SEED_ERA_TIME,))


def built_by_migrations_without_history(database, version="003"):
    """Make ``database`` hold the schema of the migrations up to ``version``, no history."""
    Runner(database, MIGRATIONS_DIR).migrate(to=version)
    database.execute_sql("DROP TABLE migrations")


def tables(database):
    return sorted(database.get_tables())


def status_json(url):
    return json.loads(ok(run_invoke("db.status", "--json", url=url)).stdout)


def count(database, table):
    return database.execute_sql(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def drop_column_and_add(database, table, column, declared):
    database.execute_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    database.execute_sql(f"ALTER TABLE {table} ADD COLUMN {column} {declared}")


def drop_index(database, table, columns):
    name = next(i.name for i in database.get_indexes(table) if i.columns == columns)
    on_table = f" ON {table}" if type(database).__name__.startswith("MySQL") else ""
    database.execute_sql(f"DROP INDEX {name}{on_table}")


# -- a database made by hand ---------------------------------------------------------------


def test_a_database_with_the_schema_but_no_history_is_adopted_then_migrated_forward(
    engine_db, engine_url
):
    built_by_migrations_without_history(engine_db)

    result = ok(run_invoke("db.baseline", "003", url=engine_url))

    assert "recorded 3 migration(s) as a baseline at 003" in result.stdout
    applied = History(engine_db).applied()
    assert list(applied) == ["001", "002", "003"]
    assert {row.baseline for row in applied.values()} == {"adopted by db.baseline"}
    migrated = ok(run_invoke("db.migrate", url=engine_url)).stdout
    assert "applying 004_row_level_security" in migrated
    assert f"applied {len(versions_after('003'))} migrations" in migrated
    report = status_json(engine_url)
    assert report["up_to_date"]
    assert [(m["version"], m["state"], m["baseline"]) for m in report["migrations"]] == [
        ("001", "applied", "adopted by db.baseline"),
        ("002", "applied", "adopted by db.baseline"),
        ("003", "applied", "adopted by db.baseline"),
    ] + [(version, "applied", None) for version in versions_after("003")]
    text = ok(run_invoke("db.status", url=engine_url)).stdout
    assert text.count("baseline: adopted by db.baseline") == 3


def test_a_baseline_at_an_earlier_version_leaves_the_later_migrations_to_db_migrate(
    engine_db, engine_url
):
    built_by_migrations_without_history(engine_db, version="001")

    ok(run_invoke("db.baseline", "001", url=engine_url))
    migrated = ok(run_invoke("db.migrate", url=engine_url)).stdout

    assert f"applied {len(versions_after('001'))} migrations" in migrated
    assert ok(run_invoke("db.check", url=engine_url)).stdout.strip() == (
        "in step with the models and migrations"
    )


def test_a_schema_that_differs_is_refused_with_each_difference_named_and_nothing_changed(
    engine_db, engine_url
):
    built_by_migrations_without_history(engine_db)
    drop_index(engine_db, "images", ["privacy"])
    engine_db.execute_sql("ALTER TABLE users ADD COLUMN karma INTEGER")
    drop_column_and_add(engine_db, "analytics", "unit", "INTEGER")
    before = tables(engine_db)

    result = run_invoke("db.baseline", "003", url=engine_url)

    line = one_error_line(result, 1, "not what the migrations up to 003 build", "nothing changed")
    assert "3 difference(s)" in line
    assert result.stdout.splitlines() == [
        "analytics.unit: text in the migrations up to 003, integer in the database",
        "index images(privacy) missing",
        "users.karma: column not in the migrations up to 003",
    ]
    assert tables(engine_db) == before  # no history table, nothing else
    if engine_of(engine_url) != "sqlite":
        assert not engine_for_url(engine_url).exists(scratch_url(engine_url))


def test_a_missing_trigger_and_a_loosened_column_are_differences_too(engine_db, engine_url):
    built_by_migrations_without_history(engine_db)
    drop_trigger = {
        "postgres": "DROP TRIGGER images_after_insert ON images",
    }.get(engine_of(engine_url), "DROP TRIGGER images_after_insert")
    engine_db.execute_sql(drop_trigger)
    drop_column_and_add(engine_db, "analytics", "unit", "TEXT NOT NULL DEFAULT 'x'")

    with pytest.raises(SchemaDiffers) as refused:
        target = Target.around(engine_db, engine_url)
        adopt(target, engine_db, MIGRATIONS_DIR, SEEDERS_DIR, "3")

    assert [d.detail for d in refused.value.differences] == [
        "analytics.unit: nullable in the migrations up to 003, NOT NULL in the database",
        "analytics.unit: no DEFAULT in the migrations up to 003, DEFAULT 'x' in the database",
        "trigger images_after_insert on images: missing",
    ]
    assert not History(engine_db).exists()


def engine_of(url):
    return engine_for_url(url).key


def scratch_url(url):
    """Where db.baseline builds its scratch database beside a server's ``url``."""
    return with_database(url, side_database_name(database_name_of(url), "baseline"))


def test_a_scratch_database_that_already_has_tables_is_refused_and_never_dropped(
    engine, engine_db, engine_url
):
    if engine == "sqlite":
        pytest.skip("SQLite's scratch database is a new temporary file")
    built_by_migrations_without_history(engine_db)
    someones = scratch_url(engine_url)
    engine_for_url(someones).create(someones)
    kept = open_database(someones)
    try:
        kept.execute_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY)")

        result = run_invoke("db.baseline", "003", url=engine_url)

        one_error_line(result, 2, "_baseline", "already exists and has tables", "drop it")
        assert kept.get_tables() == ["notes"]
        assert not History(engine_db).exists()
    finally:
        kept.close()
        engine_for_url(someones).drop(someones)


@pytest.mark.parametrize("length", [40, 54, 55, 62, 63, 64])
def test_a_side_database_name_is_never_the_live_one_cut_short(length):
    name = "g" * length

    side = side_database_name(name, "baseline")

    assert side != name and side.endswith("_baseline")
    assert len(side) <= 63
    assert side_database_name("h" + name[1:], "baseline") != side  # told apart when cut


# -- refusals, through the task ------------------------------------------------------------


def test_a_version_that_is_no_number_or_names_no_migration_is_refused_before_anything(
    engine_db, engine_url
):
    built_by_migrations_without_history(engine_db)

    not_a_number = run_invoke("db.baseline", "latest", url=engine_url)
    unknown = run_invoke("db.baseline", "9", url=engine_url)

    one_error_line(not_a_number, 2, "db.baseline latest", "a version is a number")
    one_error_line(unknown, 2, "db.baseline 9", f"known: {', '.join(PROJECT_VERSIONS)}")
    assert not History(engine_db).exists()


def test_a_database_that_does_not_exist_is_refused(engine, engine_url):
    result = run_invoke("db.baseline", "003", url=engine_url)

    one_error_line(result, 2, "does not exist yet", "nothing to adopt")
    assert not engine_for_url(engine_url).exists(engine_url)


def test_an_empty_database_is_refused_as_nothing_to_adopt(engine_db, engine_url):
    result = run_invoke("db.baseline", "003", url=engine_url)

    one_error_line(result, 1, "no tables of its own", "run invoke db.setup")
    assert tables(engine_db) == []


def test_a_database_this_toolkit_already_manages_is_refused(engine_db, engine_url):
    Runner(engine_db, MIGRATIONS_DIR).migrate(to="003")
    before = History(engine_db).applied()

    result = run_invoke("db.baseline", "003", url=engine_url)

    one_error_line(result, 1, "already has this toolkit's migration history", "db.migrate")
    assert History(engine_db).applied() == before


# -- a seed-era database -------------------------------------------------------------------


def test_a_seed_era_database_is_adopted_with_its_history_and_seeders_kept(
    engine, engine_db, engine_url
):
    build_seed_era(engine_db, engine)
    users = count(engine_db, "users")

    result = ok(run_invoke("db.baseline", "003", url=engine_url))

    assert "kept 3 migration row(s) (001, 002, 003) and 6 seeder row(s)" in result.stdout
    applied = History(engine_db).applied()
    assert [(v, row.name, row.baseline) for v, row in applied.items()] == [
        ("001", "001_initial_schema", "seed era: Initial schema"),
        ("002", "002_add_indexes", "seed era: Add indexes"),
        ("003", "003_add_triggers", "seed era: Add triggers"),
    ]
    assert {row.applied_at for row in applied.values()} == {SEED_ERA_TIME}
    seeded = SeederHistory(engine_db).applied()
    assert sorted(seeded) == [
        "001_users",
        "002_tags",
        "003_images",
        "004_image_tags",
        "005_albums",
        "006_analytics",
    ]
    assert {row.applied_at for row in seeded.values()} == {SEED_ERA_TIME}
    assert not [t for t in tables(engine_db) if t.endswith(("_seed_era", "_baseline_new"))]

    migrated = ok(run_invoke("db.migrate", url=engine_url)).stdout
    assert "applying 004_row_level_security" in migrated
    assert f"applied {len(versions_after('003'))} migrations" in migrated
    assert ok(run_invoke("db.seed", url=engine_url)).stdout.strip() == "nothing to seed"
    assert count(engine_db, "users") == users  # the sample users were not seeded again
    report = status_json(engine_url)
    assert report["up_to_date"]
    assert {s["state"] for s in report["seeders"]} == {"applied"}
    assert ok(run_invoke("db.check", url=engine_url)).stdout.strip() == (
        "in step with the models and migrations"
    )


def test_db_migrate_on_a_seed_era_database_points_at_db_baseline(engine, engine_db, engine_url):
    build_seed_era(engine_db, engine)

    refused = run_invoke("db.migrate", url=engine_url)

    one_error_line(refused, 1, "'migrations'", "invoke db.baseline VERSION adopts the database")
    assert count(engine_db, "migrations") == 3


def test_a_seed_era_history_beyond_the_version_or_without_a_file_is_refused(
    engine, engine_db, engine_url
):
    build_seed_era(engine_db, engine)
    engine_db.execute_sql(
        "INSERT INTO migrations (version, description) VALUES ('007', 'Add new feature table')"
    )

    at_two = run_invoke("db.baseline", "002", url=engine_url)

    line = one_error_line(at_two, 1, "003 is beyond 002", "007 has no migration file")
    assert "nothing changed" in line
    assert count(engine_db, "migrations") == 4  # the seed era's table, as it was
    assert "checksum" not in {c.name for c in engine_db.get_columns("migrations")}


def test_a_seed_era_seeder_without_a_counterpart_is_kept_under_its_own_name(
    engine, engine_db, engine_url
):
    build_seed_era(engine_db, engine)
    engine_db.execute_sql("INSERT INTO seeders (name) VALUES ('007_new_table_seeder.sql')")

    ok(run_invoke("db.baseline", "003", url=engine_url))

    report = status_json(engine_url)
    assert {"name": "007_new_table_seeder", "state": "missing"}.items() <= next(
        s for s in report["seeders"] if s["name"] == "007_new_table_seeder"
    ).items()


# -- MySQL, where each DDL statement commits at once ---------------------------------------


def test_a_mysql_conversion_killed_at_its_swap_is_finished_by_the_next_run(
    engine, engine_db, engine_url
):
    if engine != "mysql":
        pytest.skip("elsewhere the conversion is one transaction")
    build_seed_era(engine_db, engine)
    # Another session reads the seed era's history in a transaction: its metadata lock
    # holds db.baseline at the RENAME, after the staged tables were made and filled.
    blocker = open_database(engine_url)
    blocker.execute_sql("START TRANSACTION")
    blocker.execute_sql("SELECT COUNT(*) FROM migrations")
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT), "db.baseline", "3"],
        env=invoke_environment(engine_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        session = wait_for_statement(blocker, "RENAME TABLE")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        # The server would go on with the dead client's RENAME once the lock is free, and
        # notice the client gone only afterwards; end it now, as a server restart would.
        blocker.execute_sql(f"KILL {session}")
    finally:
        blocker.execute_sql("ROLLBACK")
        blocker.close()

    # Killed at the swap: the seed era's history in place and the new one staged; or, when
    # the server finished the dead client's RENAME before the KILL reached it (a loaded
    # machine), the new history in place and the seed era's aside. Never neither.
    swapped = "checksum" in {c.name for c in engine_db.get_columns("migrations")}
    staged = {"migrations_baseline_new", "seeders_baseline_new"} <= set(tables(engine_db))
    aside = {"migrations_seed_era", "seeders_seed_era"} <= set(tables(engine_db))
    assert (staged and not swapped) or (swapped and aside)

    ok(run_invoke("db.baseline", "3", url=engine_url))

    assert [row.baseline for row in History(engine_db).applied().values()] == [
        "seed era: Initial schema",
        "seed era: Add indexes",
        "seed era: Add triggers",
    ]
    assert not [t for t in tables(engine_db) if t.endswith(("_seed_era", "_baseline_new"))]


def test_a_mysql_conversion_killed_after_its_swap_is_finished_by_the_next_run(
    engine, engine_db, engine_url
):
    if engine != "mysql":
        pytest.skip("elsewhere the conversion is one transaction")
    build_seed_era(engine_db, engine)
    # What a kill between the swap and the drop leaves: the new history in place, the
    # seed era's tables aside.
    engine_db.execute_sql(
        "RENAME TABLE migrations TO migrations_seed_era, seeders TO seeders_seed_era"
    )
    SeederHistory(engine_db).ensure_table()
    history = History(engine_db)
    history.ensure_table()
    for migration in discover(MIGRATIONS_DIR)[:3]:
        history.record_baseline(migration, "seed era", SEED_ERA_TIME)

    result = ok(run_invoke("db.baseline", "3", url=engine_url))

    assert "finished an interrupted db.baseline" in result.stdout
    assert "migrations_seed_era" not in tables(engine_db)
    assert [m["state"] for m in status_json(engine_url)["migrations"]][:3] == ["applied"] * 3


def invoke_environment(url):
    import os

    environment = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    environment["DATABASE_URL"] = url
    return environment


def wait_for_statement(watcher, text, timeout=60):
    """Return the id of the session of the database that runs a statement containing
    ``text``, once one does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = watcher.execute_sql(
            "SELECT id, info FROM information_schema.processlist WHERE db = DATABASE()"
        ).fetchall()
        for session, info in rows:
            if info and text in info:
                return session
        time.sleep(0.05)
    raise AssertionError(f"no session ran {text!r} within {timeout} s")


# -- an account that may not create databases ----------------------------------------------


def test_an_account_that_may_not_create_the_scratch_database_is_told_in_one_line(
    engine, engine_url
):
    if engine != "postgres":
        pytest.skip("a PostgreSQL role without CREATEDB; SQLite needs none")
    role = f"cg_{uuid.uuid4().hex[:8]}"
    server = open_database(f"{servers.SERVERS['postgres']}/postgres", create=False)
    server.connection().autocommit = True
    name = database_name_of(engine_url)
    server.execute_sql(f"CREATE ROLE {role} LOGIN")
    server.execute_sql(f"CREATE DATABASE {name} OWNER {role}")
    as_role = engine_url.replace("postgres@", f"{role}@")
    scratch = scratch_url(engine_url)
    try:
        database = open_database(as_role, create=False)
        built_by_migrations_without_history(database)

        refused = run_invoke("db.baseline", "003", url=as_role)

        one_error_line(refused, 2, "_baseline", "may not create it", "create it empty by hand")
        assert not History(database).exists()
        server.execute_sql(f"CREATE DATABASE {database_name_of(scratch)} OWNER {role}")
        ok(run_invoke("db.baseline", "003", url=as_role))
        assert list(History(database).applied()) == ["001", "002", "003"]
        assert engine_for_url(scratch).exists(scratch)  # made by hand: emptied, kept
        database.close()
    finally:
        servers.drop_database(scratch)
        servers.drop_database(engine_url)
        server.execute_sql(f"DROP ROLE IF EXISTS {role}")
        server.close()
