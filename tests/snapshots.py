"""Whole-database snapshots, to assert that two databases (or one, twice) hold the same.

Every function takes a database URL or an open peewee Database, on any engine, and
reads through peewee alone (``get_tables``, ``get_columns``, ``get_indexes``, plain
SELECTs)::

    content(url)     # {table: sorted rows}, run times and derived search tables left out
    row_counts(url)  # {table: rows}, every table's
    checksum(db)     # a SHA-256 of content()
    schema(url)      # {table: TableShape(columns, indexes, foreign_keys)}; {} for no tables
    orphans(db)      # foreign keys whose row points at no parent row (none, normally)

Values are normalised by ``db.content.normalised`` (the one db.transfer compares with),
so that the same data compares equal whatever the driver hands back: datetimes as ISO
text (SQLite keeps them as text), Decimals as floats, booleans as 0/1 (MySQL's BOOL is a
TINYINT), memoryviews as bytes. Rows are sorted in Python, so no engine's collation or
physical order matters.
"""

import hashlib
from contextlib import contextmanager
from typing import NamedTuple

import peewee

from db.content import normalised
from db.content import orphans as foreign_key_orphans
from db.engines import open_database
from db.engines.base import quoted
from db.history import DatabaseIdentity
from db.search import is_derived

# Columns that record *when* something ran, not what the data is.
RUN_TIMES = {"migrations": ("applied_at", "duration_ms"), "seeders": ("applied_at",)}
# The database's own id (db.history.DatabaseIdentity): which database it is, not what it
# holds. A first backup gives it; a restore keeps the replaced database's.
NOT_CONTENT = {DatabaseIdentity.table_name}


class TableShape(NamedTuple):
    """One table as peewee's introspection sees it."""

    columns: tuple  # (name, data_type, null, primary_key), in table order
    indexes: tuple  # (name, columns, unique), sorted
    foreign_keys: tuple  # (column, dest_table, dest_column), sorted


def content(source):
    """Return {table: sorted rows} for every table of a database, run times, the
    database's id and the search tables the triggers derive from the others (each engine
    stores them its own way: db.search.DERIVED_TABLES) left out."""
    with connected(source) as database:
        snapshot = {}
        tables = sorted(t for t in set(database.get_tables()) - NOT_CONTENT if not is_derived(t))
        for table in tables:
            columns = [
                column.name
                for column in database.get_columns(table)
                if column.name not in RUN_TIMES.get(table, ())
            ]
            selected = ", ".join(quoted(database, column) for column in columns)
            cursor = database.execute_sql(f"SELECT {selected} FROM {quoted(database, table)}")
            rows = [tuple(normalised(value) for value in row) for row in cursor.fetchall()]
            snapshot[table] = sorted(rows, key=repr)
    return snapshot


def row_counts(source):
    """Return {table: rows} for every table of a database but its id, the derived search
    tables included (a backup holds them and its manifest counts them)."""
    with connected(source) as database:
        return {
            table: database.execute_sql(
                f"SELECT COUNT(*) FROM {quoted(database, table)}"
            ).fetchone()[0]
            for table in sorted(set(database.get_tables()) - NOT_CONTENT)
        }


def checksum(source):
    """Return a SHA-256 of the database's content (see ``content``)."""
    return hashlib.sha256(repr(sorted(content(source).items())).encode()).hexdigest()


def schema(source):
    """Return {table: TableShape} for every table of a database ({} when it has none)."""
    with connected(source) as database:
        return {
            table: TableShape(
                columns=tuple(
                    (c.name, c.data_type.lower(), c.null, c.primary_key)
                    for c in database.get_columns(table)
                ),
                indexes=tuple(
                    sorted(
                        (i.name, tuple(i.columns), i.unique) for i in database.get_indexes(table)
                    )
                ),
                foreign_keys=tuple(
                    sorted(
                        (f.column, f.dest_table, f.dest_column)
                        for f in database.get_foreign_keys(table)
                    )
                ),
            )
            for table in sorted(database.get_tables())
        }


def orphans(source):
    """Return [(table, column, rows)] for every foreign key with rows pointing at no parent."""
    with connected(source) as database:
        return foreign_key_orphans(database)


@contextmanager
def connected(source):
    """Yield an open peewee Database: ``source`` itself, or a connection to its URL."""
    if isinstance(source, peewee.Database):
        yield source
        return
    database = open_database(str(source), create=False)
    try:
        yield database
    finally:
        database.close()
