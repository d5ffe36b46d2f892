"""What a table holds, read in batches and summed up so that engines can be compared.

    key = primary_key(database, "images")                  # ["id"]
    for rows in read_batches(database, "images", ["id", "title"], key, size=5000):
        ...                                                # lists of row tuples, key order
    table_checksum(database, "images")                     # TableChecksum(rows, digest)
    normalised(value)                                      # one form, whatever the driver

Rows are read by keyset pagination: each batch starts after the key of the last row of
the one before (``WHERE key > last ORDER BY key LIMIT n``), so a table of any size is
read in flat memory, and each batch is a range scan of the primary key's index however
deep into the table it starts.

A checksum gives the same digest for the same rows on SQLite, PostgreSQL and MySQL:

- values are normalised first, as the drivers return the same data as different types:
  date-times as ISO text (SQLite keeps text), Decimals as floats, booleans as 0/1
  (MySQL's BOOL is a TINYINT), memoryviews as bytes; with ``whole_seconds``, date-times
  are cut to the second (MySQL's DATETIME keeps no fraction of a second);
- each row is hashed with SHA-256 and the row hashes are added up (modulo 2**256), so
  the digest does not depend on the order the rows come in: each engine orders text keys
  by its own collation (PostgreSQL's en_US puts "a-b" after "ab"; SQLite and MySQL's
  binary ones put it before).
"""

import datetime
import decimal
import functools
import hashlib
from typing import NamedTuple

from db.engines.base import quoted
from db.errors import ConfigError

DEFAULT_BATCH = 5_000
# Column types whose values every driver returns alike (str, int): left as they are.
PLAIN_TYPES = ("char", "text", "int")
DATETIME_TYPES = ("datetime", "timestamp")
DIGEST_MODULUS = 2**256


class TableChecksum(NamedTuple):
    """How many rows a table holds, and a digest of their content."""

    rows: int
    digest: str


def primary_key(database, table):
    """Return the table's primary-key columns, or raise ConfigError when it has none."""
    key = database.get_primary_keys(table)
    if not key:
        raise ConfigError(
            f"table {table} has no primary key, so it cannot be read in batches; "
            "give it one in a migration"
        )
    return key


def read_batches(database, table, columns, key, size=DEFAULT_BATCH):
    """Yield the table's rows (the ``columns``, as tuples) in lists of up to ``size``,
    in primary-key order."""
    selected = ", ".join(quoted(database, column) for column in columns)
    order = ", ".join(quoted(database, column) for column in key)
    head = f"SELECT {selected} FROM {quoted(database, table)}"
    condition, key_positions = _after_key([quoted(database, column) for column in key], database)
    positions = [columns.index(column) for column in key]
    rows = database.execute_sql(f"{head} ORDER BY {order} LIMIT {size}").fetchall()
    following = f"{head} WHERE {condition} ORDER BY {order} LIMIT {size}"
    while rows:
        yield rows
        if len(rows) < size:
            return
        last = [rows[-1][position] for position in positions]
        rows = database.execute_sql(following, [last[i] for i in key_positions]).fetchall()


def _after_key(key, database):
    """Return (condition, parameter key positions) selecting the rows after a key.

    For (a, b): ``a >= ? AND (a > ? OR b > ?)``, not the row value ``(a, b) > (?, ?)``,
    which MariaDB answers by scanning the index from its start.
    """
    param = database.param
    first, rest = key[0], key[1:]
    if not rest:
        return f"{first} > {param}", [0]
    inner, positions = _after_key(rest, database)
    return (
        f"{first} >= {param} AND ({first} > {param} OR ({inner}))",
        [0, 0, *(position + 1 for position in positions)],
    )


class TableDigest:
    """A running checksum of one table's rows, in whatever order they come."""

    def __init__(self, normalisers=()):
        self.normalisers = tuple(normalisers)  # (column position, function)
        self.rows = 0
        self._sum = 0

    def add(self, rows):
        """Add a batch of rows (tuples of the columns the normalisers were made for)."""
        fixes, total, sha256, to_int = self.normalisers, self._sum, hashlib.sha256, int.from_bytes
        for row in rows:
            if fixes:
                row = list(row)
                for position, fix in fixes:
                    row[position] = fix(row[position])
            total += to_int(sha256(repr(tuple(row)).encode()).digest(), "big")
        self._sum = total % DIGEST_MODULUS
        self.rows += len(rows)

    def result(self):
        """Return the TableChecksum of the rows added so far."""
        return TableChecksum(self.rows, f"{self._sum:064x}")


def normalisers(database, table, columns, whole_seconds=False):
    """Return [(position, function)] for the ``columns`` of the table whose values the
    drivers return in different forms."""
    types = {column.name: column.data_type.lower() for column in database.get_columns(table)}
    found = []
    for position, column in enumerate(columns):
        kind = types[column]
        if is_datetime_type(kind):
            found.append((position, functools.partial(datetime_text, whole_seconds=whole_seconds)))
        elif not any(word in kind for word in PLAIN_TYPES):
            found.append((position, normalised))
    return found


def is_datetime_type(data_type):
    """Return whether a column type (as introspection names it) holds date-times."""
    return any(word in data_type.lower() for word in DATETIME_TYPES)


def table_checksum(
    database, table, columns=None, size=DEFAULT_BATCH, whole_seconds=False, on_rows=None
):
    """Return the TableChecksum of a table (of ``columns``, by default all of them),
    read in batches; ``on_rows(count)`` hears of each batch."""
    columns = columns or [column.name for column in database.get_columns(table)]
    digest = TableDigest(normalisers(database, table, columns, whole_seconds))
    for rows in read_batches(database, table, columns, primary_key(database, table), size):
        digest.add(rows)
        if on_rows:
            on_rows(len(rows))
    return digest.result()


def normalised(value):
    """Return a value in one form whatever the driver returned it as."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value


def datetime_text(value, whole_seconds=False):
    """Return a date-time (or SQLite's text of one) as ISO text, cut to the second if asked."""
    if isinstance(value, str):
        value = _parsed(value)
    if isinstance(value, datetime.datetime):
        return (value.replace(microsecond=0) if whole_seconds else value).isoformat(sep=" ")
    return normalised(value)


def without_fraction(value):
    """Return a date-time (or SQLite's text of one) without its fraction of a second."""
    if isinstance(value, str):
        value = _parsed(value)
    if isinstance(value, datetime.datetime):
        return value.replace(microsecond=0)
    return value


def _parsed(text):
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return text  # not a date-time: compared as the text it is


def orphans(database):
    """Return [(table, column, rows)] for every foreign key whose rows point at no parent."""
    found = []
    for table in sorted(database.get_tables()):
        for key in database.get_foreign_keys(table):
            child, parent = quoted(database, table), quoted(database, key.dest_table)
            column = f"c.{quoted(database, key.column)}"
            target = f"p.{quoted(database, key.dest_column)}"
            (count,) = database.execute_sql(
                f"SELECT COUNT(*) FROM {child} c LEFT JOIN {parent} p ON {column} = {target} "
                f"WHERE {column} IS NOT NULL AND {target} IS NULL"
            ).fetchone()
            if count:
                found.append((table, key.column, count))
    return found
