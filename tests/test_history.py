"""The bookkeeping tables (db/history.py): what each records, replaces and forgets, judged
by the rows left in the database, on every engine."""

import datetime
import uuid

import pytest

from db.errors import HistoryTableError
from db.history import (
    DatabaseIdentity,
    History,
    IncompleteTransferInfo,
    SeederHistory,
    TransferMarker,
    application_tables,
)
from db.loader import NumberedFile


@pytest.fixture
def database(engine_db):
    """An empty database of the engine under test."""
    return engine_db


def numbered(tmp_path, name, text="-- migrate:up\n"):
    """Write ``NNN_words.sql`` into tmp_path; return it as a NumberedFile."""
    path = tmp_path / f"{name}.sql"
    path.write_text(text, encoding="utf-8")
    version, _, description = name.partition("_")
    return NumberedFile(path, version, description, "sql")


def utc_moments_around(action):
    """Run ``action``; return the naive UTC times just before and just after it."""
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    action()
    after = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    # Servers may keep whole seconds only.
    return before.replace(microsecond=0), after + datetime.timedelta(seconds=1)


def table_rows(database, table):
    return database.execute_sql(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


# --- the migrations table -----------------------------------------------------------------


def test_a_database_without_history_reports_nothing_applied_and_gains_no_table(database):
    history = History(database)

    assert history.applied() == {}
    assert history.failed() == []
    assert "migrations" not in database.get_tables()


def test_ensure_table_creates_the_table_once(database):
    history = History(database)

    history.ensure_table()
    history.ensure_table()

    assert history.exists()
    assert "migrations" in database.get_tables()
    assert history.applied() == {}


def test_a_recorded_migration_is_read_back_whole_in_utc(database, tmp_path):
    history = History(database)
    history.ensure_table()
    migration = numbered(tmp_path, "007_add_tags")

    before, after = utc_moments_around(lambda: history.record_applied(migration, duration_ms=42))

    row = history.applied()["007"]
    assert (row.version, row.name, row.checksum) == ("007", "007_add_tags", migration.checksum)
    assert row.duration_ms == 42
    assert row.error is None and not row.failed
    assert before <= row.applied_at <= after


def test_applied_migrations_come_oldest_first_by_number_not_by_text(database, tmp_path):
    history = History(database)
    history.ensure_table()
    for name in ("10_ten", "9_nine", "002_two"):
        history.record_applied(numbered(tmp_path, name), duration_ms=1)

    assert list(history.applied()) == ["002", "9", "10"]


def test_recording_a_version_again_replaces_its_row(database, tmp_path):
    history = History(database)
    history.ensure_table()
    history.record_applied(numbered(tmp_path, "001_first"), duration_ms=5, error="boom")

    history.record_applied(numbered(tmp_path, "001_first", "-- changed\n"), duration_ms=9)

    assert table_rows(database, "migrations") == 1
    row = history.applied()["001"]
    assert (row.duration_ms, row.error) == (9, None)


def test_failed_lists_only_the_runs_recorded_with_an_error(database, tmp_path):
    history = History(database)
    history.ensure_table()
    history.record_applied(numbered(tmp_path, "001_fine"), duration_ms=1)
    history.record_applied(numbered(tmp_path, "002_broken"), duration_ms=1, error="no such table")

    failed = history.failed()

    assert [(row.version, row.error) for row in failed] == [("002", "no such table")]
    assert history.applied()["002"].failed


def test_record_unapplied_removes_that_version_only(database, tmp_path):
    history = History(database)
    history.ensure_table()
    for name in ("001_a", "002_b", "003_c"):
        history.record_applied(numbered(tmp_path, name), duration_ms=1)

    history.record_unapplied("002")

    assert list(history.applied()) == ["001", "003"]


def test_drop_table_removes_the_table_and_is_safe_twice(database):
    history = History(database)
    history.ensure_table()

    history.drop_table()
    history.drop_table()

    assert "migrations" not in database.get_tables()


# --- the seeders table --------------------------------------------------------------------


def test_a_seeder_run_again_is_recorded_once_in_its_new_version(database, tmp_path):
    seeded = SeederHistory(database)
    seeded.ensure_table()
    seeded.record(numbered(tmp_path, "001_users", "-- one\n"))
    changed = numbered(tmp_path, "001_users", "-- two\n")

    before, after = utc_moments_around(lambda: seeded.record(changed))

    assert list(seeded.applied()) == ["001_users"]
    row = seeded.applied()["001_users"]
    assert row.checksum == changed.checksum
    assert before <= row.applied_at <= after
    assert table_rows(database, "seeders") == 1


def test_clearing_the_seeders_keeps_the_table_empty_and_makes_none_where_there_was_none(
    database, tmp_path
):
    seeded = SeederHistory(database)
    seeded.clear()
    assert "seeders" not in database.get_tables()

    seeded.ensure_table()
    seeded.record(numbered(tmp_path, "001_users"))
    seeded.record(numbered(tmp_path, "002_images"))
    seeded.clear()

    assert "seeders" in database.get_tables()
    assert seeded.applied() == {}


# --- the transfer marker ------------------------------------------------------------------


def test_an_unmarked_database_is_no_transfer_target(database):
    assert TransferMarker(database).read() is None


def test_a_marked_database_names_its_source_until_the_mark_is_cleared(database):
    marker = TransferMarker(database)

    before, after = utc_moments_around(lambda: marker.mark("sqlite:///source.db"))

    info = marker.read()
    assert info.source == "sqlite:///source.db"
    assert before <= info.started_at <= after
    marker.clear()
    assert marker.read() is None
    assert "transfer_incomplete" not in database.get_tables()


def test_a_marker_table_without_its_row_still_marks_the_database(database):
    marker = TransferMarker(database)
    marker.ensure_table()

    assert marker.read() == IncompleteTransferInfo("an unknown source", None)


# --- the database's id --------------------------------------------------------------------


def test_a_database_gets_one_random_id_for_good(database):
    identity = DatabaseIdentity(database)
    assert identity.read() is None

    given = identity.ensure()

    assert uuid.UUID(given).version == 4 and len(given) == 36
    assert identity.ensure() == given
    assert DatabaseIdentity(database).read() == given
    assert table_rows(database, "database_identity") == 1


def test_an_empty_identity_table_is_no_id_and_ensure_fills_it(database):
    identity = DatabaseIdentity(database)
    identity.ensure_table()
    assert identity.read() is None

    given = identity.ensure()

    assert identity.read() == given is not None
    assert table_rows(database, "database_identity") == 1


def test_writing_an_id_replaces_the_old_one_and_writing_it_again_changes_nothing(database):
    identity = DatabaseIdentity(database)
    identity.ensure()
    replaced = "f3c1e2a4-0000-4000-8000-000000000001"

    identity.write(replaced)
    created = identity.rows()[0].created_at
    identity.write(replaced)

    assert identity.read() == replaced
    assert [(row.id, row.created_at) for row in identity.rows()] == [(replaced, created)]


def test_writing_an_id_gives_one_to_a_database_without(database):
    identity = DatabaseIdentity(database)

    identity.write("f3c1e2a4-0000-4000-8000-000000000002")

    assert identity.read() == "f3c1e2a4-0000-4000-8000-000000000002"


# --- what is the application's ------------------------------------------------------------


def test_application_tables_leave_out_the_bookkeeping_tables(database):
    History(database).ensure_table()
    SeederHistory(database).ensure_table()
    TransferMarker(database).ensure_table()
    DatabaseIdentity(database).ensure()
    for table in ("zebra", "apple"):
        database.execute_sql(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")

    assert application_tables(database) == ["apple", "zebra"]


# --- the tables as created ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "columns"),
    [
        (
            History,
            [
                ("version", "VARCHAR(32)", 1, 1),
                ("name", "VARCHAR(255)", 1, 0),
                ("checksum", "VARCHAR(64)", 1, 0),
                ("applied_at", "DATETIME", 1, 0),
                ("duration_ms", "INTEGER", 1, 0),
                ("error", "TEXT", 0, 0),
                ("baseline", "TEXT", 0, 0),  # added by ensure_table where it lacks
            ],
        ),
        (
            SeederHistory,
            [
                ("name", "VARCHAR(255)", 1, 1),
                ("checksum", "VARCHAR(64)", 1, 0),
                ("applied_at", "DATETIME", 1, 0),
            ],
        ),
        (
            TransferMarker,
            [("id", "INTEGER", 1, 1), ("source", "TEXT", 1, 0), ("started_at", "DATETIME", 1, 0)],
        ),
        (DatabaseIdentity, [("id", "VARCHAR(36)", 1, 1), ("created_at", "DATETIME", 1, 0)]),
    ],
    ids=["migrations", "seeders", "transfer_incomplete", "database_identity"],
)
def test_the_bookkeeping_tables_keep_the_columns_existing_databases_have(fresh_db, table, columns):
    # Every database made so far has these: a width or key changed here would differ from
    # them without a migration to match.
    bookkeeping = table(fresh_db)
    bookkeeping.ensure_table()

    found = fresh_db.execute_sql(f"PRAGMA table_info({bookkeeping.table_name})").fetchall()

    assert [(name, kind, not_null, key) for _, name, kind, not_null, _, key in found] == columns


def test_a_foreign_table_is_refused_saying_what_it_lacks_and_what_to_do(database):
    database.execute_sql("CREATE TABLE seeders (name VARCHAR(255), note TEXT)")

    with pytest.raises(HistoryTableError) as refused:
        SeederHistory(database).applied()

    assert str(refused.value) == (
        "the database already has a table named 'seeders' that is not this toolkit's "
        "history (it lacks applied_at, checksum); rename or drop it, then run db.setup"
    )


def test_recording_seeders_keeps_each_by_its_name(database, tmp_path):
    seeded = SeederHistory(database)
    seeded.ensure_table()

    for name in ("001_users", "002_images"):
        seeded.record(numbered(tmp_path, name))

    assert {name: row.name for name, row in seeded.applied().items()} == {
        "001_users": "001_users",
        "002_images": "002_images",
    }


def test_times_are_recorded_in_utc_whatever_the_machines_zone(database, tmp_path, new_york_time):
    history = History(database)
    history.ensure_table()

    before, after = utc_moments_around(
        lambda: history.record_applied(numbered(tmp_path, "001_a"), duration_ms=1)
    )

    assert before <= history.applied()["001"].applied_at <= after
