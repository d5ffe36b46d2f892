"""Who holds what and who waits on whom: ``db.locks``.

    report = lock_report(engine, database)      # a LockReport: the other sessions, notes
    for session in report.waiting:              # the sessions blocked by others
        session.id, session.waits_for, session.blocked_by, session.waiting_seconds
    end_session(engine, database, 4242)         # db.locks --kill: PostgreSQL and MariaDB only

    for wait in lock_waits(engine, database):   # for health checks: a LockWait per waiter
        wait.session, wait.seconds, wait.blocked_by

``lock_waits(engine, database)`` is the small reading meant for health checks (db.health
counts the waits and the longest): each session of this database waiting for a lock, how
long it has waited in seconds, and the ids of the sessions blocking it. It reads what
``lock_report`` reads and only returns the waiters.

Only the sessions of this database are shown, never the caller's own connection. Each
engine says it in its own words, read by one function per engine (``sessions``):

- PostgreSQL: ``pg_stat_activity`` (user, application, client, state: ``idle in
  transaction`` is the one that matters, xact_start, the query) with ``pg_locks`` (the
  locks each holds on tables, the one it waits for, since when) and
  ``pg_blocking_pids(pid)``.
- MariaDB/MySQL: ``information_schema.PROCESSLIST`` with ``INNODB_TRX`` (open
  transactions), ``INNODB_LOCK_WAITS``/``INNODB_LOCKS`` (row lock waits). A session
  ``Waiting for table metadata lock`` is blocked by one of the other sessions with an open
  transaction (the server does not say which without the ``metadata_lock_info`` plugin,
  which is used when installed).
- SQLite: no server, so the processes: those that have the database file, its ``-wal``,
  ``-shm``, ``-journal`` or ``.migrate.lock`` open (``/proc/*/fd``, as ``lsof`` finds
  them), and from ``/proc/locks`` who holds the write lock: in WAL mode byte 120 of the
  ``-shm`` file (WAL_WRITE_LOCK), in rollback mode byte 1073741825 of the database file
  (RESERVED; PENDING and EXCLUSIVE beside it), and the migration lock (an flock). A
  process waiting for SQLite's lock retries in a loop and is not seen waiting.

``end_session`` ends a session where the engine allows it: ``pg_terminate_backend``,
MariaDB's ``KILL``; never on SQLite. Nothing else here writes.
"""

import datetime
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from db.engines.mysql import MySQLEngine
from db.engines.postgres import PostgresEngine
from db.engines.sqlite import SqliteEngine
from db.errors import ConfigError, DatabaseFailed, one_line

QUERY_WIDTH = 120
# SQLite's lock bytes (os.c): in rollback mode PENDING, RESERVED, then the SHARED range of
# the database file; in WAL mode the -shm file's WAL_WRITE_LOCK, CKPT, RECOVER, then readers.
PENDING_BYTE = 1073741824
RESERVED_BYTE = PENDING_BYTE + 1
WAL_WRITE_LOCK_BYTE = 120
SQLITE_FILES = {"": "database", "-wal": "wal", "-shm": "shm", "-journal": "journal"}
MIGRATION_LOCK_SUFFIX = ".migrate.lock"


@dataclass(frozen=True)
class Session:
    """One session (PostgreSQL backend, MariaDB connection, SQLite process) of the database."""

    id: int  # the pid (PostgreSQL, SQLite) or connection id (MariaDB) --kill takes
    user: str | None = None
    application: str | None = None  # SQLite: the process's command line
    client: str | None = None
    state: str | None = None
    transaction_since: datetime.datetime | None = None  # aware, UTC
    transaction_seconds: float | None = None
    waiting_seconds: float | None = None
    waits_for: str | None = None  # e.g. "AccessExclusiveLock on images"
    blocked_by: tuple = ()  # the ids of the sessions it waits on
    query: str | None = None  # one line, shortened
    holds: tuple = ()  # e.g. ("AccessShareLock on images",), ("write lock",)
    files: tuple = ()  # SQLite: which of the database's files it has open


class LockWait(NamedTuple):
    """A session waiting for a lock (lock_waits): its id, seconds waited, blockers' ids."""

    session: int
    seconds: float | None
    blocked_by: tuple


@dataclass(frozen=True)
class LockReport:
    """What ``db.locks`` shows: the other sessions of the database, and notes."""

    engine: str
    engine_key: str
    sessions: list
    notes: list = field(default_factory=list)
    database: str | None = None  # the URL, masked

    @property
    def waiting(self):
        """The sessions waiting for a lock, longest wait first."""
        waiters = [s for s in self.sessions if s.waits_for or s.blocked_by]
        return sorted(waiters, key=lambda s: -(s.waiting_seconds or 0))

    def session(self, session_id):
        return next((s for s in self.sessions if s.id == session_id), None)


def lock_report(engine, database, masked_url=None):
    """Return the LockReport of the database ``database`` (open) of ``engine``."""
    found, notes = sessions(engine, database)
    return LockReport(engine.name, engine.key, found, notes, masked_url)


def lock_waits(engine, database):
    """Return a LockWait for each session of the database waiting for a lock."""
    return [
        LockWait(s.id, s.waiting_seconds, s.blocked_by)
        for s in lock_report(engine, database).waiting
    ]


def end_session(engine, database, session_id):
    """End session ``session_id`` of the database (db.locks --kill); return its Session.
    ConfigError for the caller's own session, one not on this database, or SQLite."""
    own = own_session(engine, database)
    if own is not None and session_id == own:
        raise ConfigError(f"db.locks --kill {session_id}: that is db.locks's own session")
    session = require_session(engine, database, session_id)
    try:
        terminate(engine, database, session_id)
    except Exception as exc:  # the server's refusal (rights), in its words
        raise DatabaseFailed(f"db.locks --kill {session_id}: {one_line(exc)}") from exc
    return session


def require_session(engine, database, session_id):
    """Return the Session ``session_id`` of the database, or raise ConfigError."""
    refuse_kill(engine, session_id)
    session = lock_report(engine, database).session(session_id)
    if session is None:
        raise ConfigError(
            f"db.locks --kill {session_id}: no such session on this database "
            "(invoke db.locks lists them)"
        )
    return session


def shortened(text, width=QUERY_WIDTH):
    """Return ``text`` on one line, cut to ``width`` characters."""
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _utc(moment):
    if moment is None:
        return None
    return moment.astimezone(datetime.timezone.utc) if moment.tzinfo else moment


# -- each engine's words ------------------------------------------------------------------


@functools.singledispatch
def sessions(engine, database):
    """Return (the Sessions of the database but the caller's, notes)."""
    raise TypeError(f"no lock report on {engine.name}")


@functools.singledispatch
def own_session(engine, database):
    """Return the id of the caller's own session (None: SQLite)."""
    return None


@functools.singledispatch
def refuse_kill(engine, session_id):
    """Raise ConfigError where the engine's sessions are not ended by db.locks."""


@functools.singledispatch
def terminate(engine, database, session_id):
    """End session ``session_id``."""
    raise TypeError(f"no --kill on {engine.name}")


# PostgreSQL ---------------------------------------------------------------------------------

PG_SESSIONS = """
SELECT a.pid, a.usename, a.application_name,
       CASE WHEN a.client_addr IS NULL THEN 'local' ELSE host(a.client_addr) || ':' || a.client_port END,
       a.state, a.xact_start, EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start),
       a.wait_event_type, a.wait_event, a.query, pg_blocking_pids(a.pid),
       EXTRACT(EPOCH FROM clock_timestamp() - a.state_change)
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND a.backend_type = 'client backend'
ORDER BY a.xact_start NULLS LAST, a.pid
"""  # noqa: E501
PG_LOCKS = """
SELECT l.pid, l.mode, l.granted, l.locktype, c.relname,
       EXTRACT(EPOCH FROM clock_timestamp() - l.waitstart)
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
LEFT JOIN pg_class c ON c.oid = l.relation
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.datname = current_database() AND l.pid <> pg_backend_pid()
  AND (l.relation IS NULL OR n.nspname NOT IN ('pg_catalog', 'information_schema'))
  AND l.locktype IN ('relation', 'tuple', 'transactionid')
ORDER BY l.pid, c.relname, l.mode
"""


@sessions.register
def _(engine: PostgresEngine, database):
    holds, waits, rows = {}, {}, {}
    for pid, mode, granted, kind, relation, waited in database.execute_sql(PG_LOCKS):
        what = f"{mode} on {relation}" if relation else f"{mode} on a {kind}"
        if granted and kind == "relation":
            holds.setdefault(pid, []).append(what)
        elif granted and kind == "tuple":  # the row a waiter queues for
            rows[pid] = relation
        elif not granted and (pid not in waits or relation):  # a table beats a transaction
            waits[pid] = (what if kind != "transactionid" else None, waited)
    found = []
    for row in database.execute_sql(PG_SESSIONS).fetchall():
        pid, user, app, client, state, since, seconds, event_type, event, query = row[:10]
        blockers, in_state = row[10:]
        waits_for, waited = waits.get(pid, (None, None))
        if event_type == "Lock":
            # pg_locks.waitstart is null for a moment after a wait starts
            waited = waited if waited is not None else in_state
            row_of = f" on {rows[pid]}" if pid in rows else ""
            waits_for = waits_for or (
                f"a row lock{row_of}" if event == "transactionid" else f"a {event} lock"
            )
        found.append(
            Session(
                pid,
                user,
                app or None,
                client,
                state,
                _utc(since),
                None if seconds is None else float(seconds),
                None if waited is None else float(waited),
                waits_for,
                tuple(blockers or ()),
                shortened(query) or None,
                tuple(holds.get(pid, ())),
            )
        )
    return found, []


@own_session.register
def _(engine: PostgresEngine, database):
    return database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]


@terminate.register
def _(engine: PostgresEngine, database, session_id):
    # With a timeout, pg_terminate_backend waits until the session is gone (PostgreSQL 14+).
    (ended,) = database.execute_sql(
        "SELECT pg_terminate_backend(%s, 5000)", (session_id,)
    ).fetchone()
    if not ended:
        raise DatabaseFailed(f"db.locks --kill {session_id}: the session did not end in 5 s")


# MariaDB/MySQL ------------------------------------------------------------------------------

MYSQL_SESSIONS = """
SELECT p.id, p.user, p.host, p.command, p.state, p.time, p.info,
       t.trx_id, t.trx_state, TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)) / 1e6,
       TIMESTAMPDIFF(MICROSECOND, t.trx_wait_started, NOW(6)) / 1e6
FROM information_schema.processlist p
LEFT JOIN information_schema.innodb_trx t ON t.trx_mysql_thread_id = p.id
WHERE p.db = DATABASE() AND p.id <> CONNECTION_ID()
ORDER BY t.trx_started IS NULL, t.trx_started, p.id
"""
MYSQL_ROW_WAITS = """
SELECT w.requesting_trx_id, w.blocking_trx_id, l.lock_mode, l.lock_table
FROM information_schema.innodb_lock_waits w
JOIN information_schema.innodb_locks l ON l.lock_id = w.requested_lock_id
"""
MYSQL_BLOCKING_LOCKS = (
    "SELECT lock_trx_id, lock_mode, lock_table FROM information_schema.innodb_locks"
)
MYSQL_METADATA_LOCKS = """
SELECT thread_id, lock_mode, table_name FROM information_schema.metadata_lock_info
WHERE table_schema = DATABASE() AND table_name <> ''
"""
METADATA_WAIT = "Waiting for table metadata lock"
NO_METADATA_PLUGIN = (
    "MariaDB does not say which tables a transaction holds without the metadata_lock_info "
    "plugin (INSTALL SONAME 'metadata_lock_info'): a session waiting for a metadata lock "
    "is shown blocked by every other session with an open transaction"
)


@sessions.register
def _(engine: MySQLEngine, database):
    rows = database.execute_sql(MYSQL_SESSIONS).fetchall()
    now = datetime.datetime.now(datetime.timezone.utc)
    by_trx = {row[7]: row[0] for row in rows if row[7] is not None}
    holds, row_waits = {}, {}
    for requesting, blocking, mode, table in _optional(database, MYSQL_ROW_WAITS):
        waiter = by_trx.get(requesting)
        if waiter is not None:
            _, blockers = row_waits.setdefault(waiter, (f"{mode} row lock on {table}", []))
            blockers.append(by_trx.get(blocking, blocking))
    for trx, mode, table in _optional(database, MYSQL_BLOCKING_LOCKS):
        if trx in by_trx and by_trx[trx] not in row_waits:
            holds.setdefault(by_trx[trx], set()).add(f"{mode} row lock on {table}")
    metadata = _metadata_locks(database)
    notes = [] if metadata is not None else [NO_METADATA_PLUGIN]
    for thread, mode, table in metadata or ():
        holds.setdefault(thread, set()).add(f"{mode} on {_unquoted(table)}")
    in_transaction = [row[0] for row in rows if row[7] is not None]
    found = []
    for row in rows:
        thread, user, host, command, state, seconds, info = row[:7]
        trx, trx_state, trx_seconds, wait_seconds = row[7:]
        waits_for, blocked_by, waited = None, (), None
        if thread in row_waits:
            waits_for, blockers = row_waits[thread]
            blocked_by, waited = tuple(blockers), wait_seconds
        elif state == METADATA_WAIT:
            waits_for, waited = "a table metadata lock", seconds
            blocked_by = tuple(t for t in in_transaction if t != thread)
            if metadata:
                blocked_by = tuple(t for t in blocked_by if t in holds) or blocked_by
        trx_seconds = None if trx_seconds is None else float(trx_seconds)
        found.append(
            Session(
                thread,
                user,
                None,
                host,
                _mysql_state(command, state, trx_state),
                None if trx_seconds is None else now - datetime.timedelta(seconds=trx_seconds),
                trx_seconds,
                None if waited is None else float(waited),
                waits_for,
                blocked_by,
                shortened(info),
                tuple(sorted(holds.get(thread, ()))),
            )
        )
    return found, notes


def _optional(database, sql):
    """Return the rows of a query on a table this server may not have (MySQL 8: no
    INNODB_LOCKS), or none."""
    import peewee

    try:
        return database.execute_sql(sql).fetchall()
    except peewee.DatabaseError:
        return []


def _metadata_locks(database):
    installed = database.execute_sql(
        "SELECT 1 FROM information_schema.plugins "
        "WHERE plugin_name = 'METADATA_LOCK_INFO' AND plugin_status = 'ACTIVE'"
    ).fetchone()
    return database.execute_sql(MYSQL_METADATA_LOCKS).fetchall() if installed else None


def _unquoted(name):
    return str(name).strip("`")


def _mysql_state(command, state, trx_state):
    if trx_state is not None and command == "Sleep":
        return "idle in transaction"
    if trx_state is not None:
        return f"{state or command} (in transaction)".strip()
    return "idle" if command == "Sleep" else (state or command)


@own_session.register
def _(engine: MySQLEngine, database):
    return database.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]


@terminate.register
def _(engine: MySQLEngine, database, session_id):
    database.execute_sql("KILL %s", (session_id,))


# SQLite -------------------------------------------------------------------------------------

UNREADABLE = (
    "{count} process(es) of other users could not be read (/proc/PID/fd): run db.locks "
    "as their user, or with the right to trace them (root with CAP_SYS_PTRACE), to see them"
)
SQLITE_WAITERS = (
    "SQLite has no lock queue: a process waiting for the write lock retries until its "
    "busy timeout and is not shown waiting; the holder is the process with the write lock"
)


@refuse_kill.register
def _(engine: SqliteEngine, session_id):
    raise ConfigError(
        f"db.locks --kill does not end processes on SQLite: stop process {session_id} "
        "yourself (kill, or close the program that has the file open)"
    )


@sessions.register
def _(engine: SqliteEngine, database):
    path = Path(database.database).resolve()
    files = {Path(f"{path}{suffix}"): kind for suffix, kind in SQLITE_FILES.items()}
    files[Path(f"{path}{MIGRATION_LOCK_SUFFIX}")] = "migration lock"
    opened, unreadable = _processes_with(files)
    locks = _file_locks({kind: file for file, kind in files.items()})
    found = [
        Session(
            pid,
            _owner(pid),
            _command_line(pid),
            None,
            "write transaction" if "write lock" in locks.get(pid, ()) else "open",
            holds=tuple(sorted(locks.get(pid, ()))),
            files=tuple(sorted(kinds, key=list(files.values()).index)),
        )
        for pid, kinds in sorted(opened.items())
    ]
    notes = [SQLITE_WAITERS] + ([UNREADABLE.format(count=unreadable)] if unreadable else [])
    return found, notes


def _processes_with(files):
    """Return ({pid: kinds of the files it has open}, how many processes were unreadable)."""
    wanted = {str(file): kind for file, kind in files.items()}
    opened, unreadable = {}, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except PermissionError:
            unreadable += (entry / "fd").exists()  # not one that exited meanwhile
            continue
        except OSError:  # gone meanwhile
            continue
        kinds = {wanted[link] for link in links if link in wanted}
        if kinds:
            opened[int(entry.name)] = kinds
    return opened, unreadable


def _file_locks(paths):
    """Return {pid: what it holds} from /proc/locks for the database's files."""
    inodes = {}
    for kind, path in paths.items():
        try:
            status = path.stat()
        except OSError:
            continue
        device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}"
        inodes[(device, status.st_ino)] = kind
    held = {}
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return held
    for line in lines:
        parts = line.split()
        if len(parts) < 8 or parts[1] == "->":  # "->": a lock being waited for
            continue
        kind, mode, pid, node, start = parts[1], parts[3], parts[4], parts[5], parts[6]
        device, _, inode = node.rpartition(":")
        file = inodes.get((device, int(inode)) if inode.isdigit() else None)
        if file is None or not pid.lstrip("-").isdigit():
            continue
        holding = _sqlite_lock(file, kind, mode, start)
        if holding:
            held.setdefault(int(pid), set()).add(holding)
    return held


def _sqlite_lock(file, kind, mode, start):
    """Return what one /proc/locks line means for SQLite, or None."""
    if file == "migration lock" and kind == "FLOCK":
        return "migration lock"
    if mode != "WRITE" or not start.isdigit():
        return None
    if file == "shm" and int(start) == WAL_WRITE_LOCK_BYTE:
        return "write lock"
    if file == "database" and int(start) in (PENDING_BYTE, RESERVED_BYTE, PENDING_BYTE + 2):
        return "write lock"  # RESERVED, PENDING or EXCLUSIVE: a writer
    return None


def _command_line(pid):
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    words = raw.rstrip(b"\0").decode(errors="replace").split("\0")
    words[0] = Path(words[0]).name  # the program by name: the line is shortened to fit
    return shortened(" ".join(words)) or None


def _owner(pid):
    import pwd

    try:
        uid = Path(f"/proc/{pid}").stat().st_uid
        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return None
