"""How long a migration may wait for a lock, and run a statement; who kept it waiting.

    timeouts = MigrationTimeouts.from_settings(settings)   # db.lock_timeout, ...
    limits = timeouts.for_step(step_options)                # a step may set its own
    with limited(engine, database, limits):                 # the session's timeouts, put back after
        ...
    lock_timed_out(engine, exc)                             # the error of a lock wait that gave up

The configured ``db.lock_timeout`` (default 5s) and ``db.statement_timeout`` (default off)
apply to every migration step; a step may set its own (db.loader.StepOptions). A step
that gives up waiting for a lock is tried ``db.lock_retries`` more times, with back-off
(db.runner). Each engine says it in its own words:

- PostgreSQL: ``lock_timeout`` and ``statement_timeout``;
- MariaDB/MySQL: ``lock_wait_timeout`` (table metadata locks) and
  ``innodb_lock_wait_timeout`` (row locks), and MariaDB's ``max_statement_time``;
- SQLite: the busy timeout (one lock for the whole file; statements have no limit).

``BlockerWatch`` names the session a waiting step is blocked by (PostgreSQL: pg_blocking_pids;
MariaDB/MySQL: the oldest other open transaction), for the one line a failure prints.
"""

import functools
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from db.engines.mysql import MySQLEngine, mysql_error_code
from db.engines.postgres import PostgresEngine, sqlstate
from db.engines.sqlite import SqliteEngine
from db.errors import ConfigError

OFF = ("off", "0")
# MariaDB's lock_wait_timeout when "off": its own maximum, a year.
MYSQL_NO_LIMIT = 31536000
# SQLite's busy timeout when "off": its largest, about 25 days (0 would not wait at all).
SQLITE_NO_LIMIT_MS = 2**31 - 1
# How long a step may wait before the watch starts looking for whoever blocks it: a
# step that takes less never opens the watch's connection.
WATCH_AFTER_SECONDS = 0.5
WATCH_EVERY_SECONDS = 0.1


def parse_timeout(option, text):
    """Return ``text`` (such as 5s, 2m, 1h30m, or off) in whole seconds, 0 meaning no limit;
    raise ConfigError naming ``option`` when it is not a timeout."""
    from db.schedule import parse_duration

    if str(text).strip().lower() in OFF:
        return 0
    return int(parse_duration(option, text).total_seconds())


@dataclass(frozen=True)
class Limits:
    """One step's limits, in seconds (0: none), and how often a lock timeout is retried."""

    lock: int
    statement: int
    retries: int


@dataclass(frozen=True)
class MigrationTimeouts:
    """The configured limits, as text (checked when made)."""

    lock: str = "5s"
    statement: str = "off"
    retries: int = 3  # or its text, as a setting gives it

    def __post_init__(self):
        parse_timeout("db.lock_timeout", self.lock)
        parse_timeout("db.statement_timeout", self.statement)
        text = str(self.retries).strip()
        if isinstance(self.retries, bool) or not text.isdigit():
            raise ConfigError(
                f"db.lock_retries must be a whole number, 0 or more, not {self.retries!r}"
            )
        object.__setattr__(self, "retries", int(text))

    @classmethod
    def from_settings(cls, settings):
        return cls(settings.lock_timeout, settings.statement_timeout, settings.lock_retries)

    def for_step(self, options):
        """Return the Limits of a step with these StepOptions (its own timeouts win)."""
        lock = options.lock_timeout if options.lock_timeout is not None else self.lock
        statement = options.statement_timeout
        if statement is None:
            statement = self.statement
        return Limits(
            parse_timeout("lock_timeout", lock),
            parse_timeout("statement_timeout", statement),
            self.retries,
        )


def describe(seconds):
    """Return a limit as a person reads it: 5s, 2m, or no limit."""
    from datetime import timedelta

    from db.schedule import format_age

    return format_age(timedelta(seconds=seconds)) if seconds else "no limit"


# -- each engine's words ------------------------------------------------------------------


@functools.singledispatch
def limited(engine, database, limits):
    """A context manager: the session runs with ``limits`` inside, as before after."""
    raise TypeError(f"no migration timeouts on {engine.name}")


@limited.register
@contextmanager
def _(engine: PostgresEngine, database, limits):
    database.execute_sql(f"SET lock_timeout = '{limits.lock}s'")
    database.execute_sql(f"SET statement_timeout = '{limits.statement}s'")
    try:
        yield
    finally:
        database.execute_sql("RESET lock_timeout")
        database.execute_sql("RESET statement_timeout")


@limited.register
@contextmanager
def _(engine: MySQLEngine, database, limits):
    names = ["lock_wait_timeout", "innodb_lock_wait_timeout"]
    if _is_mariadb(database):
        names.append("max_statement_time")
    before = database.execute_sql("SELECT " + ", ".join(f"@@SESSION.{n}" for n in names))
    before = before.fetchone()
    wanted = [limits.lock or MYSQL_NO_LIMIT] * 2 + [limits.statement][: len(names) - 2]
    _set_session(database, names, wanted)
    try:
        yield
    finally:
        _set_session(database, names, before)


@limited.register
@contextmanager
def _(engine: SqliteEngine, database, limits):
    (before,) = database.execute_sql("PRAGMA busy_timeout").fetchone()
    waits = limits.lock * 1000 if limits.lock else SQLITE_NO_LIMIT_MS  # 0 would not wait
    database.execute_sql(f"PRAGMA busy_timeout = {waits}")
    try:
        yield
    finally:
        database.execute_sql(f"PRAGMA busy_timeout = {int(before)}")


def _set_session(database, names, values):
    assignments = ", ".join(f"SESSION {name} = %s" for name in names)
    database.execute_sql(f"SET {assignments}", tuple(values))


def _is_mariadb(database):
    (version,) = database.execute_sql("SELECT VERSION()").fetchone()
    return "mariadb" in version.lower()


@functools.singledispatch
def lock_timed_out(engine, exc):
    """Return whether ``exc`` is a statement that gave up waiting for a lock."""
    return False


@lock_timed_out.register
def _(engine: PostgresEngine, exc):
    return sqlstate(exc) == "55P03"  # lock_not_available


@lock_timed_out.register
def _(engine: MySQLEngine, exc):
    return mysql_error_code(exc) == 1205  # ER_LOCK_WAIT_TIMEOUT: metadata and row locks


@lock_timed_out.register
def _(engine: SqliteEngine, exc):
    return "database is locked" in str(exc)


@functools.singledispatch
def statement_timed_out(engine, exc):
    """Return whether ``exc`` is a statement stopped by the statement timeout."""
    return False


@statement_timed_out.register
def _(engine: PostgresEngine, exc):
    return sqlstate(exc) == "57014" and "statement timeout" in str(exc)


@statement_timed_out.register
def _(engine: MySQLEngine, exc):
    return mysql_error_code(exc) == 1969  # ER_STATEMENT_TIMEOUT (MariaDB)


# -- who blocks a waiting step --------------------------------------------------------------


@functools.singledispatch
def session_id(engine, database):
    """Return the id the server knows this connection by (None: SQLite has none)."""
    return None


@session_id.register
def _(engine: PostgresEngine, database):
    return database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]


@session_id.register
def _(engine: MySQLEngine, database):
    return database.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]


@functools.singledispatch
def blockers(engine, watcher, blocked):
    """Return one line about each session that blocks session ``blocked``, read over the
    ``watcher`` connection."""
    return []


@blockers.register
def _(engine: PostgresEngine, watcher, blocked):
    rows = watcher.execute_sql(
        "SELECT pid, application_name, usename, state, xact_start, left(query, 120) "
        "FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(%s)) ORDER BY xact_start",
        (blocked,),
    ).fetchall()
    return [
        f"pid {pid} (application {app or '-'!r}, user {user}, {state}, transaction since "
        f"{_moment(since)}, last query: {_one_line(query)!r})"
        for pid, app, user, state, since, query in rows
    ]


@blockers.register
def _(engine: MySQLEngine, watcher, blocked):
    # MariaDB does not say who holds a metadata lock without a plugin: the other open
    # transactions are who may, oldest first.
    rows = watcher.execute_sql(
        "SELECT t.trx_mysql_thread_id, p.user, p.host, t.trx_started, p.info "
        "FROM information_schema.innodb_trx t "
        "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
        "WHERE t.trx_mysql_thread_id <> %s AND p.db = DATABASE() "
        "ORDER BY t.trx_started LIMIT 3",
        (blocked,),
    ).fetchall()
    return [
        f"connection {thread} ({user}@{host}, transaction since {_moment(since)}, "
        f"running: {_one_line(query or 'nothing')!r})"
        for thread, user, host, since, query in rows
    ]


def _moment(value):
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "?"


def _one_line(text):
    return " ".join(str(text).split())


class BlockerWatch:
    """Watch, from a connection of its own, who blocks one session while a step runs; the
    last sessions seen blocking it stay in ``seen``. It opens no connection for a step
    that ends within WATCH_AFTER_SECONDS."""

    def __init__(self, engine, database):
        self.engine, self.database = engine, database
        self.seen = []
        self._done = threading.Event()
        self._thread = None

    def __enter__(self):
        blocked = session_id(self.engine, self.database)
        if blocked is not None:
            self._thread = threading.Thread(target=self._watch, args=(blocked,), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def describe(self):
        """Return who was seen blocking the step, or a sentence saying nobody was."""
        if not self.seen:
            return "no blocking session was seen"
        return "blocked by " + "; ".join(self.seen)

    def _watch(self, blocked):
        if self._done.wait(WATCH_AFTER_SECONDS):
            return
        watcher = type(self.database)(self.database.database, **self.database.connect_params)
        try:
            watcher.connect()
            while not self._done.wait(WATCH_EVERY_SECONDS):
                found = blockers(self.engine, watcher, blocked)
                if found:
                    self.seen = found
        except Exception:  # the watch only adds detail: it never fails a migration
            return
        finally:
            watcher.close()
