"""Throwaway MariaDB servers for tests that need one of their own: a server that keeps a
binary log (point-in-time recovery), which the machine's own server does not.

    with mariadb_server() as server:       # mariadb-install-db, then mariadbd on a free port
        server.url("gallery")              # mysql://root@127.0.0.1:PORT/gallery
        server.sql("SELECT @@log_bin")     # [(1,)]
    with mariadb_server(binary_log=False) as server:   # a server keeping no binary log
        ...
    with primary_and_replica() as (primary, replica):  # replica: read_only, GTID replication
        replica.wait_for(primary)          # until it has applied all the primary logged
    stop_server(data_dir)                  # a server a restore left running there

``mariadb-install-db`` (root with a password-less normal login, no test database, a
temporary folder of its own) and
``mariadbd --no-defaults`` (the machine's my.cnf describes its own server) on 127.0.0.1,
socket, pid file and error log in the data directory; as root, ``--user=root``. A server
starts in about a second; it is stopped and its folder removed on the way out, whatever
happened inside.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql
import pytest

from tests.clusters import free_port

SERVER_FOLDERS = os.pathsep.join(("/usr/sbin", "/usr/local/sbin", os.environ.get("PATH", "")))
START_TIMEOUT = 60


def program(name):
    """Return the path of a MariaDB server program, or None."""
    return shutil.which(name, path=SERVER_FOLDERS)


def server_problem():
    """Return why this machine cannot start MariaDB servers of its own, or None."""
    for name in ("mariadbd", "mariadb-install-db", "mariadb-backup", "mariadb-binlog"):
        if program(name) is None:
            return f"{name} is not installed (Debian: mariadb-server, mariadb-backup)"
    return None


def require_mariadb_servers():
    """Skip unless MySQL is a selected engine (CLONEGALLERY_TEST_ENGINES) and MariaDB
    servers can be started here; on CI, fail instead when they cannot."""
    from tests.servers import selected_engines

    if "mysql" not in selected_engines():
        pytest.skip("mysql not selected (CLONEGALLERY_TEST_ENGINES)")
    if problem := server_problem():
        if os.environ.get("CI"):
            pytest.fail(f"cannot start MariaDB servers on CI: {problem}")
        pytest.skip(problem)


def as_whom():
    """Return mariadbd's --user option: as root it insists on being told."""
    return ["--user=root"] if os.geteuid() == 0 else []


class Server:
    """One MariaDB server of a test: its data folder, its port, its process."""

    def __init__(self, data_dir, port, process):
        self.data_dir = Path(data_dir)
        self.port = port
        self.process = process

    def url(self, database="information_schema"):
        """Return the URL of ``database`` on this server."""
        return f"mysql://root@127.0.0.1:{self.port}/{database}"

    def sql(self, query, params=None):
        """Run one statement (autocommit); return its rows."""
        return query_on(self.port, query, params)

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def wait_for(self, primary, timeout=START_TIMEOUT):
        """Wait until this replica has applied everything ``primary`` has logged."""
        (position,) = primary.sql("SELECT @@gtid_binlog_pos")[0]
        (waited,) = self.sql("SELECT MASTER_GTID_WAIT(%s, %s)", (position, timeout))[0]
        if waited != 0:
            raise RuntimeError(f"the replica on port {self.port} did not catch up in {timeout} s")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=START_TIMEOUT)


def query_on(port, query, params=None):
    """Run one statement as root on the server at 127.0.0.1:``port``; return its rows."""
    connection = pymysql.connect(host="127.0.0.1", port=port, user="root", autocommit=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()
    finally:
        connection.close()


def start_server(data_dir, binary_log=True, server_id=1, options=()):
    """Create a data directory and start mariadbd on it; return its Server."""
    # A temporary folder of its own: two bootstraps at once in /tmp remove each other's
    # temporary tables ("Unknown table 'mysql.tmp_user_sys'").
    scratch = Path(data_dir).parent / "tmp"
    scratch.mkdir(exist_ok=True)
    environment = {**os.environ, "TMPDIR": str(scratch)}
    install = [
        program("mariadb-install-db"),
        "--no-defaults",
        f"--datadir={data_dir}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        *as_whom(),
    ]
    done = subprocess.run(install, capture_output=True, text=True, timeout=120, env=environment)
    if done.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed: {done.stdout}{done.stderr}")
    port = free_port()
    # As db.replicate asks (db.pitr.mysql.MY_CNF_LINES): with a binary log, only SUPER may
    # create triggers unless function creators are trusted.
    logging = [
        "--log-bin=binlog",
        f"--server-id={server_id}",
        "--binlog-format=ROW",
        "--log-bin-trust-function-creators=1",
    ]
    process = subprocess.Popen(
        [
            program("mariadbd"),
            "--no-defaults",
            f"--datadir={data_dir}",
            "--socket=mysqld.sock",  # in the data directory, however long its path
            f"--port={port}",
            "--bind-address=127.0.0.1",
            "--pid-file=mysqld.pid",
            "--log-error=mysqld.err",
            *(logging if binary_log else []),
            *options,
            *as_whom(),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
    )
    try:
        wait_until_ready(port, process, Path(data_dir) / "mysqld.err")
    except BaseException:
        process.kill()
        process.wait()
        raise
    return Server(data_dir, port, process)


def wait_until_ready(port, process=None, log=None):
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            query_on(port, "SELECT 1")
            return
        except pymysql.err.OperationalError:
            ended = process is not None and process.poll() is not None
            if ended or time.monotonic() > deadline:
                said = log.read_text(errors="replace") if log and log.exists() else ""
                raise RuntimeError(
                    f"mariadbd on port {port} did not start: {said[-2000:]}"
                ) from None
            time.sleep(0.1)


def serves(pid, data_dir):
    """Whether process ``pid`` is a mariadbd started on ``data_dir``."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"--datadir={Path(data_dir).resolve()}".encode() in arguments or (
        f"--datadir={data_dir}".encode() in arguments
    )


def stop_server(data_dir, timeout=START_TIMEOUT):
    """Stop the mariadbd whose pid file is in ``data_dir`` (a restore left it running)."""
    pid_file = Path(data_dir) / "mysqld.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    if not serves(pid, data_dir):
        return  # a pid file its server left behind: the number may be anyone's now
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


def running(pid):
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@contextlib.contextmanager
def mariadb_server(binary_log=True, options=()):
    """Yield a running Server (keeping a binary log unless told not to; ``options``: more
    of mariadbd's); stopped and removed afterwards, even on failure."""
    folder = Path(tempfile.mkdtemp(prefix="cg-mariadb-"))
    server = None
    try:
        server = start_server(folder / "data", binary_log, options=options)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


REPLICATION_USER = "replicator"


@contextlib.contextmanager
def primary_and_replica():
    """Yield (primary, replica): two servers keeping binary logs, the replica ``read_only``
    and replicating from the primary by GTID as REPLICATION_USER; both stopped and removed
    afterwards, even on failure."""
    folder = Path(tempfile.mkdtemp(prefix="cg-mariadb-pair-"))
    servers = []
    try:
        for role, server_id, options in (("primary", 1, ()), ("replica", 2, ["--read-only"])):
            (folder / role).mkdir()
            servers.append(start_server(folder / role / "data", True, server_id, options))
        primary, replica = servers
        # A throwaway server on 127.0.0.1: the replication user needs no password.
        primary.sql(f"CREATE USER {REPLICATION_USER}@'127.0.0.1'")
        primary.sql(f"GRANT REPLICATION SLAVE ON *.* TO {REPLICATION_USER}@'127.0.0.1'")
        replica.sql(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, "
            "MASTER_USER=%s, MASTER_USE_GTID=slave_pos",
            (primary.port, REPLICATION_USER),
        )
        replica.sql("START SLAVE")
        replica.wait_for(primary)
        yield primary, replica
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
