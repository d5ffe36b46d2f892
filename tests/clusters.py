"""Throwaway PostgreSQL clusters for tests that need a server of their own: a primary and a
streaming standby (replication), a primary that archives its WAL to pgBackRest (point-in-time
recovery).

The machine's own server (tests/servers.py) allows no replication connections, so these
tests start their own with the server's tools, as the ``postgres`` OS user::

    with primary_and_standby() as (primary, standby):
        primary.url("gallery")             # postgresql://postgres@127.0.0.1:PORT/gallery
        standby.sql("SELECT pg_is_in_recovery()")   # [(True,)]
        standby.wait_for(primary)          # replayed everything the primary wrote

    with archiving_primary(stanza) as (primary, repository):   # archive_command: pgBackRest
        invoke_as_postgres("db.replicate", "--init", env={...})   # the tasks that run
                                                    # pgBackRest and pg_ctl, as the data's owner

``initdb`` (trust on 127.0.0.1, replication allowed: initdb's own pg_hba.conf), ``pg_ctl``
on a free port, ``pg_basebackup -R`` for the standby; both start in about a second. Every
cluster is stopped and its folder removed on the way out, whatever happened inside.
"""

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

OS_USER = "postgres"
STANDBY_NAME = "gallery_standby"  # the application_name the primary knows the standby by


def bindir():
    """Return the folder of the server's programs (pg_config --bindir), or None."""
    try:
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
    except OSError:
        return None
    folder = Path(found.stdout.strip())
    return folder if found.returncode == 0 and (folder / "initdb").exists() else None


def cluster_problem():
    """Return why this machine cannot start clusters of its own, or None when it can."""
    if bindir() is None:
        return "no PostgreSQL server programs (pg_config --bindir)"
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return "starting a cluster as the postgres user needs root and runuser"
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        return f"no {OS_USER} OS user"
    return None


def require_clusters():
    """Skip unless PostgreSQL is a selected engine (CLONEGALLERY_TEST_ENGINES) and clusters
    can be started here; on CI, fail instead when they cannot."""
    from tests.servers import selected_engines

    if "postgres" not in selected_engines():
        pytest.skip("postgres not selected (CLONEGALLERY_TEST_ENGINES)")
    if problem := cluster_problem():
        if os.environ.get("CI"):
            pytest.fail(f"cannot start PostgreSQL clusters on CI: {problem}")
        pytest.skip(problem)


def free_port():
    """Return a TCP port nobody listens on at the moment."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def as_postgres(program, *args):
    """Run a server program as the postgres OS user; return its CompletedProcess (raise,
    with its output, if it fails)."""
    command = ["runuser", "-u", OS_USER, "--", str(bindir() / program), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{program} failed: {result.stdout}{result.stderr}")
    return result


class Cluster:
    """One PostgreSQL server of a test: its data folder, its port, its log."""

    def __init__(self, data_dir, port):
        self.data_dir = Path(data_dir)
        self.port = port
        self.running = False

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def url(self, database="postgres"):
        """Return the URL of ``database`` on this server."""
        return f"postgresql://postgres@{self.address}/{database}"

    def start(self):
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir}"
        log = self.data_dir / "server.log"
        as_postgres("pg_ctl", "-D", self.data_dir, "-l", log, "-o", options, "-w", "start")
        self.running = True

    def stop(self):
        if self.running:
            as_postgres("pg_ctl", "-D", self.data_dir, "-m", "immediate", "-w", "stop")
            self.running = False

    def sql(self, query, params=None, database="postgres"):
        """Run one statement (autocommit); return its rows (None when it returns none)."""
        with psycopg.connect(self.url(database), autocommit=True) as connection:
            cursor = connection.execute(query, params)
            return cursor.fetchall() if cursor.description else None

    def create_database(self, name):
        """Create database ``name``; return its URL."""
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def wait_for(self, primary, timeout=30):
        """Wait until this standby has replayed everything ``primary`` has written."""
        (target,) = primary.sql("SELECT pg_current_wal_lsn()::text")[0]
        deadline = time.monotonic() + timeout
        while True:
            (behind,) = self.sql(
                "SELECT pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn()) > 0", (target,)
            )[0]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the standby on {self.address} did not catch up")
            time.sleep(0.05)


def init_primary(data_dir, settings=""):
    """Create and start a primary in ``data_dir`` (``settings``: lines for its
    postgresql.auto.conf); return its Cluster."""
    as_postgres("initdb", "-D", data_dir, "-U", "postgres", "--auth=trust", "--no-sync")
    if settings:
        with open(Path(data_dir) / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
            conf.write(settings)
    cluster = Cluster(data_dir, free_port())
    cluster.start()
    return cluster


def init_standby(primary, data_dir):
    """Copy ``primary`` with pg_basebackup -R into ``data_dir`` and start it streaming;
    return its Cluster."""
    connection = f"host=127.0.0.1 port={primary.port} user=postgres application_name={STANDBY_NAME}"
    as_postgres(
        "pg_basebackup", "-d", connection, "-D", data_dir, "-R", "-X", "stream", "--no-sync"
    )
    cluster = Cluster(data_dir, free_port())
    cluster.start()
    return cluster


@contextlib.contextmanager
def cluster_folder():
    """Yield a temporary folder the postgres user owns; removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="cg-clusters-"))
    entry = pwd.getpwnam(OS_USER)
    os.chown(folder, entry.pw_uid, entry.pw_gid)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def primary_and_standby():
    """Yield (primary, standby): two running clusters, the standby streaming from the
    primary; both stopped and removed afterwards, even on failure."""
    started = []
    with cluster_folder() as folder:
        try:
            started.append(init_primary(folder / "primary"))
            started.append(init_standby(started[0], folder / "standby"))
            yield started[0], started[1]
        finally:
            for cluster in reversed(started):
                cluster.stop()


@contextlib.contextmanager
def archiving_primary(stanza_of):
    """Yield (primary, repository): a running cluster archiving its WAL with pgBackRest to
    the stanza ``stanza_of(repository)`` in the folder ``repository`` (not made yet:
    db.replicate --init creates it and the stanza); stopped and removed afterwards."""
    from db.pitr.postgres import archive_command, conf_value

    if shutil.which("pgbackrest") is None:
        if os.environ.get("CI"):
            pytest.fail("pgBackRest is not installed on CI (.ci/run installs it)")
        pytest.skip("pgBackRest is not installed (apt install pgbackrest)")
    with cluster_folder() as folder:
        repository, data_dir = folder / "repository", folder / "primary"
        stanza = stanza_of(repository)
        settings = (
            "archive_mode = on\n"
            f"archive_command = {conf_value(archive_command(repository, stanza, data_dir))}\n"
        )
        primary = None
        try:
            primary = init_primary(data_dir, settings)
            yield primary, repository
        finally:
            if primary:
                primary.stop()


def owned_by_postgres(folder):
    """Make ``folder`` (new) the postgres user's; return it."""
    entry = pwd.getpwnam(OS_USER)
    Path(folder).mkdir(parents=True, exist_ok=True)
    os.chown(folder, entry.pw_uid, entry.pw_gid)
    return Path(folder)


def postgres_python():
    """Return (python, PYTHONPATH) that the postgres user can run the tasks with: this run's
    interpreter or the system's of the same version, this run's packages and the project;
    skip where there is none (a Python under /root, of another version than the system's)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    project = Path(__file__).resolve().parents[1]
    paths = [str(project), *dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))]
    probe = "import sys, invoke, peewee, psycopg, db; print('%d.%d' % sys.version_info[:2])"
    for python in dict.fromkeys([sys.executable, f"/usr/bin/python{version}"]):
        found = subprocess.run(
            ["runuser", "-u", OS_USER, "--", python, "-c", probe],
            capture_output=True, text=True, cwd="/",
            env={"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(paths)},
        )  # fmt: skip
        if found.returncode == 0 and found.stdout.strip() == version:
            return python, os.pathsep.join(paths)
    pytest.skip(f"no Python {version} the {OS_USER} user can run with this run's packages")


def invoke_as_postgres_command(*args, env=None):
    """Return (command, environment) running ``invoke ARGS`` as the postgres user, with only
    ``env`` and the basics in its environment."""
    python, path = postgres_python()
    project = Path(__file__).resolve().parents[1]
    environment = {
        "PATH": f"{bindir()}:{os.environ['PATH']}",
        "PYTHONPATH": path,
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        **(env or {}),
    }
    command = [
        "runuser",
        "-u",
        OS_USER,
        "--",
        python,
        "-m",
        "invoke",
        "--search-root",
        str(project),
    ]
    return [*command, *args], environment


def invoke_as_postgres(*args, env=None, timeout=300):
    """Run ``invoke ARGS`` as the postgres user; return the CompletedProcess."""
    command, environment = invoke_as_postgres_command(*args, env=env)
    return subprocess.run(
        command, capture_output=True, text=True, env=environment, cwd="/", timeout=timeout
    )
