"""The engine's own maintenance, and what it changed (``db.optimize``).

    result = optimize(database)   # an Optimized: what ran, sizes before and after

- SQLite: ``PRAGMA optimize``, ``ANALYZE``, ``VACUUM``; the file size and free pages
  before and after (the WAL is checkpointed on both sides, so the file *is* the database);
- PostgreSQL: ``VACUUM ANALYZE`` (outside any transaction: it refuses to run in one), the
  size of each table with its indexes and TOAST before and after;
- MySQL / MariaDB: ``OPTIMIZE TABLE`` then ``ANALYZE TABLE`` per table, and what the
  server answered (InnoDB rebuilds the table: "does not support optimize, doing
  recreate + analyze instead"), the size of each table before and after.

The caller holds the migration lock (engine.migration_lock), so maintenance never runs
in the middle of a migration.
"""

import functools
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from db.engines import MySQLEngine, PostgresEngine, SqliteEngine
from db.engines.base import quoted


class TableSize(NamedTuple):
    """The bytes one table (with its indexes) took before and after the maintenance."""

    table: str
    before: int
    after: int


class ServerMessage(NamedTuple):
    """One line of what MySQL answered to OPTIMIZE TABLE or ANALYZE TABLE."""

    table: str
    operation: str  # optimize, analyze
    kind: str  # status, note, info, warning, error
    text: str


@dataclass(frozen=True)
class Optimized:
    """What ``db.optimize`` ran, and what it changed."""

    engine: str
    steps: tuple  # the statements run, in order
    size_before: int  # bytes: the file (SQLite), the tables (servers)
    size_after: int
    free_pages: tuple = None  # SQLite: (before, after)
    tables: tuple = ()  # TableSize per table (servers)
    messages: tuple = ()  # ServerMessage per answer line (MySQL)

    @property
    def reclaimed(self):
        """Return the bytes given back (negative when the database grew)."""
        return self.size_before - self.size_after


@functools.singledispatch
def optimize(engine, database):
    """Run ``engine``'s maintenance on the connected database; return an Optimized."""
    raise TypeError(f"db.optimize has nothing to run on {engine.name}")


@optimize.register
def optimize_sqlite(engine: SqliteEngine, database):
    """PRAGMA optimize, ANALYZE, VACUUM; return the file and free pages before and after."""
    steps = ("PRAGMA optimize", "ANALYZE", "VACUUM")
    size_before, free_before = _sqlite_size(database)
    for statement in steps:
        database.execute_sql(statement)
    size_after, free_after = _sqlite_size(database)
    return Optimized("SQLite", steps, size_before, size_after, (free_before, free_after))


def _sqlite_size(database):
    """Return (bytes of the database file, free pages in it), the WAL written back first."""
    database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    (free_pages,) = database.execute_sql("PRAGMA freelist_count").fetchone()
    return Path(database.database).stat().st_size, free_pages


@optimize.register
def optimize_postgres(engine: PostgresEngine, database):
    """VACUUM ANALYZE the whole database; return each table's size before and after."""
    before = _postgres_table_sizes(database)
    with _autocommit(database):
        database.execute_sql("VACUUM ANALYZE")
    after = _postgres_table_sizes(database)
    return _server_result("PostgreSQL", ("VACUUM ANALYZE",), before, after)


@contextmanager
def _autocommit(database):
    # VACUUM cannot run inside a transaction block, and psycopg opens one before
    # every statement unless the connection is in autocommit mode.
    connection = database.connection()
    connection.autocommit = True
    try:
        yield
    finally:
        connection.autocommit = False


def _postgres_table_sizes(database):
    rows = database.execute_sql(
        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
    ).fetchall()
    return dict(rows)


@optimize.register
def optimize_mysql(engine: MySQLEngine, database):
    """OPTIMIZE TABLE, then ANALYZE TABLE, each table; return what the server answered
    and each table's size before and after."""
    tables = sorted(database.get_tables())
    before = _mysql_table_sizes(database)
    messages = []
    for table in tables:
        for operation in ("OPTIMIZE", "ANALYZE"):
            cursor = database.execute_sql(f"{operation} TABLE {quoted(database, table)}")
            messages += [
                ServerMessage(table, operation.lower(), kind, text)
                for _, _, kind, text in cursor.fetchall()
            ]
    after = _mysql_table_sizes(database)
    result = _server_result("MySQL", ("OPTIMIZE TABLE", "ANALYZE TABLE"), before, after)
    return replace(result, messages=tuple(messages))


def _mysql_table_sizes(database):
    # information_schema keeps statistics, refreshed by ANALYZE (and OPTIMIZE) TABLE.
    rows = database.execute_sql(
        "SELECT table_name, data_length + index_length FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'"
    ).fetchall()
    return {name: int(size or 0) for name, size in rows}


def _server_result(engine, steps, before, after):
    tables = tuple(
        TableSize(table, before.get(table, 0), after.get(table, 0)) for table in sorted(after)
    )
    return Optimized(
        engine,
        steps,
        sum(size.before for size in tables),
        sum(size.after for size in tables),
        tables=tables,
    )
