"""db.schema: the complete current schema of the database, as SQL for its engine.

The SQL of a migrated database, loaded into an empty database of the same engine with
that engine's own client (the driver's ``executescript`` for SQLite), gives the same
tables, columns, indexes, foreign keys and triggers. Each test runs on every engine of
the ``engine`` fixtures (conftest.py): real servers, real client tools, ``invoke`` as a
subprocess.

The SQL is the same, byte for byte, every time the same schema is dumped: whatever rows
the tables hold, whichever database was migrated alike, with no random key, version or
date in it. So a committed schema file can be compared with the live database
(``compare_with_file``, ``db.schema --check FILE``).
"""

import os
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest

from db.clients import url_parts
from db.engines import database_exists, open_database
from db.engines.sqlite import sqlite_path
from db.errors import ConfigError
from db.runner import Runner
from db.schema_dump import (
    SCHEMA_FILE_LIMIT,
    compare_with_file,
    dependency_order,
    schema_diff,
    schema_sql,
    write_schema,
)
from db.target import Target
from tests.conftest import MIGRATIONS_DIR, one_error_line, run_invoke
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


def created_tables(engine, database):
    """Return the tables a schema creates: on SQLite, not FTS5's shadow tables, which its
    CREATE VIRTUAL TABLE makes."""
    tables = database.get_tables()
    if engine != "sqlite":
        return tables
    rows = database.execute_sql("SELECT name FROM pragma_table_list WHERE type = 'shadow'")
    shadows = {name for (name,) in rows}
    assert shadows, "005's FTS5 table has its shadow tables"
    return [table for table in tables if table not in shadows]


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
    assert "CREATE TABLE" in result.stdout
    for table in created_tables(engine, engine_migrated_db):
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


# --- Deterministic: the same schema gives the same bytes --------------------------------


def add_tags(database, *names):
    """Insert tags: rows that move a table's next id (MySQL's AUTO_INCREMENT=N)."""
    for name in names:
        database.execute_sql(f"INSERT INTO tags (name) VALUES ({database.param})", (name,))


def changed_lines(diff, sign, word):
    """Return the lines of a unified diff that start with ``sign`` ("+" added, "-" removed)
    and contain ``word``."""
    return [line for line in diff.splitlines() if line.startswith(sign) and word in line]


def dump_to(url, path):
    """Write the schema of ``url`` to ``path`` with ``invoke db.schema --output``; return
    its bytes."""
    result = run_invoke("db.schema", "--output", str(path), url=url)
    assert result.returncode == 0, result.stderr
    return path.read_bytes()


def test_two_dumps_are_byte_identical_even_after_rows_are_added(
    engine, engine_migrated_db, engine_url, tmp_path
):
    first = dump_to(engine_url, tmp_path / "first.sql")
    add_tags(engine_migrated_db, "sunset", "harbour", "fog")

    second = dump_to(engine_url, tmp_path / "second.sql")

    assert second == first
    assert b"CREATE TABLE" in first


def test_two_databases_migrated_alike_dump_the_same_schema(
    engine, engine_migrated_db, engine_url, other_engine_url
):
    other = open_database(other_engine_url)
    try:
        Runner(other, MIGRATIONS_DIR).migrate()
        add_tags(other, "only-in-the-other")

        assert schema_sql(Target.around(other, other_engine_url)) == schema_sql(
            Target.around(engine_migrated_db, engine_url)
        )
    finally:
        other.close()


def test_on_postgresql_no_restrict_line_and_no_version_comment_is_written(
    engine, engine_migrated_db, engine_url
):
    if engine != "postgres":
        pytest.skip("pg_dump's restrict key and version comments")

    sql = schema_sql(Target.around(engine_migrated_db, engine_url))

    lines = sql.splitlines()
    assert not [line for line in lines if re.match(r"\\(un)?restrict\b", line)]
    assert not [line for line in lines if line.startswith("-- Dumped ")]
    assert lines[:4] == ["--", "-- PostgreSQL database dump", "--", ""]
    assert sql.endswith("--\n-- PostgreSQL database dump complete\n--\n\n")


def test_on_mysql_no_table_keeps_its_next_id_and_no_trigger_its_definer(
    engine, engine_migrated_db, engine_url
):
    if engine != "mysql":
        pytest.skip("SHOW CREATE TABLE's AUTO_INCREMENT=N and a trigger's DEFINER are MySQL's")
    add_tags(engine_migrated_db, "sunset", "harbour")

    sql = schema_sql(Target.around(engine_migrated_db, engine_url))

    assert "AUTO_INCREMENT=" not in sql
    assert "`id` int(11) NOT NULL AUTO_INCREMENT," in sql  # the column keeps its own
    assert "DEFINER" not in sql
    assert "/*!50003 CREATE*/ /*!50003 TRIGGER image_tags_after_insert AFTER INSERT" in sql


def old_pg_dump(folder):
    """Write a ``pg_dump`` into ``folder`` that behaves as one released before the
    --restrict-key option: it refuses the option, leaves it out of --help and writes no
    restrict lines (the real pg_dump underneath does the dumping)."""
    real = shutil.which("pg_dump")
    script = folder / "pg_dump"
    script.write_text(
        f"""#!{sys.executable}
import re, subprocess, sys
args = sys.argv[1:]
if any(arg.startswith("--restrict-key") for arg in args):
    sys.exit("pg_dump: error: unrecognized option '--restrict-key'")
done = subprocess.run([{real!r}, *args], capture_output=True, text=True)
out = done.stdout
if "--help" in args:
    out = "".join(line for line in out.splitlines(True) if "--restrict-key" not in line)
else:
    out = re.sub(r"^\\\\(un)?restrict \\w+\\n\\n", "", out, flags=re.MULTILINE)
sys.stdout.write(out)
sys.stderr.write(done.stderr)
sys.exit(done.returncode)
""",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return script


def test_a_pg_dump_without_the_restrict_key_option_writes_the_same_schema(
    engine, engine_migrated_db, engine_url, tmp_path, monkeypatch
):
    if engine != "postgres":
        pytest.skip("pg_dump's --restrict-key option")
    current = schema_sql(Target.around(engine_migrated_db, engine_url))
    old = old_pg_dump(tmp_path)
    monkeypatch.setenv("PATH", f"{old.parent}{os.pathsep}{os.environ['PATH']}")
    assert shutil.which("pg_dump") == str(old)

    assert schema_sql(Target.around(engine_migrated_db, engine_url)) == current


# --- compare_with_file: a committed schema against the live database ---------------------


def test_a_dump_compared_with_its_own_database_is_in_step(
    engine, engine_migrated_db, engine_url, tmp_path
):
    committed = tmp_path / "schema.sql"
    dump_to(engine_url, committed)
    add_tags(engine_migrated_db, "sunset")

    assert compare_with_file(Target.around(engine_migrated_db, engine_url), committed) == ""


def test_an_added_column_and_index_show_in_the_diff_and_the_file_is_left_alone(
    engine, engine_migrated_db, engine_url, tmp_path
):
    committed = tmp_path / "schema.sql"
    before = dump_to(engine_url, committed)
    engine_migrated_db.execute_sql("ALTER TABLE tags ADD COLUMN colour VARCHAR(20)")
    engine_migrated_db.execute_sql("CREATE INDEX tags_colour ON tags (colour)")

    diff = compare_with_file(Target.around(engine_migrated_db, engine_url), committed)

    assert diff.startswith(f"--- {committed}\n+++ live database\n@@ "), diff
    added = changed_lines(diff, "+", "colour")
    assert any("tags_colour" in line for line in added), diff
    assert any("tags_colour" not in line for line in added), diff  # the column itself
    assert committed.read_bytes() == before


def test_a_dropped_index_shows_as_removed_lines(engine, engine_migrated_db, engine_url, tmp_path):
    committed = tmp_path / "schema.sql"
    dump_to(engine_url, committed)
    drop = "DROP INDEX tags_trending" + (" ON tags" if engine == "mysql" else "")
    engine_migrated_db.execute_sql(drop)

    diff = compare_with_file(Target.around(engine_migrated_db, engine_url), committed)

    assert changed_lines(diff, "-", "tags_trending"), diff
    assert not changed_lines(diff, "+", "tags_trending"), diff


def test_a_missing_schema_file_is_refused_naming_it_and_how_to_write_it(
    migrated_db, db_url, tmp_path
):
    missing = tmp_path / "schema.sql"

    with pytest.raises(ConfigError) as refused:
        compare_with_file(Target.around(migrated_db, db_url), missing)

    assert str(missing) in str(refused.value)
    assert "does not exist" in str(refused.value)
    assert f"db.schema --output {missing}" in str(refused.value)
    assert not missing.exists()


@pytest.mark.parametrize("kind", ["folder", "not UTF-8", "FIFO", "larger than any schema"])
def test_an_unreadable_schema_file_is_refused_naming_it(migrated_db, db_url, tmp_path, kind):
    # A FIFO (or /dev/zero) would block or never end; a huge file's diff would run for hours.
    path = tmp_path / "schema.sql"
    if kind == "folder":
        path.mkdir()
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "larger than any schema":
        with open(path, "wb") as big:
            big.truncate(SCHEMA_FILE_LIMIT + 1)
    else:
        path.write_bytes(b"CREATE TABLE caf\xe9 (id INTEGER);\n")

    with pytest.raises(ConfigError, match=re.escape(f"cannot read the schema file {path}: ")):
        compare_with_file(Target.around(migrated_db, db_url), path)


def test_the_diff_is_empty_only_for_the_same_text_and_marks_a_missing_last_newline():
    assert schema_diff("CREATE TABLE t (a INT);\n", "CREATE TABLE t (a INT);\n", "f") == ""

    diff = schema_diff("CREATE TABLE t (a INT);\n", "CREATE TABLE t (a INT);", "schema.sql")

    assert diff == (
        "--- schema.sql\n+++ live database\n@@ -1 +1 @@\n"
        "-CREATE TABLE t (a INT);\n"
        "+CREATE TABLE t (a INT);\n\\ No newline at end of file\n"
    )


def test_only_a_newline_ends_a_line_of_the_diff():
    diff = schema_diff("COMMENT 'a\u2028b';\n", "COMMENT 'a\u2028c';\n", "schema.sql")

    assert diff.endswith("@@ -1 +1 @@\n-COMMENT 'a\u2028b';\n+COMMENT 'a\u2028c';\n"), diff
    assert "No newline" not in diff


def test_a_file_written_by_write_schema_is_in_step(migrated_db, db_url, tmp_path):
    path = write_schema(schema_sql(Target.around(migrated_db, db_url)), tmp_path / "schema.sql")

    assert compare_with_file(Target.around(migrated_db, db_url), path) == ""
    migrated_db.execute_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    assert "+CREATE TABLE notes (id INTEGER PRIMARY KEY);" in compare_with_file(
        Target.around(migrated_db, db_url), path
    )


# --- invoke db.schema --check FILE (the task wiring is in tasks.py / db/commands.py) -----


def test_check_against_a_fresh_dump_exits_0_with_one_line(
    engine, engine_migrated_db, engine_url, tmp_path
):
    committed = tmp_path / "schema.sql"
    dump_to(engine_url, committed)
    add_tags(engine_migrated_db, "sunset")

    result = run_invoke("db.schema", "--check", str(committed), url=engine_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"schema in step with {committed}\n"


def test_check_against_a_changed_schema_exits_3_with_the_diff_and_leaves_the_file(
    engine, engine_migrated_db, engine_url, tmp_path
):
    committed = tmp_path / "schema.sql"
    before = dump_to(engine_url, committed)
    engine_migrated_db.execute_sql("ALTER TABLE tags ADD COLUMN colour VARCHAR(20)")

    result = run_invoke("db.schema", "--check", str(committed), url=engine_url)

    assert result.returncode == 3, (result.stdout, result.stderr)
    assert f"--- {committed}\n+++ live database\n" in result.stdout
    assert changed_lines(result.stdout, "+", "colour"), result.stdout
    assert "Traceback" not in result.stderr
    assert committed.read_bytes() == before


def test_check_against_a_missing_file_exits_2_naming_it(migrated_db, db_url, tmp_path):
    missing = tmp_path / "schema.sql"

    result = run_invoke("db.schema", "--check", str(missing), url=db_url)

    one_error_line(result, 2, str(missing), "does not exist")
    assert not missing.exists()
