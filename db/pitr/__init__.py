"""Point-in-time recovery: continuous protection of the database, with the engines' own tools.

    protection = continuous_protection(target.engine)   # this engine's module
    protection.replicate(settings, say, init=False)     # runs until SIGTERM/Ctrl-C; say(event)
    span = protection.recoverable_range(settings)       # RecoverableRange(earliest, latest)
    moment = parse_moment("--to-time", "2026-11-30T14:01:00+01:00")

    # SQLite (WHOLE_SERVER False): a copy of the database, which db.restore puts in place
    with protection.restored_copy(settings, moment) as (path, span):   # None: the latest
        ...                                             # a private SQLite file, then deleted
    # PostgreSQL, MariaDB (WHOLE_SERVER True): the whole server, into a new data directory
    restored = protection.restore_server(settings, moment, data_dir, port=None)

Each engine protects itself with the tool the field trusts: ``sqlite.py`` runs Litestream,
which streams the WAL to a folder or S3; ``postgres.py`` runs pgBackRest, to which the
server archives its WAL and which takes the base backups; ``mysql.py`` runs mariadb-backup
and keeps the binary logs with mariadb-binlog. This package writes their configuration,
runs them and reads their answers, never ships WAL itself. What a SQLite restore does with
the copy it gets (checked, safety backup, atomic swap) is db.restore's own machinery
(db.backups), not repeated here. A server's point-in-time recovery restores every database
of the server (cluster): it goes into a new data directory, beside the live server, never
over it.

A time written without an offset (``2026-11-30T14:01``) is this machine's local time: the
person who lost a table at 14:02 reads 14:02 on their own clock. The moment restored is
always reported in UTC.
"""

import datetime
import functools
from dataclasses import dataclass
from pathlib import Path

from db.engines import MySQLEngine, PostgresEngine, SqliteEngine
from db.errors import BackupError, ConfigError


@dataclass(frozen=True)
class RecoverableRange:
    """The moments a replica can restore: from ``earliest`` to ``latest`` (aware, UTC)."""

    replica: str
    earliest: datetime.datetime
    latest: datetime.datetime
    # How far past ``latest`` a moment may still be in it (a tool that lists whole
    # seconds may hold up to a second more than it shows).
    precision: datetime.timedelta = datetime.timedelta(0)

    def describe(self):
        return f"{utc_text(self.earliest)} to {utc_text(self.latest)}"

    def require(self, moment):
        """Raise BackupError naming the range unless it holds ``moment`` (None: the
        latest, always held)."""
        if moment is not None and not self.earliest <= moment <= self.latest + self.precision:
            raise outside(moment, self)


@dataclass(frozen=True)
class Started:
    """db.replicate runs: ``tool`` protects ``source`` into ``replica``; ``detail`` says
    how often (e.g. "WAL every 1s", "a base backup every 1d")."""

    source: str
    replica: str
    tool: str
    detail: str


@dataclass(frozen=True)
class BaseBackupTaken:
    """db.replicate took a base backup ``label`` in ``seconds``."""

    label: str
    seconds: float


@dataclass(frozen=True)
class BaseBackupFailed:
    """db.replicate's base backup failed (``reason``); it is tried again next period."""

    reason: str


@dataclass(frozen=True)
class ServerRestore:
    """What a server's point-in-time recovery made: a data directory holding the server
    as it was at ``moment`` (None: the latest), from ``span``; ``url`` the server running
    on it (None when it was not started) or ``next_steps``, the commands that start it."""

    data_dir: Path
    moment: object
    span: RecoverableRange
    url: str | None = None
    next_steps: tuple = ()


def kept_count(settings):
    """Return db.base_backups_kept as a whole number of 1 or more; ConfigError otherwise."""
    text = str(settings.base_backups_kept).strip()
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"db.base_backups_kept must be a whole number, 1 or more, not {text!r}")
    return int(text)


def new_data_dir(path):
    """Make ``path`` the new folder (0700) a server restore fills and return it resolved:
    absent, or an empty folder; ConfigError naming it otherwise (never over a server's
    files), or when this user cannot make it."""
    folder = Path(path).expanduser().absolute()
    try:
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ConfigError(
                f"--data-dir {folder} is not empty: a point-in-time recovery makes a new "
                "data directory; name a new or empty folder"
            )
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--data-dir {folder}: {exc.strerror}") from None
    return folder


def require_free_port(port):
    """Raise ConfigError unless nothing listens on 127.0.0.1:``port``: a restored server
    is started and reached there, and another server in its place would be written into."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise ConfigError(
                f"--port {port} is taken on 127.0.0.1 (another server listens there): "
                "name a free port; nothing restored"
            ) from None


def outside(moment, span):
    """Return the BackupError of a moment the range ``span`` does not hold."""
    return BackupError(
        f"--to-time {utc_text(moment)} is outside what {span.replica} can restore: "
        f"{span.describe()} (UTC); nothing restored"
    )


@functools.singledispatch
def continuous_protection(engine):
    """Return the module that protects ``engine``'s databases continuously; ConfigError
    when there is none yet."""
    raise ConfigError(
        f"point-in-time recovery is not available on {engine.name} yet "
        "(db.backup takes snapshots meanwhile)"
    )


@continuous_protection.register
def _(engine: SqliteEngine):
    from db.pitr import sqlite

    return sqlite


@continuous_protection.register
def _(engine: PostgresEngine):
    from db.pitr import postgres

    return postgres


@continuous_protection.register
def _(engine: MySQLEngine):
    from db.pitr import mysql

    return mysql


def parse_moment(option, text):
    """Return the aware datetime of an ISO 8601 ``text`` (naive: local time); raise
    ConfigError naming ``option`` when it is not one."""
    cleaned = str(text).strip()
    if cleaned[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not read Z
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(cleaned)
        if moment.tzinfo is None:
            moment = moment.astimezone()  # local time, as the person at the terminal reads it
        return moment.astimezone(datetime.timezone.utc)
    except (ValueError, OverflowError):  # not a time, or one past the calendar's edge in UTC
        raise ConfigError(
            f"{option} {text!r} is not an ISO 8601 time: write e.g. 2026-11-30T14:01:00Z, "
            "2026-11-30T14:01:00+01:00, or 2026-11-30T14:01 (this machine's local time)"
        ) from None


def utc_text(moment):
    """Return an aware datetime as ISO 8601 UTC text with a Z (milliseconds when any)."""
    moment = moment.astimezone(datetime.timezone.utc)
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"
