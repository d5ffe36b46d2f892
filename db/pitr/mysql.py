"""MariaDB's continuous protection: physical base backups with mariadb-backup, and the
server's binary logs kept as they are written, by mariadb-binlog.

    replicate(settings, say, init=False)    # until SIGTERM/Ctrl-C
    recoverable_range(settings)             # oldest base backup's end .. last binlog event
    restore_server(settings, moment, data_dir, port=None)   # a new server, as it was then

``db.replica`` is a folder on the database's host (mariadb-backup reads the server's data
directory, so db.replicate runs there, as a user who can read it)::

    binlog/binlog.000042              the binary logs, byte for byte (mariadb-binlog --raw)
    base/20261130T120000Z/            a base backup, as mariadb-backup --backup left it
        clonegallery-base.json        written last: when it ended (UTC), its binlog position
    base/.partial-20261130T130000Z/   a backup being taken: never counted, removed at start

A base backup is taken at start and every ``db.base_backup_interval`` (the newest
``db.base_backups_kept`` kept, and the binary logs from the oldest of them on). A restore
copies the newest base backup that ended before the moment, prepares it, starts a private
``mariadbd`` on it and replays the binary logs from the backup's position up to the
moment. Binary log events carry whole seconds: a restore to 14:01:30.6 replays what
was written before 14:01:30, never anything after the moment.

The server must keep a binary log (``log_bin``, ``binlog_format=ROW``, ``server_id``):
replicate says which my.cnf lines to add when it does not. The tools get their
credentials through a private option file (db.clients.mysql_options_file), never argv,
and read no other option file (``--defaults-file``): the machine's my.cnf may describe
another server.
"""

import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from db.clients import (
    MYSQL_CLIENT_PACKAGE,
    MYSQL_CLIENT_TOOLS,
    find_tool,
    mysql_options_file,
    tool_complaint,
    tool_environment,
)
from db.config import mask_url
from db.errors import BackupError, ConfigError, DbError, ToolFailed
from db.pitr import (
    BaseBackupFailed,
    BaseBackupTaken,
    RecoverableRange,
    ServerRestore,
    Started,
    kept_count,
    new_data_dir,
    outside,
    require_free_port,
    utc_text,
)
from db.pitr.process import die_with_parent, stop_child, write_private

WHOLE_SERVER = True
BACKUP_PACKAGE = "mariadb-backup (Debian/Ubuntu: apt install mariadb-backup)"
SERVER_PACKAGE = "the MariaDB server (Debian/Ubuntu: apt install mariadb-server)"
REPLICA_SETTING = "db.replica in invoke.yaml (or INVOKE_DB_REPLICA)"
BASE, BINLOG = "base", "binlog"
PARTIAL = ".partial-"
LABEL_FORMAT = "%Y%m%dT%H%M%SZ"
LABEL = re.compile(r"^\d{8}T\d{6}Z$")
RECORD = "clonegallery-base.json"
# The file where mariadb-backup writes the binlog position: newer releases name it after
# themselves, older ones (10.11 here) after xtrabackup.
BINLOG_INFO = ("mariadb_backup_binlog_info", "xtrabackup_binlog_info")
BINLOG_FILE = re.compile(r"\.\d{6,}$")
# A binary log's own name, as the server gives it (no folder in it).
BINLOG_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*\.\d{6,}")
# An event's header as mariadb-binlog prints it: "#261130 12:12:06 server id 1 ...".
EVENT_TIME = re.compile(r"^#(\d{6}) +(\d{1,2}:\d{2}:\d{2}) server id ")
# Events carry whole seconds: a moment may lie up to a second past the last one shown.
EVENT_PRECISION = datetime.timedelta(seconds=1)
STOP_TIMEOUT_SECONDS = 60
START_TIMEOUT_SECONDS = 120
SERVER_PROGRAMS = ("mariadbd", "mysqld")
SERVER_FOLDERS = ("/usr/sbin", "/usr/local/sbin", "/usr/libexec")
TOOLS = "mariadb-binlog and mariadb-backup"
# A base backup that failed is tried again this much later (or at the next interval).
RETRY = datetime.timedelta(minutes=1)
# log_bin_trust_function_creators: with a binary log, MariaDB lets only SUPER create
# triggers otherwise, and the gallery's triggers are made by db.migrate and by the account
# db.backup verifies with (error 1419 "binary logging is enabled").
MY_CNF_LINES = (
    "[mariadb]\nlog_bin=mariadb-bin\nbinlog_format=ROW\nserver_id=1\n"
    "log_bin_trust_function_creators=1"
)


@dataclass(frozen=True)
class BaseBackup:
    """A complete base backup in the replica: its folder, when it ended (UTC), and the
    binary log position its data reaches (the replay starts there)."""

    path: Path
    ended: datetime.datetime
    binlog_file: str
    binlog_position: int


# --- db.replicate --------------------------------------------------------------------------


def replicate(settings, say, init=False):
    """Keep the server's binary logs in the replica and take a base backup now and every
    db.base_backup_interval, until SIGTERM or Ctrl-C; ``say`` Started once, then
    BaseBackupTaken (or BaseBackupFailed, tried again later) after each backup; return
    the stop signal's name. ``init`` creates the replica's folders. mariadb-binlog
    ending on its own (the server went away) raises ToolFailed with its last words."""
    from db import schedule

    every = schedule.parse_duration("db.base_backup_interval", settings.base_backup_interval)
    kept = kept_count(settings)
    folder = replica_folder(settings, init)
    first = binlog_to_copy(folder, settings.url)
    _discard_partial(folder)
    complete_base_backups(folder)  # a damaged record is refused before anything starts
    detail = f"the binary logs as written, a base backup every {schedule.format_age(every)}"
    with mysql_options_file(settings.url) as options, schedule.stop_on_signals() as stops:
        with _binlog_copier(options, folder, first) as copier:
            try:
                say(Started(mask_url(settings.url), str(folder), TOOLS, detail))
                _back_up_while_copying(copier, options, folder, every, kept, say, stops)
            except schedule.Stopped:
                return stops.received
        stops.raise_if_received()  # a stop that arrived as mariadb-binlog was ending
        raise ToolFailed(
            f"mariadb-binlog stopped keeping the binary logs (exit {copier.process.returncode}): "
            f"{copier.last_words()}"
        )


def _back_up_while_copying(copier, options, folder, every, kept, say, stops):
    """Take a base backup whenever one is due (keeping db.base_backups_kept) for as long
    as mariadb-binlog copies the binary logs; a backup that fails (the server
    restarting, a full disk) is reported and tried again RETRY later."""
    due = time.monotonic() + _seconds_to_next_base_backup(folder, every)
    while copier.process.poll() is None:
        if time.monotonic() < due:
            with suppress(subprocess.TimeoutExpired):
                copier.process.wait(timeout=max(0.0, due - time.monotonic()))
            continue
        due = time.monotonic() + every.total_seconds()
        try:
            taken = take_base_backup(options, folder)
            prune(folder, kept)
            say(taken)  # once the replica is as it stays
        except (DbError, OSError) as exc:
            stops.raise_if_received()  # it failed because of the stop
            say(BaseBackupFailed(str(exc)))
            due = time.monotonic() + min(every, RETRY).total_seconds()


def replica_folder(settings, init=False):
    """Return the replica folder (created with ``init``); ConfigError when none is
    configured, when it is not a folder, or when it is not set up yet."""
    folder = _replica_path(settings)
    if init:
        for part in (BASE, BINLOG):
            (folder / part).mkdir(parents=True, exist_ok=True)
    elif not ((folder / BASE).is_dir() and (folder / BINLOG).is_dir()):
        raise ConfigError(
            f"the replica {folder} is not set up: run invoke db.replicate --init once"
        )
    return folder


def binlog_to_copy(folder, url):
    """Return the binary log to copy from: the newest kept (resuming), else the one the
    server writes now. ConfigError giving the my.cnf lines to add when the server keeps
    no binary log, or saying what to do when it no longer has the one to resume from."""
    from db.engines import open_database

    database = open_database(url, create=False)
    try:
        ((log_bin, server_id, trusted),) = database.execute_sql(
            "SELECT @@log_bin, @@server_id, @@log_bin_trust_function_creators"
        )
        on_server = [row[0] for row in database.execute_sql("SHOW BINARY LOGS")] if log_bin else []
    finally:
        database.close()
    lines = " / ".join(MY_CNF_LINES.splitlines())
    if not log_bin or not server_id or not on_server:
        raise ConfigError(
            f"{mask_url(url)} keeps no binary log, which point-in-time recovery replays: "
            f"add these lines to its my.cnf and restart it: {lines}"
        )
    if not trusted:
        raise ConfigError(
            f"{mask_url(url)} keeps a binary log but lets only SUPER create triggers "
            "(db.migrate and db.backup's check create the gallery's): add "
            "log_bin_trust_function_creators=1 to its my.cnf (with the others: "
            f"{lines}) and restart it"
        )
    resume = newest_binlog(folder)
    if resume is not None and resume not in on_server:
        raise ConfigError(
            f"the server no longer has the binary log {resume} the replica {folder} stops "
            "at (purged while db.replicate was not running): the replica cannot go on "
            "without a gap; move it aside and run invoke db.replicate --init"
        )
    return resume or on_server[-1]


def take_base_backup(options, folder):
    """Take a base backup with mariadb-backup into the replica (a partial folder renamed
    into place once complete: a killed backup never looks complete); return the
    BaseBackupTaken event."""
    began = time.monotonic()
    label = _utc_now().strftime(LABEL_FORMAT)
    partial = folder / BASE / f"{PARTIAL}{label}"
    try:
        _run_backup_tool(f"--defaults-file={options}", "--backup", f"--target-dir={partial}")
        binlog_file, position = _binlog_position(partial)
        record = {
            "ended": utc_text(_utc_now()),
            "binlog_file": binlog_file,
            "binlog_position": position,
        }
        write_private(partial / RECORD, json.dumps(record))
        partial.rename(folder / BASE / label)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return BaseBackupTaken(label, time.monotonic() - began)


def prune(folder, kept):
    """Keep the newest ``kept`` base backups and the binary logs from the oldest of them on."""
    bases = complete_base_backups(folder)
    for base in bases[:-kept]:
        shutil.rmtree(base.path)
    oldest = _binlog_number(bases[-kept:][0].binlog_file) if bases else None
    for log in binlog_files(folder):
        if oldest is not None and _binlog_number(log.name) < oldest:
            log.unlink()


# --- db.backups --pitr ---------------------------------------------------------------------


def recoverable_range(settings):
    """Return the RecoverableRange of the replica: from the end of its oldest base backup
    to the last event of its binary logs; BackupError when it holds nothing yet."""
    folder = _replica_path(settings)
    bases = complete_base_backups(folder)
    if not bases:
        raise BackupError(
            f"the replica {folder} holds nothing yet (invoke db.replicate takes a base "
            "backup there and keeps the binary logs)"
        )
    # The last event's own time, read with mariadb-binlog (not the file's mtime, which
    # moves when the copy is written, later than the commit it holds).
    moments = [bases[-1].ended, *filter(None, [last_event_time(binlog_files(folder))])]
    return RecoverableRange(str(folder), bases[0].ended, max(moments), EVENT_PRECISION)


def complete_base_backups(folder):
    """Return the complete base backups of the replica folder, oldest first."""
    found = []
    for path in sorted((folder / BASE).glob("*")):
        record = path / RECORD
        if LABEL.match(path.name) and record.is_file():
            found.append(_read_base_backup(path))
    return sorted(found, key=lambda base: base.ended)


def _read_base_backup(path):
    """Return the BaseBackup whose record is in ``path``; BackupError naming it when the
    record is not one db.replicate writes (the replica is a folder anyone may change: a
    record naming ``../../etc/passwd`` must not reach mariadb-binlog)."""
    try:
        kept = json.loads((path / RECORD).read_text(encoding="utf-8"))
        base = BaseBackup(
            path, _utc(kept["ended"]), kept["binlog_file"], int(kept["binlog_position"])
        )
        if base.ended.tzinfo is None or base.binlog_position < 0:
            raise ValueError("out of range")
        if not (isinstance(base.binlog_file, str) and BINLOG_NAME.fullmatch(base.binlog_file)):
            raise ValueError(f"binlog_file {base.binlog_file!r}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError(
            f"the base backup {path} is damaged (its {RECORD} is unreadable: {exc}); "
            f"move it out of the replica, db.replicate takes a new one"
        ) from None
    return base


def binlog_files(folder):
    """Return the binary log files kept in the replica, in the order the server wrote them."""
    logs = [p for p in (folder / BINLOG).glob("*") if BINLOG_FILE.search(p.name)]
    return sorted(logs, key=lambda path: _binlog_number(path.name))


def newest_binlog(folder):
    """Return the name of the newest binary log kept (copying resumes there), or None."""
    logs = binlog_files(folder)
    return logs[-1].name if logs else None


def last_event_time(logs):
    """Return the time (UTC) of the last event in the newest of ``logs`` holding one, or None."""
    for log in reversed(logs):
        if found := _last_event_in(log):
            day, clock = found.groups()
            moment = datetime.datetime.strptime(f"{day} {clock}", "%y%m%d %H:%M:%S")
            return moment.replace(tzinfo=datetime.timezone.utc)
    return None


def _last_event_in(log):
    """Return the EVENT_TIME match of the last event mariadb-binlog shows in ``log``
    (read as a stream: a binary log may hold a gigabyte), or None."""
    last = None
    reader = subprocess.Popen(
        [_binlog_tool(), "--no-defaults", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the file being written may end in half an event
        env={**tool_environment(), "TZ": "UTC"},  # it prints event times in local time
    )
    with reader:
        for line in reader.stdout:
            if line.startswith(b"#") and (found := EVENT_TIME.match(line.decode(errors="replace"))):
                last = found
    return last


# --- db.restore --to-time ------------------------------------------------------------------


def restore_server(settings, moment, data_dir, port=None):
    """Restore the whole server as it was at ``moment`` (None: the latest the replica
    holds) into the new folder ``data_dir``: with ``port``, leave it running on
    127.0.0.1:port; return the ServerRestore. A moment outside the range raises
    BackupError naming it, before anything is created."""
    span = recoverable_range(settings)
    span.require(moment)
    replica = Path(span.replica)
    base = _base_for(complete_base_backups(replica), moment, span)
    if port is not None:
        require_free_port(port)
    made = not Path(data_dir).expanduser().exists()
    folder = new_data_dir(data_dir)
    try:
        _unpack(base, folder)
        server = _start_server(folder, port or free_port(), keep=port is not None)
        try:
            url = _url_at(settings.url, server.port)
            _wait_until_ready(server, url)
            _replay(replica, base, moment, url)
        except BaseException:
            stop_child(server.process, STOP_TIMEOUT_SECONDS)
            raise
    except BaseException:
        _remove_restored(folder, made)
        raise
    if port is not None:
        return ServerRestore(folder, moment, span, url=url)
    stop_child(server.process, STOP_TIMEOUT_SECONDS)
    return ServerRestore(folder, moment, span, next_steps=_next_steps(folder))


@dataclass
class _Server:
    process: subprocess.Popen
    port: int
    folder: Path


def _base_for(bases, moment, span):
    """Return the newest base backup that ended at or before ``moment`` (None: the newest)."""
    fitting = [base for base in bases if moment is None or base.ended <= moment]
    if not fitting:
        raise outside(moment, span)
    return fitting[-1]


def _unpack(base, folder):
    """Put a prepared copy of ``base`` into the new ``folder`` (the replica's copy stays
    as it was: --prepare changes the files it works on)."""
    with tempfile.TemporaryDirectory(prefix=".clonegallery-prepare-", dir=folder.parent) as work:
        prepared = Path(work) / "base"
        shutil.copytree(base.path, prepared)
        (prepared / RECORD).unlink()
        _run_backup_tool("--no-defaults", "--prepare", f"--target-dir={prepared}")
        # --move-back, not --copy-back: the prepared files are our own copy, on the same
        # file system as the new data directory, so they need not be copied twice.
        _run_backup_tool(
            "--no-defaults", "--move-back", f"--target-dir={prepared}", f"--datadir={folder}"
        )


def _start_server(folder, port, keep):
    """Start mariadbd on the data directory ``folder``, on 127.0.0.1:``port`` (its socket,
    pid file and error log inside it); ``keep``: a server that outlives us."""
    command = [
        _server_program(),
        "--no-defaults",  # the machine's my.cnf describes its own server, not this one
        f"--datadir={folder}",
        # Relative to the data directory (mariadbd works there): a socket's path has
        # at most 107 bytes, and the data directory's own may be long.
        "--socket=mysqld.sock",
        f"--port={port}",
        "--bind-address=127.0.0.1",
        "--pid-file=mysqld.pid",
        "--log-error=mysqld.err",
    ]
    if os.geteuid() == 0:
        # As root mariadbd insists on being told whom to run as; the restored files
        # are root's, in a folder the mysql user may not even reach.
        command.append("--user=root")
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=tool_environment(),
        start_new_session=keep,  # a kept server ignores the Ctrl-C meant for us
        preexec_fn=None if keep else die_with_parent,
    )
    return _Server(process, port, folder)


def _wait_until_ready(server, url):
    """Wait until the server takes connections; ToolFailed with its error log's last
    words when it ends first or does not answer in time."""
    from db.engines import open_database
    from db.errors import DbError

    maintenance = _url_at(url, server.port, database="information_schema")
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        database = None
        if server.process.poll() is None:  # else the port may answer for another server
            with suppress(DbError):
                database = open_database(maintenance, create=False)
        if database is not None:
            _require_own(server, database)
            return
        if server.process.poll() is not None or time.monotonic() > deadline:
            log = server.folder / "mysqld.err"
            words = log.read_bytes() if log.exists() else b""
            raise ToolFailed(tool_complaint("mariadbd", words)) from None
        time.sleep(0.1)


def _require_own(server, database):
    """Close ``database``; ToolFailed unless it is the server started on ``server.folder``:
    the binary logs must never be replayed into another server that holds the port."""
    try:
        ((datadir,),) = database.execute_sql("SELECT @@datadir")
    finally:
        database.close()
    if Path(datadir).resolve() != server.folder.resolve():
        raise ToolFailed(
            f"port {server.port} answers for another server (data directory {datadir}): "
            "nothing replayed; name a free --port"
        )


def _replay(replica, base, moment, url):
    """Replay the kept binary logs from the base backup's position up to ``moment``
    (None: all of them) into the server at ``url``, through the mariadb client."""
    logs = [
        log
        for log in binlog_files(replica)
        if _binlog_number(log.name) >= _binlog_number(base.binlog_file)
    ]
    if not logs or logs[0].name != base.binlog_file:
        raise BackupError(
            f"the replica {replica} lacks the binary log {base.binlog_file} that its base "
            f"backup {base.path.name} continues from; nothing restored"
        )
    # mariadb-binlog reads --stop-datetime in its own time zone, in whole seconds: the
    # second the moment falls in is left out, as events of it may come after the moment.
    stop = [f"--stop-datetime={moment:%Y-%m-%d %H:%M:%S}"] if moment else []
    reader = [_binlog_tool(), "--no-defaults", f"--start-position={base.binlog_position}", *stop]
    reader += [str(log) for log in logs]
    client = find_tool(*MYSQL_CLIENT_TOOLS, package=MYSQL_CLIENT_PACKAGE)
    with (
        mysql_options_file(url) as options,
        tempfile.TemporaryFile() as read_errors,
        tempfile.TemporaryFile() as apply_errors,
    ):
        reading = subprocess.Popen(
            reader,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=read_errors,
            env={**tool_environment(), "TZ": "UTC"},
        )
        applying = None
        try:
            applying = subprocess.Popen(
                [client, f"--defaults-file={options}", "--binary-mode"],
                stdin=reading.stdout,
                stdout=subprocess.DEVNULL,
                stderr=apply_errors,
                env=tool_environment(),
            )
            reading.stdout.close()  # the client alone reads it now
            applied, read = applying.wait(), reading.wait()
        except BaseException:
            for process in (reading, applying):
                if process is not None:
                    process.kill()
                    process.wait()
            raise
        for code, tool, errors in ((read, reader[0], read_errors), (applied, client, apply_errors)):
            if code != 0:
                errors.seek(0)
                raise ToolFailed(f"{tool_complaint(tool, errors.read())}; nothing restored")


def _remove_restored(folder, made):
    """Leave ``folder`` as it was before a failed restore: gone, or empty."""
    if made:
        shutil.rmtree(folder, ignore_errors=True)
    elif folder.exists():
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _next_steps(folder):
    return (
        f"chown -R mysql:mysql {folder}",
        f"mariadbd --no-defaults --user=mysql --datadir={folder} --port=3307 "
        f"--bind-address=127.0.0.1 --socket={folder}/mysqld.sock",
    )


# --- helpers -------------------------------------------------------------------------------


@contextmanager
def _binlog_copier(options, folder, first):
    """Run mariadb-binlog copying the server's binary logs, from ``first`` on, into the
    replica as they are written; stopped on the way out."""
    command = [
        _binlog_tool(),
        f"--defaults-file={options}",
        "--read-from-remote-server",
        "--raw",
        "--stop-never",
        f"--result-file={folder / BINLOG}/",
        first,
    ]
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=tool_environment(),
            preexec_fn=die_with_parent,
        )
        copier = _Copier(process, errors)
        try:
            yield copier
        finally:
            stop_child(process, STOP_TIMEOUT_SECONDS)


@dataclass
class _Copier:
    process: subprocess.Popen
    errors: object

    def last_words(self):
        self.errors.seek(0)
        return tool_complaint("mariadb-binlog", self.errors.read()).split(": ", 1)[1]


def _run_backup_tool(*arguments):
    """Run mariadb-backup (killed with us, or when a stop signal interrupts it); raise
    ToolFailed with its last words when it fails."""
    tool = find_tool("mariadb-backup", "mariabackup", package=BACKUP_PACKAGE)
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [tool, *arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=tool_environment(),
            preexec_fn=die_with_parent,
        )
        try:
            code = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
        if code != 0:
            errors.seek(0)
            raise ToolFailed(tool_complaint(tool, errors.read()))


def _binlog_position(backup):
    """Return (file, position) of the binary log a base backup's data reaches."""
    for name in BINLOG_INFO:
        info = backup / name
        if info.is_file():
            fields = info.read_text(encoding="utf-8").split()
            return fields[0], int(fields[1])
    raise ToolFailed(
        f"mariadb-backup recorded no binary log position in {backup.name} "
        "(is the server's log_bin on?)"
    )


def _seconds_to_next_base_backup(folder, every):
    bases = complete_base_backups(folder)
    if not bases:
        return 0
    return (bases[-1].ended + every - _utc_now()).total_seconds()


def _discard_partial(folder):
    """Remove what a killed db.replicate left of a base backup in the making."""
    for partial in (folder / BASE).glob(f"{PARTIAL}*"):
        shutil.rmtree(partial, ignore_errors=True)


def _replica_path(settings):
    replica = settings.replica
    if not replica:
        raise ConfigError(f"no replica is configured: set {REPLICA_SETTING} to a folder")
    if "://" in str(replica):
        raise ConfigError(
            f"db.replica {replica} is not a folder: on MariaDB the replica is a folder on "
            "the database's host (mariadb-backup reads the server's files)"
        )
    return Path(replica).expanduser().resolve()


def _url_at(url, port, database=None):
    """Return ``url`` pointed at 127.0.0.1:``port`` (and ``database``), same credentials."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    path = f"/{database}" if database else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def free_port():
    """Return a TCP port nobody listens on at the moment."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _binlog_tool():
    return find_tool("mariadb-binlog", "mysqlbinlog", package=MYSQL_CLIENT_PACKAGE)


def _server_program():
    for name in SERVER_PROGRAMS:
        found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SERVER_FOLDERS))
        if found:
            return found
    raise ConfigError(f"mariadbd was not found: install {SERVER_PACKAGE}")


def _binlog_number(name):
    return int(name.rsplit(".", 1)[1])


def _utc(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _utc_now():
    return datetime.datetime.now(datetime.timezone.utc)
