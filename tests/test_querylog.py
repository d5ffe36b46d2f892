"""The SQLite query recorder behind ``db.top`` (db.querylog): off unless the app turns it
on, bounded, flushed to a file beside the database that several processes add to."""

import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pytest

from db.engines import open_database
from db.errors import ConfigError
from db.querylog import OTHERS, normalise, read_file, record_queries, stats_path
from tests.conftest import PROJECT_ROOT, sqlite_url

MARKER = "top_marker"


def test_a_statement_is_normalised_to_one_line_without_its_literals():
    sql = "SELECT * FROM t  -- why\n WHERE a = 'it''s' AND b IN (1, 2,3)\n AND c = ?"

    assert normalise(sql) == "SELECT * FROM t WHERE a = ? AND b IN (?, ...) AND c = ?"
    assert normalise('INSERT INTO "t" ("a") VALUES (?, ?), (?, ?)') == (
        'INSERT INTO "t" ("a") VALUES (?, ...), ...'
    )


@pytest.fixture
def marks_db(tmp_path):
    """An SQLite database with a table ``marks``; returns its path."""
    path = tmp_path / "clonegallery.db"
    database = open_database(sqlite_url(path))
    database.execute_sql("CREATE TABLE marks (name VARCHAR(20))")
    database.close()
    return path


def tables_of(path):
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()


def test_the_recorder_adds_no_table_to_the_app_database(marks_db):
    before = tables_of(marks_db)

    database = open_database(sqlite_url(marks_db), create=False)
    recorder = record_queries(database)
    for n in range(20):
        database.execute_sql(f"SELECT {n} AS {MARKER} FROM marks")
    recorder.close()
    database.close()

    assert tables_of(marks_db) == before
    assert stats_path(marks_db).exists()


def test_the_recorder_keeps_a_bounded_number_of_statements_the_rest_as_others(marks_db):
    database = open_database(sqlite_url(marks_db), create=False)
    recorder = record_queries(database, limit=10)
    for n in range(25):  # 25 distinct statements, each run twice
        for _ in range(2):
            database.execute_sql(f"SELECT name AS c{n} FROM marks")
        assert recorder.statements() <= 10
    recorder.close()
    database.close()

    recorded = read_file(stats_path(marks_db), 100)
    assert len(recorded) == 10
    assert sum(r.calls for r in recorded) == 50
    (others,) = [r for r in recorded if r.statement == OTHERS]
    assert others.calls == 2 * (25 - 9)


def test_the_recorder_flushes_every_few_seconds_without_being_closed(marks_db):
    database = open_database(sqlite_url(marks_db), create=False)
    recorder = record_queries(database, flush_every=0.1)
    for n in range(7):
        database.execute_sql(f"SELECT {n} AS {MARKER} FROM marks")
    try:
        deadline = time.monotonic() + 10
        while not (stats_path(marks_db).exists() and read_file(stats_path(marks_db), 10)):
            assert time.monotonic() < deadline, "no flush within 10 s"
            time.sleep(0.05)
        (recorded,) = read_file(stats_path(marks_db), 10)
        assert recorded.calls == 7
    finally:
        recorder.close()
        database.close()


APP = """
import sys
from db.engines import open_database
from db.errors import ConfigError
from db.querylog import record_queries
database = open_database(sys.argv[1], create=False)
record_queries(database, flush_every=0.05)
for n in range(300):
    database.execute_sql(f"SELECT COUNT(*) AS top_marker FROM marks WHERE name = 'p{n}'")
"""  # no close(): the recorder flushes at the interpreter's exit


def test_two_app_processes_flushing_to_the_same_file_add_up(marks_db):
    apps = [
        subprocess.Popen([sys.executable, "-c", APP, sqlite_url(marks_db)], cwd=PROJECT_ROOT)
        for _ in range(2)
    ]
    assert [app.wait(timeout=60) for app in apps] == [0, 0]

    (recorded,) = read_file(stats_path(marks_db), 10)
    assert recorded.calls == 600
    assert recorded.statement == f"SELECT COUNT(*) AS {MARKER} FROM marks WHERE name = ?"


def test_a_database_that_records_nothing_has_no_file(marks_db):
    database = open_database(sqlite_url(marks_db), create=False)
    for n in range(10):
        database.execute_sql(f"SELECT {n} AS {MARKER} FROM marks")
    database.close()

    assert not stats_path(marks_db).exists()


def test_a_closed_recorder_counts_no_more_and_gives_execute_sql_back(marks_db):
    database = open_database(sqlite_url(marks_db), create=False)
    recorder = record_queries(database)
    database.execute_sql(f"SELECT 1 AS {MARKER} FROM marks")
    recorder.close()

    database.execute_sql(f"SELECT 2 AS {MARKER} FROM marks")
    database.close()

    (recorded,) = read_file(stats_path(marks_db), 10)
    assert recorded.calls == 1
    assert "execute_sql" not in vars(database)


def test_a_file_a_recorder_has_just_created_reads_as_no_statements_yet(tmp_path):
    # The recorder's connection creates the file a moment before its table: a reader
    # in between (db.top) sees an empty database, not someone else's file.
    being_created = tmp_path / "gallery.db-querystats"
    being_created.touch()
    someone_elses = tmp_path / "other.db"
    with closing(sqlite3.connect(someone_elses)) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")

    assert read_file(being_created, 10) == []
    with pytest.raises(ConfigError, match="is not the query recorder's file"):
        read_file(someone_elses, 10)
