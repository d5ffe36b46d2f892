"""SQLite's continuous protection: Litestream, configured from our settings.

    replicate(settings, say)             # litestream replicate, until SIGTERM/Ctrl-C
    recoverable_range(settings)          # litestream ltx: the first and last moments kept
    with restored_copy(settings, moment) as path:   # litestream restore [-timestamp]
        ...

``db.replica`` names the replica: a folder (``file://`` for Litestream) or an
``s3://bucket/path`` URL (credentials from the usual AWS_* variables, which Litestream
reads itself). ``db.replica_sync_interval`` is how often the WAL is shipped: the most a
crash of the machine can lose. Litestream runs with a configuration written for the run
(0600, in a private folder removed afterwards) and an environment holding only PATH,
HOME and the AWS_*/LITESTREAM_* variables. Its local state lives beside the database
(``.NAME-litestream``), as Litestream keeps it.
"""

import datetime
import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing, contextmanager
from pathlib import Path

from db.backups.sqlite import live_file
from db.errors import BackupError, ConfigError, ToolFailed
from db.pitr import RecoverableRange, Started, outside
from db.pitr.process import die_with_parent, stop_child, write_private

INSTALL_HINT = "pip install 'clonegallery-db[litestream]'"
REPLICA_SETTING = "db.replica in invoke.yaml (or INVOKE_DB_REPLICA)"
STOP_TIMEOUT_SECONDS = 30
LIST_TIMEOUT_SECONDS = 120
# Litestream's own answer to a time outside its range ("timestamp does not exist").
OUTSIDE_RANGE = "timestamp does not exist"
# The tables Litestream keeps in the database it replicates are named with this prefix.
LITESTREAM_TABLES = "_litestream_"
# A listing gives whole seconds: the latest moment may be up to one second past it.
LISTING_PRECISION = datetime.timedelta(seconds=1)
# In a folder replica: the path of the database it protects (see claim_replica).
SOURCE_RECORD = "clonegallery-source"


def replica_url(settings):
    """Return the database's replica as Litestream's URL: a place of its own, named after
    the database file, in the configured folder or S3 path (two databases given the same
    db.replica must not write over each other's WAL); ConfigError when none is configured."""
    replica = settings.replica
    if not replica:
        raise ConfigError(
            f"no replica is configured: set {REPLICA_SETTING} to a folder or s3://bucket/path"
        )
    name = live_file(settings.url).name
    if str(replica).startswith("s3://"):
        return f"{str(replica).rstrip('/')}/{name}"
    return (Path(replica).resolve() / name).as_uri()


def replicate(settings, say, init=False):
    """Run ``litestream replicate`` on the database until SIGTERM or Ctrl-C; ``say`` a
    Started event once it runs; return the stop signal's name. Litestream ending on its
    own raises ToolFailed with its last words. (``init``: nothing to set up, Litestream
    makes its replica.)"""
    from db import schedule

    url, live = replica_url(settings), live_file(settings.url)
    claim_replica(url, live)
    every = schedule.parse_duration("db.replica_sync_interval", settings.replica_sync_interval)
    interval = int(every.total_seconds())
    config = {
        "logging": {"level": "warn"},
        "dbs": [{"path": str(live), "replica": {"url": url, "sync-interval": f"{interval}s"}}],
    }
    with tempfile.TemporaryDirectory(prefix="clonegallery-litestream-") as folder:
        config_file, log = Path(folder) / "litestream.yml", Path(folder) / "litestream.log"
        write_private(config_file, json.dumps(config))  # JSON is YAML
        with (
            _replicating(live),
            open(log, "wb") as output,
            schedule.stop_on_signals() as stops,
        ):
            child = subprocess.Popen(
                [_binary(), "replicate", "-config", str(config_file), "-no-expand-env"],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=_environment(),
                preexec_fn=die_with_parent,
            )
            try:
                say(Started(str(live), _shown(url), "Litestream", f"WAL every {interval}s"))
                code = child.wait()
            except schedule.Stopped:
                stop_child(child, STOP_TIMEOUT_SECONDS)
                return stops.received
        stops.raise_if_received()  # a stop that arrived as Litestream was ending
        raise ToolFailed(f"litestream replicate ended on its own (exit {code}): {_last_words(log)}")


def claim_replica(url, live):
    """Record in a folder replica which database it protects, and refuse any other: two
    databases of one file name in different folders share the replica's name, and the
    Litestream that comes second never gets its commits into it, yet runs on, silent.
    (An S3 replica is not checked: name it per database.)"""
    if not url.startswith("file://"):
        return
    folder = Path(_shown(url))
    record = folder / SOURCE_RECORD
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not record.exists():
            record.write_text(f"{live}\n", encoding="utf-8")
            return
        owner = record.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as exc:
        raise ConfigError(f"the replica {folder}: {exc.strerror}") from None
    if owner != str(live):
        raise ConfigError(
            f"the replica {folder} protects another database ({owner}), not {live}: give "
            f"this one a replica of its own (db.replica), or, if it moved here, remove {record}"
        )


def recoverable_range(settings):
    """Return the RecoverableRange of the configured replica; BackupError when it holds
    nothing yet."""
    url = replica_url(settings)
    listed = _run(["ltx", "-json", "-level", "all", url], LIST_TIMEOUT_SECONDS)
    try:
        moments = [_moment(entry["timestamp"]) for entry in json.loads(listed.stdout)]
    except (ValueError, KeyError, TypeError) as exc:
        raise ToolFailed(f"litestream ltx gave an unreadable listing ({exc})") from None
    if not moments:
        raise BackupError(
            f"the replica {_shown(url)} holds nothing of the database yet "
            "(invoke db.replicate streams to it)"
        )
    return RecoverableRange(_shown(url), min(moments), max(moments), LISTING_PRECISION)


@contextmanager
def restored_copy(settings, moment=None):
    """Yield (the path of a private SQLite file holding the replica's state at
    ``moment`` (None: its latest), the RecoverableRange); the file is deleted afterwards.
    A moment outside the range raises BackupError naming the range."""
    span = recoverable_range(settings)
    span.require(moment)
    _refuse_while_replicating(live_file(settings.url))
    url = replica_url(settings)
    with tempfile.TemporaryDirectory(prefix="clonegallery-pitr-") as folder:
        copy = Path(folder) / live_file(settings.url).name
        at = ["-timestamp", moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")] if moment else []
        done = _run(["restore", "-o", str(copy), *at, url], None, check=False)
        if done.returncode != 0:
            if OUTSIDE_RANGE in done.stderr and moment is not None:
                raise outside(moment, span)
            raise ToolFailed(f"litestream restore failed: {_last_line(done)}; nothing restored")
        _without_litestream_tables(copy)
        yield copy, span


@contextmanager
def _replicating(live):
    """Hold the database's replicate lock while Litestream runs on it: a second
    db.replicate, or a restore that would swap the file under it, sees it taken."""
    try:
        handle = open(_lock_path(live), "a")  # noqa: SIM115 (held for the block)
    except OSError as exc:
        raise ConfigError(f"cannot lock {_lock_path(live)}: {exc.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"db.replicate already runs on {live}") from None
        yield


def _refuse_while_replicating(live):
    """Raise BackupError when db.replicate runs on ``live``: Litestream would go on
    following the replaced file, and nothing written after the restore would reach the
    replica, while db.replicate said all was well."""
    try:
        handle = open(_lock_path(live))  # noqa: SIM115
    except FileNotFoundError:
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                f"db.replicate runs on {live}: stop it first (it would go on protecting the "
                "replaced file, not the restored one), then start it again; nothing restored"
            ) from None


def _lock_path(live):
    return live.with_name(f"{live.name}.replicate.lock")


def _without_litestream_tables(path):
    """Make the restored file a database as db.restore takes one: without the tables
    Litestream keeps in a database it replicates (it makes them again when it replicates
    the restored one), and a single self-contained file (db.restore gives it the live
    database's own journal mode)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        names = [name for (name,) in tables if name.startswith(LITESTREAM_TABLES)]
        for name in names:
            connection.execute(f'DROP TABLE "{name}"')
        connection.execute("PRAGMA journal_mode = DELETE")


def _moment(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(
        datetime.timezone.utc
    )


def _shown(url):
    """Return the replica as the person configured it: a folder, or the S3 URL."""
    return url.removeprefix("file://") if url.startswith("file://") else url


def _binary():
    found = shutil.which("litestream") or _beside_python("litestream")
    if found is None:
        raise ToolFailed(f"point-in-time recovery on SQLite needs Litestream: {INSTALL_HINT}")
    return found


def _beside_python(name):
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else None


def _environment():
    """Return what Litestream may see: PATH, HOME and its storage credentials."""
    kept = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    kept.update({k: v for k, v in os.environ.items() if k.startswith(("AWS_", "LITESTREAM_"))})
    return kept


def _run(arguments, timeout, check=True):
    try:
        done = subprocess.run(
            [_binary(), *arguments],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=_environment(),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ToolFailed(f"litestream {arguments[0]} gave no answer in {timeout} s") from None
    if check and done.returncode != 0:
        raise ToolFailed(f"litestream {arguments[0]} failed: {_last_line(done)}")
    return done


def _last_line(done):
    lines = [line for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
    return lines[-1].removeprefix("Error: ") if lines else f"exit {done.returncode}"


def _last_words(log):
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].removeprefix("Error: ") if lines else "it said nothing"
