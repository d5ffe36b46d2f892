"""The statements that took the most time in all: ``db.top``.

    report = top(settings, limit=10)         # a TopReport, most total time first
    for statement in report.statements:
        statement.statement, statement.calls, statement.total_ms, statement.mean_ms, ...
    top(settings, reset=True)                # a Reset: what was cleared

Each engine answers from what it keeps (picked by the engine's class):

- PostgreSQL: ``pg_stat_statements``, this database's statements only (its ``dbid``). It
  needs the library in ``shared_preload_libraries`` (a restart) and ``CREATE EXTENSION
  pg_stat_statements`` in the database; a ConfigError lists the steps still missing.
  ``--reset``: ``pg_stat_statements_reset(0, dbid, 0)``, this database only.
- MariaDB/MySQL: ``performance_schema.events_statements_summary_by_digest`` where
  ``SCHEMA_NAME`` is this database (timers in picoseconds). performance_schema is not
  dynamic: off, it takes a line in my.cnf and a restart. ``--reset`` truncates the
  table, which is the whole server's.
- SQLite: the file the app's opt-in recorder fills (db.querylog); none there, a note
  says how to turn the recorder on. ``--reset`` empties the file.
"""

import functools
from dataclasses import dataclass, field

from db.engines.mysql import MySQLEngine
from db.engines.postgres import PostgresEngine
from db.engines.sqlite import SqliteEngine, sqlite_path
from db.errors import ConfigError

DEFAULT_LIMIT = 10
PICOSECONDS_PER_MS = 1_000_000_000
RECORDER_HINT = (
    "the app records them when it calls db.querylog.record_queries(database) (off by default)"
)


@dataclass(frozen=True)
class StatementStats:
    """One normalised statement and what the engine counted of it."""

    statement: str  # one line
    calls: int
    total_ms: float
    mean_ms: float
    max_ms: float
    rows: int


@dataclass(frozen=True)
class TopReport:
    """The statements of a database that took the most time, most first."""

    database: str  # the masked URL
    engine_key: str
    source: str  # where the figures come from
    statements: list = field(default_factory=list)
    note: str | None = None  # why there are none, when the engine keeps none yet


@dataclass(frozen=True)
class Reset:
    """What ``db.top --reset`` cleared: this database's statistics, or the server's."""

    database: str
    source: str
    scope: str  # "database", "server" or "file"
    cleared: bool = True  # False: there was nothing to clear


def top(settings, limit=DEFAULT_LIMIT, reset=False):
    """Return the TopReport of the configured database (it must exist), or with
    ``reset`` clear its statistics and return the Reset."""
    from db.commands import opened
    from db.target import Target

    target = Target(settings.url)
    target.require_existing("no statement statistics")
    with opened(target) as database:
        if reset:
            return reset_statements(target, database)
        return top_statements(target, database, limit)


def top_statements(target, database, limit=DEFAULT_LIMIT):
    """Return the TopReport of the ``limit`` statements that took the most time in all."""
    if limit < 1:
        raise ConfigError(f"--limit must be at least 1, not {limit}")
    return _read(target.engine, target, database, limit)


def reset_statements(target, database):
    """Clear the statement statistics db.top reads; return the Reset."""
    return _reset(target.engine, target, database)


def one_line(text):
    """Return a statement's text on one line, its whitespace one blank."""
    return " ".join(str(text).split())


# -- PostgreSQL ---------------------------------------------------------------------------

PG_LIBRARY_LINE = "shared_preload_libraries = 'pg_stat_statements'"
PG_EXTENSION_LINE = "CREATE EXTENSION pg_stat_statements;"


def _pg_statements_view(target, database):
    """Return the schema-qualified pg_stat_statements view; raise the missing setup steps."""
    (libraries,) = database.execute_sql(
        "SELECT current_setting('shared_preload_libraries')"
    ).fetchone()
    loaded = "pg_stat_statements" in [name.strip() for name in libraries.split(",")]
    schema = database.execute_sql(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_stat_statements'"
    ).fetchone()
    steps = []
    if not loaded:
        steps += [f"add {PG_LIBRARY_LINE} to postgresql.conf", "restart the server"]
    if schema is None:
        steps.append(f"run {PG_EXTENSION_LINE} in database {database.database}")
    if steps:
        raise ConfigError(
            f"pg_stat_statements is not set up on {target.masked_url}: " + "; ".join(steps)
        )
    return f'"{schema[0]}".pg_stat_statements'


PG_DATABASE_ID = "(SELECT oid FROM pg_database WHERE datname = current_database())"


@functools.singledispatch
def _read(engine, target, database, limit):
    raise TypeError(f"db.top has no reader for {engine.name}")


@_read.register
def _(engine: PostgresEngine, target, database, limit):
    view = _pg_statements_view(target, database)
    rows = database.execute_sql(
        "SELECT query, calls, total_exec_time, mean_exec_time, max_exec_time, rows "
        f"FROM {view} WHERE dbid = {PG_DATABASE_ID} "
        "ORDER BY total_exec_time DESC, query LIMIT %s",
        (limit,),
    ).fetchall()
    statements = [
        StatementStats(one_line(query), calls, total, mean, longest, count)
        for query, calls, total, mean, longest, count in rows
    ]
    return TopReport(target.masked_url, engine.key, "pg_stat_statements", statements)


@functools.singledispatch
def _reset(engine, target, database):
    raise TypeError(f"db.top --reset has no way to clear {engine.name}'s statistics")


@_reset.register
def _(engine: PostgresEngine, target, database):
    view = _pg_statements_view(target, database)
    schema = view.rsplit(".", 1)[0]
    database.execute_sql(f"SELECT {schema}.pg_stat_statements_reset(0, {PG_DATABASE_ID}, 0)")
    return Reset(target.masked_url, "pg_stat_statements", "database")


# -- MariaDB/MySQL --------------------------------------------------------------------------

MYSQL_DIGESTS = "performance_schema.events_statements_summary_by_digest"


def _require_performance_schema(target, database):
    (enabled,) = database.execute_sql("SELECT @@performance_schema").fetchone()
    if not enabled:
        raise ConfigError(
            f"performance_schema is off on {target.masked_url}: add performance_schema = ON "
            "under [mysqld] in my.cnf; restart the server (it is not dynamic)"
        )


@_read.register
def _(engine: MySQLEngine, target, database, limit):
    _require_performance_schema(target, database)
    rows = database.execute_sql(
        "SELECT DIGEST_TEXT, COUNT_STAR, SUM_TIMER_WAIT, AVG_TIMER_WAIT, MAX_TIMER_WAIT, "
        "SUM_ROWS_SENT + SUM_ROWS_AFFECTED "
        f"FROM {MYSQL_DIGESTS} WHERE SCHEMA_NAME = DATABASE() AND DIGEST_TEXT IS NOT NULL "
        "ORDER BY SUM_TIMER_WAIT DESC, DIGEST_TEXT LIMIT %s",
        (limit,),
    ).fetchall()
    statements = [
        StatementStats(
            one_line(text),
            int(calls),
            int(total) / PICOSECONDS_PER_MS,
            int(mean) / PICOSECONDS_PER_MS,
            int(longest) / PICOSECONDS_PER_MS,
            int(count),
        )
        for text, calls, total, mean, longest, count in rows
    ]
    return TopReport(target.masked_url, engine.key, "performance_schema", statements)


@_reset.register
def _(engine: MySQLEngine, target, database):
    _require_performance_schema(target, database)
    database.execute_sql(f"TRUNCATE TABLE {MYSQL_DIGESTS}")
    return Reset(target.masked_url, "performance_schema", "server")


# -- SQLite ---------------------------------------------------------------------------------


@_read.register
def _(engine: SqliteEngine, target, database, limit):
    from db import querylog

    path = querylog.stats_path(sqlite_path(target.url))
    recorded = querylog.read_file(path, limit)
    if recorded is None:
        note = f"no statement statistics in {path}: {RECORDER_HINT}"
        return TopReport(target.masked_url, engine.key, str(path), note=note)
    statements = [
        StatementStats(r.statement, r.calls, r.total_ms, r.total_ms / r.calls, r.max_ms, r.rows)
        for r in recorded
    ]
    return TopReport(target.masked_url, engine.key, str(path), statements)


@_reset.register
def _(engine: SqliteEngine, target, database):
    from db import querylog

    path = querylog.stats_path(sqlite_path(target.url))
    return Reset(target.masked_url, str(path), "file", cleared=querylog.empty_file(path))
