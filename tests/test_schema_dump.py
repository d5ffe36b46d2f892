"""db.schema: the complete current schema of the database, as SQL for its engine.

The SQL of a migrated database, loaded into an empty database of the same engine with
that engine's own client (the driver's ``executescript`` for SQLite), gives the same
tables, columns, indexes, foreign keys and triggers. Each test runs on every engine of
the ``engine`` fixtures (conftest.py): real servers, real client tools, ``invoke`` as a
subprocess.
"""

import re
import sqlite3
import subprocess

import pytest

from db.clients import url_parts
from db.engines import database_exists, open_database
from db.engines.sqlite import sqlite_path
from db.schema_dump import dependency_order
from tests.conftest import one_error_line, run_invoke
from tests.snapshots import connected, schema

TRIGGER_NAMES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
    "postgres": "SELECT DISTINCT trigger_name FROM information_schema.triggers "
    "WHERE trigger_schema = current_schema()",
    "mysql": "SELECT trigger_name FROM information_schema.triggers "
    "WHERE trigger_schema = DATABASE()",
}


def trigger_names(engine, url):
    """Return the sorted names of the triggers of the database of ``url``."""
    with connected(url) as database:
        return sorted(name for (name,) in database.execute_sql(TRIGGER_NAMES[engine]))


def load_schema(engine, url, path):
    """Load a schema file into the (empty) database of ``url`` with the engine's client."""
    open_database(url).close()  # created empty, as a new server database would be
    if engine == "sqlite":
        with sqlite3.connect(sqlite_path(url)) as connection:
            connection.executescript(path.read_text(encoding="utf-8"))
        return
    host, port, user, _, name = url_parts(url)
    if engine == "postgres":
        command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(path)]
    else:
        command = ["mariadb", f"--host={host}", f"--port={port}", f"--user={user}", name]
    with open(path, "rb") as sql:
        subprocess.run(command, stdin=sql, check=True, capture_output=True)


def test_the_schema_loaded_into_an_empty_database_gives_the_same_schema(
    engine, engine_migrated_db, engine_url, other_engine_url, tmp_path
):
    output = tmp_path / "schema.sql"

    result = run_invoke("db.schema", "--output", str(output), url=engine_url)

    assert result.returncode == 0, result.stderr
    tables = len(engine_migrated_db.get_tables())
    assert result.stdout.startswith(f"schema of {tables} tables written to {output}"), result.stdout
    load_schema(engine, other_engine_url, output)
    assert schema(other_engine_url) == schema(engine_url)
    triggers = trigger_names(engine, engine_url)
    assert len(triggers) >= 6
    assert trigger_names(engine, other_engine_url) == triggers


def test_without_output_the_sql_is_printed_with_every_table_and_trigger(
    engine, engine_migrated_db, engine_url
):
    result = run_invoke("db.schema", url=engine_url)

    assert result.returncode == 0, result.stderr
    for table in engine_migrated_db.get_tables():
        assert "CREATE TABLE" in result.stdout
        assert table in result.stdout
    for trigger in trigger_names(engine, engine_url):
        assert trigger in result.stdout


def test_on_postgresql_the_trigger_functions_come_along(engine, engine_migrated_db, engine_url):
    if engine != "postgres":
        pytest.skip("only PostgreSQL keeps a trigger's body in a function of its own")

    result = run_invoke("db.schema", url=engine_url)

    assert result.returncode == 0, result.stderr
    assert "RETURNS trigger" in result.stdout
    assert "LANGUAGE plpgsql" in result.stdout


def test_sqlite_tables_come_after_the_tables_they_reference(migrated_db, db_url):
    result = run_invoke("db.schema", url=db_url)

    created = re.findall(r'^CREATE TABLE "(\w+)"', result.stdout, flags=re.MULTILINE)
    assert created.index("users") < created.index("images") < created.index("album_images")


def test_dependency_order_puts_referenced_tables_first_and_survives_a_cycle():
    assert dependency_order({"b": {"a"}, "a": set(), "c": {"b", "c"}}) == ["a", "b", "c"]
    assert dependency_order({"x": {"y"}, "y": {"x"}}) == ["x", "y"]


def test_a_missing_output_folder_is_refused_with_one_line(migrated_db, db_url, tmp_path):
    missing = tmp_path / "nowhere" / "schema.sql"

    result = run_invoke("db.schema", "--output", str(missing), url=db_url)

    one_error_line(result, 2, str(missing), "does not exist")
    assert not missing.parent.exists()


def test_a_database_that_does_not_exist_yet_is_refused_and_not_created(engine, engine_url):
    result = run_invoke("db.schema", url=engine_url)

    one_error_line(result, 2, "does not exist yet", "db.setup")
    assert not database_exists(engine_url)


def test_a_database_not_fully_migrated_is_refused(engine, engine_db, engine_url):
    result = run_invoke("db.schema", url=engine_url)

    one_error_line(result, 1, "not fully migrated", "db.migrate")
