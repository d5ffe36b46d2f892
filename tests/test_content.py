"""db.content: tables read in primary-key order in batches, and checksums engines agree on."""

import datetime
import decimal

import pytest

from db.content import (
    TableDigest,
    datetime_text,
    normalised,
    primary_key,
    read_batches,
    table_checksum,
)
from db.engines import open_database
from db.populate import GalleryPlan, populate
from db.runner import Runner
from tests.conftest import MIGRATIONS_DIR, sqlite_url

PLAN = GalleryPlan(users=10, images=60, seed=4)
GALLERY_TABLES = ("users", "tags", "images", "image_tags", "albums", "album_images")


@pytest.fixture
def populated(engine_migrated_db):
    """A database of the engine under test holding PLAN's gallery."""
    populate(engine_migrated_db, PLAN)
    return engine_migrated_db


@pytest.mark.parametrize("size", [1, 7, 10_000])
@pytest.mark.parametrize("table", ["users", "image_tags"], ids=["one-column-key", "two-column-key"])
def test_batches_hold_every_row_once_in_key_order(populated, table, size):
    columns = [column.name for column in populated.get_columns(table)]
    key = primary_key(populated, table)
    order = ", ".join(key)

    batches = list(read_batches(populated, table, columns, key, size))

    assert all(0 < len(batch) <= size for batch in batches)
    every_row = populated.execute_sql(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
    assert [row for batch in batches for row in batch] == list(every_row.fetchall())


def test_the_same_rows_give_the_same_checksums_on_every_engine(populated, tmp_path):
    reference = open_database(sqlite_url(tmp_path / "reference.db"))
    Runner(reference, MIGRATIONS_DIR).migrate()
    populate(reference, PLAN)

    for table in GALLERY_TABLES:
        assert table_checksum(populated, table, size=13) == table_checksum(reference, table), table
    reference.close()


def test_a_changed_value_changes_the_checksum_of_its_table_only(populated):
    before = {table: table_checksum(populated, table) for table in GALLERY_TABLES}

    populated.execute_sql("UPDATE tags SET trending = NOT trending WHERE id = 1")

    after = {table: table_checksum(populated, table) for table in GALLERY_TABLES}
    assert [table for table in GALLERY_TABLES if after[table] != before[table]] == ["tags"]
    assert after["tags"].rows == before["tags"].rows


def test_the_order_rows_come_in_does_not_change_the_digest():
    rows = [(1, "a", None), (2, "b", 2.5), (3, "c", 0)]
    in_order, reversed_in_two_batches = TableDigest(), TableDigest()

    in_order.add(rows)
    reversed_in_two_batches.add(rows[:0:-1])
    reversed_in_two_batches.add(rows[:1])

    assert in_order.result() == reversed_in_two_batches.result()


def test_a_row_twice_is_not_the_same_as_once():
    once, twice = TableDigest(), TableDigest()

    once.add([(1, "a"), (2, "b")])
    twice.add([(1, "a"), (2, "b"), (2, "b")])

    assert once.result().digest != twice.result().digest


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (True, 1),
        (decimal.Decimal("2.5"), 2.5),
        (memoryview(b"\x00\x01"), b"\x00\x01"),
        (datetime.date(2024, 5, 1), "2024-05-01"),
    ],
    ids=["bool", "decimal", "memoryview", "date"],
)
def test_values_are_normalised_whatever_the_driver_returns(one, other):
    assert normalised(one) == normalised(other)


def test_date_times_compare_as_text_and_to_the_second_when_asked():
    as_text = "2024-05-01 10:00:00.654321"  # as SQLite keeps it
    as_object = datetime.datetime(2024, 5, 1, 10, 0, 0, 654321)  # as psycopg returns it

    assert datetime_text(as_text) == datetime_text(as_object) == as_text
    assert datetime_text(as_text, whole_seconds=True) == "2024-05-01 10:00:00"
    assert datetime_text(as_object.replace(microsecond=0)) == "2024-05-01 10:00:00"
    assert datetime_text("not a date") == "not a date"
