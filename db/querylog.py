"""Which statements an SQLite app spends its time in: the opt-in recorder behind ``db.top``.

    from db.querylog import record_queries
    recorder = record_queries(database)   # the app's peewee SqliteDatabase, once, at start
    ...                                   # every database.execute_sql is now counted
    recorder.close()                      # flush and stop (also done at the interpreter's exit)

PostgreSQL (pg_stat_statements) and MariaDB (performance_schema) keep these figures
themselves; SQLite keeps nothing, so the app records them, and only when it asks: the
recorder is off by default. Once on, each statement the database runs through
``execute_sql`` (every model query) is normalised (literals become ``?``, a list of
``?`` becomes ``?, ...``, whitespace one blank) and added up in memory: calls, total and
longest time, rows changed (``cursor.rowcount``: a SELECT's rows are not followed, the
cursor is the app's). Rows loaded by ``cursor().executemany`` (db.populate's bulk
loads) bypass ``execute_sql`` and are not seen.

Bounded: at most ``MAX_STATEMENTS`` (500) distinct statements, in memory and in the
file; past that, new statements are added up under the one line ``(other statements)``,
so the totals stay right. Every ``FLUSH_EVERY`` seconds (a daemon thread), at ``close()``
and at exit, the figures gathered since the last flush are added to a small SQLite file
beside the database, ``<database>-querystats`` (never a table of the app's database:
db.check compares it with the models), with an UPSERT in one transaction, so several
processes of the app recording at once add up. ``db.top`` reads that file; ``db.top
--reset`` empties it.
"""

import atexit
import logging
import re
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import peewee
from sqlparse import tokens
from sqlparse.lexer import Lexer

from db.errors import ConfigError

MAX_STATEMENTS = 500
OTHERS = "(other statements)"
FLUSH_EVERY = 5.0  # seconds
SUFFIX = "-querystats"
_NORMALISED_KEPT = 2000  # raw SQL texts whose normalised form is remembered

SCHEMA = """CREATE TABLE IF NOT EXISTS statements (
    statement TEXT PRIMARY KEY,
    calls INTEGER NOT NULL,
    total_ms REAL NOT NULL,
    max_ms REAL NOT NULL,
    rows INTEGER NOT NULL
)"""
UPSERT = """INSERT INTO statements (statement, calls, total_ms, max_ms, rows)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (statement) DO UPDATE SET
    calls = calls + excluded.calls,
    total_ms = total_ms + excluded.total_ms,
    max_ms = max(max_ms, excluded.max_ms),
    rows = rows + excluded.rows"""

_LIST = re.compile(r"\?(?:\s*,\s*\?)+")
_ROWS = re.compile(r"\(\?, \.\.\.\)(?:\s*,\s*\(\?, \.\.\.\))+")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recorded:
    """One normalised statement as the file holds it."""

    statement: str
    calls: int
    total_ms: float
    max_ms: float
    rows: int


def stats_path(database_path):
    """Return the recorder's file for the SQLite database at ``database_path``."""
    return Path(f"{database_path}{SUFFIX}")


def normalise(sql):
    """Return ``sql`` as one line, its literals ``?`` and its lists of them ``?, ...``."""
    parts = []
    for ttype, value in Lexer.get_default_instance().get_tokens(sql):
        if ttype in tokens.Comment:
            continue
        if ttype in tokens.Whitespace or ttype in tokens.Newline:
            if parts and parts[-1] != " ":
                parts.append(" ")
        elif ttype in tokens.Number or ttype in tokens.String.Single:
            parts.append("?")
        else:
            parts.append(value)
    text = _LIST.sub("?, ...", "".join(parts).strip())
    return _ROWS.sub("(?, ...), ...", text)


class QueryRecorder:
    """Counts the statements one peewee database runs; see the module's docstring."""

    def __init__(self, database, path, limit=MAX_STATEMENTS, flush_every=FLUSH_EVERY):
        self.database = database
        self.path = Path(path)
        self.limit = limit
        self.flush_every = flush_every
        self._figures = {}  # statement -> [calls, total_ms, max_ms, rows], since the flush
        self._normalised = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_periodically, name="querylog-flush", daemon=True
        )

    def start(self):
        """Wrap the database's execute_sql and start flushing; return self."""
        run = type(self.database).execute_sql.__get__(self.database)

        def execute_sql(sql, params=None):
            started = time.perf_counter()
            cursor = run(sql, params)
            self.add(sql, (time.perf_counter() - started) * 1000, cursor.rowcount)
            return cursor

        self.database.execute_sql = execute_sql
        self._flusher.start()
        atexit.register(self.close)
        return self

    def add(self, sql, ms, rows):
        """Count one run of ``sql`` that took ``ms`` milliseconds and changed ``rows``."""
        statement = self._normalised.get(sql)
        if statement is None:
            statement = normalise(sql)
            if len(self._normalised) < _NORMALISED_KEPT:
                self._normalised[sql] = statement
        with self._lock:
            figures = self._figures.get(statement)
            if figures is None:
                if len(self._figures) >= self.limit - 1:
                    statement = OTHERS
                figures = self._figures.setdefault(statement, [0, 0.0, 0.0, 0])
            figures[0] += 1
            figures[1] += ms
            if ms > figures[2]:
                figures[2] = ms
            if rows > 0:
                figures[3] += rows

    def statements(self):
        """Return how many distinct statements are held in memory (bounded by ``limit``)."""
        with self._lock:
            return len(self._figures)

    def flush(self):
        """Add the figures gathered since the last flush to the file."""
        with self._lock:
            deltas, self._figures = self._figures, {}
        if not deltas:
            return
        try:
            add_to_file(self.path, deltas, self.limit)
        except sqlite3.Error as exc:  # kept for the next flush, not lost
            log.warning("query statistics not written to %s: %s", self.path, exc)
            with self._lock:
                for statement, figures in deltas.items():
                    _merge(self._figures.setdefault(statement, [0, 0.0, 0.0, 0]), figures)

    def close(self):
        """Stop recording: flush and give the database its own execute_sql back."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.database.__dict__.pop("execute_sql", None)
        if self._flusher.is_alive():
            self._flusher.join()
        self.flush()
        atexit.unregister(self.close)

    def _flush_periodically(self):
        while not self._closed.wait(self.flush_every):
            self.flush()


def record_queries(database, path=None, limit=MAX_STATEMENTS, flush_every=FLUSH_EVERY):
    """Start recording the statements of the SQLite ``database`` (a peewee database);
    return its QueryRecorder. ``path``: the file (default: beside the database)."""
    if not isinstance(database, peewee.SqliteDatabase) or database.database in ("", ":memory:"):
        raise ConfigError(
            "record_queries needs an SQLite database file: PostgreSQL and MariaDB keep "
            "their own statistics (see invoke db.top)"
        )
    if limit < 2:
        raise ConfigError(f"record_queries: limit must be at least 2, not {limit}")
    path = stats_path(database.database) if path is None else path
    return QueryRecorder(database, path, limit, flush_every).start()


def add_to_file(path, deltas, limit=MAX_STATEMENTS):
    """Add ``deltas`` ({statement: [calls, total_ms, max_ms, rows]}) to the file at
    ``path``, keeping at most ``limit`` statements there (the rest under OTHERS)."""
    with closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as connection:
        connection.execute(SCHEMA)
        connection.execute("BEGIN IMMEDIATE")  # one writer at a time: the count holds
        try:
            known = {row[0] for row in connection.execute("SELECT statement FROM statements")}
            room = limit - 1 - len(known - {OTHERS})
            rows, others = [], [0, 0.0, 0.0, 0]
            for statement, figures in deltas.items():
                if statement in known or statement == OTHERS or room > 0:
                    room -= statement not in known and statement != OTHERS
                    rows.append((statement, *figures))
                else:
                    _merge(others, figures)
            if others[0]:
                rows.append((OTHERS, *others))
            connection.executemany(UPSERT, rows)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise


def read_file(path, limit):
    """Return the ``limit`` statements of the file that took the most time in all, as
    Recorded; None when there is no such file."""
    path = Path(path)
    if not path.exists():
        return None
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as connection:
        try:
            found = connection.execute(
                "SELECT statement, calls, total_ms, max_ms, rows FROM statements "
                "ORDER BY total_ms DESC, statement LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            if _being_created(connection):
                return []
            raise ConfigError(f"{path} is not the query recorder's file: {exc}") from exc
    return [Recorded(*row) for row in found]


def empty_file(path):
    """Remove every statement from the file at ``path``; return whether there was one."""
    path = Path(path)
    if not path.exists():
        return False
    with closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as connection:
        try:
            connection.execute("DELETE FROM statements")
        except sqlite3.DatabaseError as exc:
            if _being_created(connection):
                return True
            raise ConfigError(f"{path} is not the query recorder's file: {exc}") from exc
    return True


def _being_created(connection):
    """Return whether the file is an SQLite database without a table yet: one a recorder
    has just created, whose table its next statement makes (no statements recorded)."""
    try:
        return connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    except sqlite3.DatabaseError:  # not an SQLite database at all
        return False


def _merge(into, figures):
    into[0] += figures[0]
    into[1] += figures[1]
    into[2] = max(into[2], figures[2])
    into[3] += figures[3]
