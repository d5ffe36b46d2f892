"""PostgreSQL's continuous protection: pgBackRest, to which the server archives its WAL and
which takes the base backups.

    replicate(settings, say, init)        # checks archiving, then a base backup every interval
    recoverable_range(settings)           # pgbackrest info, and the WAL archived since
    restore_server(settings, moment, data_dir, port)   # pgbackrest restore, into a new folder

``db.replica`` is the pgBackRest repository (repo1-path; S3 and the rest of pgBackRest's
options come from its own PGBACKREST_* variables or pgbackrest.conf, which pgBackRest
reads itself), ``db.stanza`` the stanza. The server ships each WAL segment there itself,
through its ``archive_command``: db.replicate checks that it does, and when it does not,
says the exact ``postgresql.conf`` lines. It then takes a full base backup whenever the
newest is older than ``db.base_backup_interval``, keeping ``db.base_backups_kept``.

pgBackRest reads the server's data directory and reaches it on its Unix socket: db.replicate
runs on the database's host (or in a container sharing its data and socket volumes), as
the user who owns the data (postgres). A point-in-time recovery restores the whole server
(cluster) into a new data directory, with archiving off so that it never writes into the
live server's repository; with a port, the toolkit starts it there and waits until it has
replayed up to the moment and promoted itself, else it prints the commands that do.
"""

import datetime
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from db import schedule
from db.clients import find_tool, libpq_environment, url_parts
from db.config import mask_url
from db.engines import open_database
from db.engines.base import database_name_of
from db.errors import BackupError, ConfigError, ToolFailed, printable
from db.pitr import (
    BaseBackupFailed,
    BaseBackupTaken,
    RecoverableRange,
    ServerRestore,
    Started,
    kept_count,
    new_data_dir,
    require_free_port,
)
from db.pitr.process import die_with_parent, stop_child

WHOLE_SERVER = True
PACKAGE = "pgBackRest (Debian/Ubuntu: apt install pgbackrest)"
STANZA_NAME = re.compile(r"[A-Za-z0-9_-]+")
# How long pgbackrest check waits for a WAL segment to arrive, and how much longer for each
# segment the server has yet to archive before it (a busy server whose archive_command
# failed until the stanza existed has a backlog: 170 segments after a million rows).
CHECK_TIMEOUT_SECONDS = 60
CHECK_SECONDS_PER_WAITING_SEGMENT = 2
STOP_TIMEOUT_SECONDS = 30
PROMOTE_TIMEOUT_SECONDS = 600  # replaying the WAL up to the moment, then promoting
# How often db.replicate looks whether a base backup is due (at most).
TICK = datetime.timedelta(minutes=1)
# pgBackRest's info status codes of a stanza that is not (fully) created.
MISSING_STANZA = {1, 3}
# How many archived segments, newest first, are read for the last commit before giving up.
SEGMENTS_READ = 4
COMMIT_LINE = re.compile(r"desc: COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
SEGMENT_NAME = re.compile(r"([0-9A-F]{24})-[0-9a-f]+(\.gz|\.lz4|\.zst|\.bz2)?$")


class Server:
    """What pgBackRest needs to know of the running server, read from the server."""

    def __init__(self, url):
        database = open_database(url, create=False)
        try:
            settings = {
                name: database.execute_sql(f"SHOW {name}").fetchone()[0]
                for name in (
                    "data_directory", "unix_socket_directories", "port",
                    "archive_mode", "archive_command", "wal_level",
                )
            }  # fmt: skip
        finally:
            database.close()
        self.url = url
        self.data_dir = settings["data_directory"]
        self.socket_dir = settings["unix_socket_directories"].split(",")[0].strip()
        self.port = int(settings["port"])
        self.archive_mode = settings["archive_mode"]
        self.archive_command = settings["archive_command"]
        self.wal_level = settings["wal_level"]

    def options(self):
        """Return pgBackRest's options that reach this server."""
        user = _user(self.url)
        return [
            f"--pg1-path={self.data_dir}",
            f"--pg1-port={self.port}",
            f"--pg1-socket-path={self.socket_dir}",
            f"--pg1-user={user}",
        ]

    def require_readable_here(self):
        """Raise ConfigError unless this process runs where the data directory is, as its
        owner: pgBackRest reads it, and writes the repository the server's own
        archive_command (run by that owner) writes too."""
        try:
            owner = os.stat(self.data_dir).st_uid
        except FileNotFoundError:
            raise ConfigError(
                f"the server's data directory {self.data_dir} is not on this machine: "
                "pgBackRest reads it, so db.replicate runs on the database's host (or in a "
                "container that mounts it)"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"the server's data directory {self.data_dir}: {exc.strerror}"
            ) from None
        if owner != os.geteuid():
            raise ConfigError(
                f"db.replicate runs as the owner of the data directory {self.data_dir} "
                f"({_user_name(owner)}), whose archive_command writes the same repository: "
                f"e.g. runuser -u {_user_name(owner)} -- invoke db.replicate"
            )

    def segments_waiting(self):
        """Return how many WAL segments the server has yet to archive (its .ready files)."""
        try:
            return sum(1 for _ in Path(self.data_dir, "pg_wal", "archive_status").glob("*.ready"))
        except OSError:
            return 0

    def archives_to(self, stanza):
        """Whether the server archives its WAL with pgBackRest into ``stanza``."""
        command = self.archive_command
        return (
            self.archive_mode in ("on", "always")
            and self.wal_level != "minimal"
            and "pgbackrest" in command
            and "archive-push" in command
            and re.search(rf"--stanza[= ]{re.escape(stanza)}(\s|$)", command) is not None
        )


# --- db.replicate -------------------------------------------------------------------------


def replicate(settings, say, init=False):
    """Check that the server archives to the repository (with ``init``, create the stanza
    first), then take a base backup whenever one is due, until SIGTERM or Ctrl-C; return
    the stop signal's name."""
    repository, stanza = repository_of(settings), stanza_of(settings)
    every = schedule.parse_duration("db.base_backup_interval", settings.base_backup_interval)
    kept = kept_count(settings)
    server = Server(settings.url)
    server.require_readable_here()
    if not server.archives_to(stanza):
        raise ConfigError(not_archiving(server, repository, stanza))
    if init:
        create_stanza(settings, server)
    elif not stanza_exists(settings):
        raise ConfigError(
            f"the pgBackRest stanza {stanza} is not in {repository}: "
            "run invoke db.replicate --init once"
        )
    waiting = server.segments_waiting()
    timeout = CHECK_TIMEOUT_SECONDS + CHECK_SECONDS_PER_WAITING_SEGMENT * waiting
    _pgbackrest(settings, ["check", f"--archive-timeout={timeout}"], server, timeout=timeout + 60)
    say(
        Started(
            mask_url(settings.url),
            repository,
            "pgBackRest",
            f"stanza {stanza}: "
            f"WAL archived by the server, a base backup every {schedule.format_age(every)}",
        )
    )

    def back_up_if_due():
        if _newest_backup_age(settings) >= every:
            say(take_base_backup(settings, server, kept))

    with schedule.stop_on_signals() as stops:
        try:
            schedule.run_every(
                min(every, TICK),
                back_up_if_due,
                lambda error: say(BaseBackupFailed(str(error))),
                stops,
            )
        except schedule.Stopped:
            return stops.received


def not_archiving(server, repository, stanza):
    """Return the ConfigError text of a server that does not archive to the stanza: the
    lines that make it."""
    lines = [
        "wal_level = replica",
        "archive_mode = on",
        f"archive_command = {conf_value(archive_command(repository, stanza, server.data_dir))}",
    ]
    return (
        f"the server does not archive its WAL to the pgBackRest stanza {stanza} (archive_mode "
        f"{server.archive_mode}, archive_command {server.archive_command or 'empty'!r}); add "
        "to its postgresql.conf, restart it, then run invoke db.replicate --init:\n"
        + "\n".join(f"    {line}" for line in lines)
    )


def archive_command(repository, stanza, data_dir):
    """Return the archive_command that ships the server's WAL into the stanza (a shell
    command: the server runs it with sh, so the folders are quoted for it)."""
    return (
        f"pgbackrest --stanza={stanza} --repo1-path={shlex.quote(str(repository))} "
        f"--pg1-path={shlex.quote(str(data_dir))} archive-push %p"
    )


def conf_value(text):
    """Return ``text`` as a postgresql.conf string value (quoted, its quotes doubled)."""
    return "'" + str(text).replace("'", "''") + "'"


def create_stanza(settings, server):
    """Create the repository folder and the stanza (a stanza that exists is left as it is)."""
    repository = Path(repository_of(settings))
    if "://" not in str(repository):
        repository.mkdir(mode=0o750, parents=True, exist_ok=True)
    _pgbackrest(settings, ["stanza-create"], server)


def stanza_exists(settings):
    """Whether the stanza is in the repository."""
    return _stanza_info(settings)["status"]["code"] not in MISSING_STANZA


def take_base_backup(settings, server, kept):
    """Take a full base backup (an immediate checkpoint: no wait for the next one); the
    newest ``kept`` are kept. Return the BaseBackupTaken."""
    started = time.monotonic()
    _pgbackrest(
        settings,
        ["backup", "--type=full", "--start-fast", f"--repo1-retention-full={kept}"],
        server,
        timeout=None,
    )
    newest = max(_stanza_info(settings).get("backup", []), key=lambda b: b["timestamp"]["stop"])
    return BaseBackupTaken(newest["label"], time.monotonic() - started)


def _newest_backup_age(settings):
    backups = _stanza_info(settings).get("backup", [])
    if not backups:
        return datetime.timedelta.max
    newest = max(backup["timestamp"]["stop"] for backup in backups)
    return datetime.timedelta(seconds=max(0.0, time.time() - newest))


# --- the range, and restoring ---------------------------------------------------------------


def recoverable_range(settings):
    """Return the RecoverableRange of the stanza: from the end of its oldest base backup to
    the last commit in the WAL archived since (read with pg_waldump)."""
    repository, stanza = repository_of(settings), stanza_of(settings)
    info = _stanza_info(settings)
    backups = info.get("backup", [])
    if not backups:
        raise BackupError(
            f"the pgBackRest stanza {stanza} in {repository} holds no base backup yet "
            "(invoke db.replicate takes them)"
        )
    # A backup is consistent once it has ended: the second after its end, to be sure.
    earliest = _epoch(min(backup["timestamp"]["stop"] for backup in backups) + 1)
    newest_end = _epoch(max(backup["timestamp"]["stop"] for backup in backups) + 1)
    latest = max(newest_end, _last_archived_commit(settings) or newest_end)
    return RecoverableRange(f"{repository} (stanza {stanza})", earliest, latest)


def restore_server(settings, moment, data_dir, port=None):
    """Restore the whole server as it was at ``moment`` (None: the latest) into the new
    folder ``data_dir``; with ``port``, start it there and wait until it has promoted
    itself. Return the ServerRestore."""
    if port is not None and os.geteuid() == 0:
        raise ConfigError(
            "PostgreSQL does not run as root: run db.restore --port as the user who will own "
            "the restored server (e.g. postgres), or without --port"
        )
    if port is not None:
        require_free_port(port)
    span = recoverable_range(settings)
    span.require(moment)
    folder = new_data_dir(data_dir)
    target = ["--type=default"]
    if moment is not None:
        text = moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
        target = ["--type=time", f"--target={text}+00", "--target-action=promote"]
    try:
        _pgbackrest(
            settings,
            ["restore", "--archive-mode=off", f"--pg1-path={folder}", *target],
            timeout=None,
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    url = _restored_url(settings.url, port)
    if port is None:
        return ServerRestore(folder, moment, span, next_steps=_next_steps(folder, url))
    start_restored(folder, port, _user(settings.url))
    return ServerRestore(folder, moment, span, url=url)


def start_restored(folder, port, user):
    """Start the server restored in ``folder`` on 127.0.0.1:``port``; wait until it has
    replayed its WAL and promoted itself. ToolFailed with its log's last words otherwise."""
    log = folder / "restore.log"
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder}"
    command = [_server_program("pg_ctl"), "-D", str(folder), "-l", str(log), "-o", options,
               "-w", "-t", str(PROMOTE_TIMEOUT_SECONDS), "start"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise ToolFailed(f"the restored server in {folder} did not start: {_last_log_line(log)}")
    deadline = time.monotonic() + PROMOTE_TIMEOUT_SECONDS
    while _in_recovery(folder, port, user):
        if time.monotonic() > deadline:
            raise ToolFailed(f"the restored server on port {port} is still recovering; see {log}")
        time.sleep(0.1)


def _in_recovery(folder, port, user):
    psql = _server_program("psql")
    done = subprocess.run(
        [psql, "-h", str(folder), "-p", str(port), "-U", user, "-d", "postgres",
         "-At", "-c", "SELECT pg_is_in_recovery()"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if done.returncode != 0:
        raise ToolFailed(
            f"the restored server in {folder} stopped: {_last_log_line(folder / 'restore.log')}"
        )
    return done.stdout.strip() == "t"


def _next_steps(folder, url):
    pg_ctl = _server_program("pg_ctl")
    return (
        f"{pg_ctl} -D {folder} -o '-p PORT' -l {folder}/restore.log start   "
        "# as the data directory's owner: replays the WAL to the moment, then promotes",
        f"DATABASE_URL={url} invoke db.check   # the databases as they were",
    )


def _restored_url(url, port):
    return f"postgresql://{_user(url)}@127.0.0.1:{port or 'PORT'}/{database_name_of(url)}"


def _user(url):
    return url_parts(url)[2] or "postgres"


# --- pgBackRest and the server's tools ---------------------------------------------------


def repository_of(settings):
    """Return db.replica, the pgBackRest repository; ConfigError when none is configured."""
    if not settings.replica:
        raise ConfigError(
            "no pgBackRest repository is configured: set db.replica in invoke.yaml "
            "(or INVOKE_DB_REPLICA) to its folder"
        )
    return str(settings.replica)


def stanza_of(settings):
    """Return db.stanza; ConfigError unless it is a plain name (it goes into commands)."""
    stanza = str(settings.stanza)
    if not STANZA_NAME.fullmatch(stanza):
        raise ConfigError(f"db.stanza {stanza!r} must be letters, digits, - and _ only")
    return stanza


def _stanza_info(settings):
    done = _pgbackrest(settings, ["info", "--output=json"])
    try:
        (info,) = [
            entry for entry in json.loads(done.stdout) if entry["name"] == stanza_of(settings)
        ]
        return info
    except (ValueError, KeyError, TypeError) as exc:
        raise ToolFailed(f"pgbackrest info gave an unreadable answer ({exc})") from None


def _last_archived_commit(settings):
    """Return the time of the last commit in the newest archived WAL segments (None when
    they hold none): the latest moment a restore can reach."""
    folder = f"archive/{stanza_of(settings)}"
    listed = _pgbackrest(settings, ["repo-ls", "--recurse", "--output=json", folder])
    segments = sorted(
        (match.group(1), f"{folder}/{path}", match.group(2))
        for path in json.loads(listed.stdout)
        if (match := SEGMENT_NAME.search(path.rsplit("/", 1)[-1]))
    )
    for _, path, compression in reversed(segments[-SEGMENTS_READ:]):
        if commit := _last_commit_in(settings, path, compression):
            return commit
    return None


def _last_commit_in(settings, path, compression):
    """Return the time of the last commit in the archived segment ``path`` (pg_waldump
    reads it), None when it holds none or is compressed in a way we cannot read."""
    decompress = DECOMPRESSORS.get(compression or "")
    if decompress is None:
        return None
    fetched = _pgbackrest(settings, ["repo-get", path], text=False)
    with tempfile.TemporaryDirectory(prefix="clonegallery-wal-") as folder:
        copy = Path(folder) / SEGMENT_NAME.search(path).group(1)
        copy.write_bytes(decompress(fetched.stdout))
        done = subprocess.run(
            [_server_program("pg_waldump"), str(copy)],
            capture_output=True, text=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    # pg_waldump ends with an error on a segment's unused tail: its output stands.
    commits = COMMIT_LINE.findall(done.stdout)
    if not commits:
        return None
    moment = datetime.datetime.fromisoformat(commits[-1])
    return moment.replace(tzinfo=datetime.timezone.utc)


def _zstd(data):
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _gzip(data):
    import gzip

    return gzip.decompress(data)


def _bzip2(data):
    import bz2

    return bz2.decompress(data)


# How pgBackRest's archive is compressed (compress-type), by the segment's extension;
# lz4 is not read (the range then ends at the newest base backup or an older segment).
DECOMPRESSORS = {"": lambda data: data, ".gz": _gzip, ".zst": _zstd, ".bz2": _bzip2}


def _pgbackrest(settings, arguments, server=None, timeout=300, text=True):
    """Run pgbackrest on the stanza (and ``server`` when the command reaches it); return
    the CompletedProcess, ToolFailed with its error line when it fails."""
    binary = find_tool("pgbackrest", package=PACKAGE)
    command = [
        binary,
        f"--stanza={stanza_of(settings)}",
        f"--repo1-path={repository_of(settings)}",
        "--log-level-console=off",
        "--log-level-stderr=error",
        "--log-level-file=off",
        *(server.options() if server else []),
        *arguments,
    ]
    with libpq_environment(server.url if server else settings.url) as env:
        child = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text,
            stdin=subprocess.DEVNULL, env=env, preexec_fn=die_with_parent,
        )  # fmt: skip
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_child(child, STOP_TIMEOUT_SECONDS)
            raise ToolFailed(f"pgbackrest {arguments[0]} gave no answer in {timeout} s") from None
        except BaseException:  # a stop signal: let pgBackRest abandon its work cleanly
            stop_child(child, STOP_TIMEOUT_SECONDS)
            raise
    if child.returncode != 0:
        said = err if text else err.decode(errors="replace")
        raise ToolFailed(f"pgbackrest {arguments[0]} failed: {_error_line(said, child.returncode)}")
    return subprocess.CompletedProcess(command, child.returncode, out, err)


def _error_line(stderr, code):
    """Return pgBackRest's error line without its code ('ERROR: [055]: ')."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    line = (errors or lines or [f"exit {code}"])[0]
    return printable(re.sub(r"^ERROR: \[\d+\]: ", "", line))


def _server_program(name):
    """Return the path of a PostgreSQL server program (pg_ctl, pg_waldump, psql)."""
    found = shutil.which(name)
    if found:
        return found
    bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
    path = Path(bindir.stdout.strip()) / name
    if bindir.returncode == 0 and path.exists():
        return str(path)
    raise ToolFailed(f"{name} is not installed: it comes with the PostgreSQL server packages")


def _last_log_line(log):
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "its log is empty"


def _user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _epoch(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
