"""Point-in-time recovery on a bad day: replicas, records and options that are wrong.

A replica folder is a folder anyone may change, a database may share a replica's name with
another, a restore may run while db.replicate does, an option may hold any text. Each case
ends in one ``error:`` line naming the cause, a non-zero exit code, no traceback (unless
``--debug``), and nothing changed: the live database as it was, no data directory left
behind. The tests run the real tasks on real SQLite files with Litestream, and on a MariaDB
server of their own (one per module: the tests copy its replica, never disturb it).
"""

import json
import os
import shutil
import signal
import socket
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import PROJECT_ROOT, ok, one_error_line, run_invoke
from tests.mariadb_servers import mariadb_server, query_on, require_mariadb_servers
from tests.replicators import Replicator
from tests.servers import SERVERS, require_server

INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT)]
SHIPPED = 2.5  # seconds: Litestream ships a commit within its 1 s sync interval
LITESTREAM = Path(sys.executable).parent / "litestream"
needs_litestream = pytest.mark.skipif(
    not LITESTREAM.exists(), reason="Litestream is not installed (clonegallery-db[litestream])"
)


# --- SQLite: Litestream -------------------------------------------------------------------


def sqlite_env(replica, backups):
    return {"INVOKE_DB_REPLICA": str(replica), "INVOKE_DB_BACKUPS": str(backups)}


def set_up(path, marker):
    """Set a gallery up at ``path`` (the CLI) with a table only it has; return its URL."""
    url = f"sqlite:///{path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    ok(run_invoke("db.setup", url=url))
    with sqlite3.connect(path) as connection:
        connection.execute(f"CREATE TABLE {marker} (x)")
        connection.execute(f"INSERT INTO {marker} VALUES (1)")
    return url


def content_of(path):
    """The database's schema and rows, as SQL: what "unchanged" means for a live SQLite
    file, whose pages a checkpoint of its WAL may move without changing a row (Litestream
    checkpoints when it likes, and keeps tables of its own, left out here)."""
    with closing(sqlite3.connect(path)) as connection:
        return [line for line in connection.iterdump() if "_litestream_" not in line]


def tables(path):
    with sqlite3.connect(path) as connection:
        return {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}


@pytest.fixture
def replicators(tmp_path):
    """Start ``invoke db.replicate`` on a URL with ``replicators(url, replica)``."""
    started = []

    def start(url, replica, ready=True):
        environment = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
        environment.update(DATABASE_URL=url, **sqlite_env(replica, tmp_path / "backups"))
        logs = tmp_path / f"replicator-{len(started)}"
        started.append(Replicator([*INVOKE, "db.replicate"], environment, logs))
        if ready:
            started[-1].wait_for("protecting", timeout=30)
        return started[-1]

    yield start
    for replicator in started:
        replicator.kill()


@needs_litestream
def test_a_database_of_the_same_file_name_is_refused_the_replica_another_one_fills(
    tmp_path, replicators
):
    replica = tmp_path / "replica"
    first = set_up(tmp_path / "a" / "clonegallery.db", "only_in_a")
    second = set_up(tmp_path / "b" / "clonegallery.db", "only_in_b")
    replicators(first, replica)

    # Litestream alone would run the second silently, its commits never reaching the replica.
    refused = run_invoke("db.replicate", url=second, env=sqlite_env(replica, tmp_path / "bk"))

    one_error_line(refused, 2, str(replica / "clonegallery.db"), "another database",
                   str(tmp_path / "a" / "clonegallery.db"), "a replica of its own")  # fmt: skip
    time.sleep(SHIPPED)
    elsewhere = tmp_path / "c" / "clonegallery.db"
    elsewhere.parent.mkdir()
    ok(run_invoke("db.restore", "--latest", "--yes", url=f"sqlite:///{elsewhere}",
                  env=sqlite_env(replica, tmp_path / "bk")))  # fmt: skip
    assert "only_in_a" in tables(elsewhere) and "only_in_b" not in tables(elsewhere)


@needs_litestream
def test_the_same_database_resumes_its_own_replica(tmp_path, replicators):
    replica, url = tmp_path / "replica", set_up(tmp_path / "a" / "clonegallery.db", "mine")

    assert replicators(url, replica).stop() == 0
    assert replicators(url, replica).stop() == 0


@needs_litestream
def test_a_second_replicate_on_the_same_database_is_one_line(tmp_path, replicators):
    replica, url = tmp_path / "replica", set_up(tmp_path / "a" / "clonegallery.db", "mine")
    replicators(url, replica)

    refused = run_invoke("db.replicate", url=url, env=sqlite_env(replica, tmp_path / "bk"))

    one_error_line(refused, 2, "db.replicate already runs on", "clonegallery.db")


@needs_litestream
def test_restore_while_replicate_runs_is_refused_and_changes_nothing(tmp_path, replicators):
    # Swapped in under a running Litestream, the restored file would never be replicated:
    # what was written after the restore was lost while db.replicate said all was well.
    replica, path = tmp_path / "replica", tmp_path / "a" / "clonegallery.db"
    url = set_up(path, "mine")
    replicators(url, replica)
    time.sleep(SHIPPED)
    before = content_of(path)

    refused = run_invoke("db.restore", "--latest", "--yes", url=url,
                         env=sqlite_env(replica, tmp_path / "backups"))  # fmt: skip

    one_error_line(refused, 1, "db.replicate runs on", str(path), "stop it first")
    assert content_of(path) == before
    assert not (tmp_path / "backups").exists()  # no safety backup: nothing was replaced


@needs_litestream
def test_junk_in_the_replica_is_one_line_and_the_database_unchanged(tmp_path, replicators):
    replica, path = tmp_path / "replica", tmp_path / "a" / "clonegallery.db"
    url = set_up(path, "mine")
    replicator = replicators(url, replica)
    time.sleep(SHIPPED)
    assert replicator.stop() == 0
    for ltx in (replica / "clonegallery.db" / "ltx").rglob("*.ltx"):
        ltx.write_bytes(b"not an ltx file" * 64)
    before = content_of(path)

    refused = run_invoke("db.restore", "--latest", "--yes", url=url,
                         env=sqlite_env(replica, tmp_path / "backups"))  # fmt: skip

    one_error_line(refused, 1, "litestream restore failed", "nothing restored")
    assert content_of(path) == before
    assert not (tmp_path / "backups").exists()


@pytest.mark.parametrize("when", ["yesterday", "2026-13-45", "99999-01-01T00:00:00Z"])
def test_a_to_time_that_is_no_time_is_one_line(tmp_path, when):
    url = f"sqlite:///{tmp_path / 'clonegallery.db'}"

    refused = run_invoke("db.restore", "--to-time", when, "--yes", url=url,
                         env=sqlite_env(tmp_path / "replica", tmp_path / "backups"))  # fmt: skip

    one_error_line(refused, 2, "--to-time", "ISO 8601")
    assert not (tmp_path / "clonegallery.db").exists()


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "0001-01-01T00:30"]
)
def test_a_to_time_at_the_edge_of_the_calendar_is_one_line(tmp_path, when, monkeypatch):
    url = f"sqlite:///{tmp_path / 'clonegallery.db'}"

    refused = run_invoke("db.restore", "--to-time", when, "--yes", url=url,
                         env={**sqlite_env(tmp_path / "replica", tmp_path / "backups"),
                              "TZ": "Europe/Paris"})  # fmt: skip

    one_error_line(refused, 2, "--to-time")


def test_debug_shows_the_traceback_of_a_refusal_and_only_then(tmp_path):
    url = f"sqlite:///{tmp_path / 'clonegallery.db'}"
    args = ("db.backups", "--pitr")  # no replica configured

    plain, debugged = run_invoke(*args, url=url), run_invoke(*args, "--debug", url=url)

    one_error_line(plain, 2, "no replica")
    assert debugged.returncode == 2
    assert "Traceback" in debugged.stderr
    assert debugged.stderr.rstrip().splitlines()[-1].startswith("error: no replica")


# --- MariaDB: mariadb-backup and the binary log ------------------------------------------


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    """(URL of a gallery on a server of the module's own, a replica of it holding one base
    backup and the binary logs); the tests copy the replica before they change it."""
    require_mariadb_servers()
    folder = tmp_path_factory.mktemp("mariadb")
    with mariadb_server() as server:
        url = server.url("gallery")
        ok(run_invoke("db.setup", url=url))
        environment = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
        environment.update(DATABASE_URL=url, INVOKE_DB_REPLICA=str(folder / "replica"))
        replicator = Replicator([*INVOKE, "db.replicate", "--init"], environment, folder / "log")
        try:
            replicator.wait_for("taken in")
            assert replicator.stop(signal.SIGTERM) == 0
        finally:
            replicator.kill()
        yield url, folder / "replica"


@pytest.fixture
def copied_replica(mariadb, tmp_path):
    """A copy of the module's replica, for the test to damage; (URL, the copy, its base
    backup's record)."""
    url, replica = mariadb
    copy = tmp_path / "replica"
    shutil.copytree(replica, copy)
    (base,) = (copy / "base").iterdir()
    return url, copy, base / "clonegallery-base.json"


def record_of(record, **changes):
    kept = json.loads(record.read_text())
    kept.update(changes)
    return json.dumps({k: v for k, v in kept.items() if v is not None})


DAMAGED_RECORDS = {
    "a binlog_file out of the replica": lambda record: record_of(
        record, binlog_file="../../etc/passwd"
    ),
    "not JSON": lambda record: "{not json",
    "without its time": lambda record: record_of(record, ended=None),
    "a time without offset": lambda record: record_of(record, ended="2026-11-30T12:00:00"),
    "a position that is no number": lambda record: record_of(record, binlog_position="x"),
    "a list": lambda record: "[]",
}


@pytest.mark.parametrize("damage", DAMAGED_RECORDS.values(), ids=DAMAGED_RECORDS.keys())
def test_a_damaged_base_backup_record_is_one_line_naming_it_and_restores_nothing(
    copied_replica, tmp_path, damage
):
    url, replica, record = copied_replica
    record.write_text(damage(record))
    env = {"INVOKE_DB_REPLICA": str(replica)}
    data_dir = tmp_path / "restored"

    listed = run_invoke("db.backups", "--pitr", url=url, env=env)
    restored = run_invoke("db.restore", "--latest", "--data-dir", str(data_dir), url=url, env=env)
    resumed = run_invoke("db.replicate", url=url, env=env)

    for refused in (listed, restored):
        one_error_line(refused, 1, str(record.parent), "damaged", "clonegallery-base.json")
    one_error_line(resumed, 1, str(record.parent), "damaged")
    assert not data_dir.exists()
    assert not [p for p in (replica / "base").iterdir() if p != record.parent]  # none taken


def test_a_binary_log_replaced_by_junk_is_one_line_and_no_data_directory(copied_replica, tmp_path):
    url, replica, _ = copied_replica
    for log in (replica / "binlog").iterdir():
        log.write_bytes(b"junk" * 256)
    data_dir = tmp_path / "restored"

    refused = run_invoke("db.restore", "--latest", "--data-dir", str(data_dir), url=url,
                         env={"INVOKE_DB_REPLICA": str(replica)})  # fmt: skip

    one_error_line(refused, 1, "mariadb-binlog", "not a binary log", "nothing restored")
    assert not data_dir.exists()


def test_a_data_dir_that_is_a_file_is_refused_and_left_as_it_was(copied_replica, tmp_path):
    url, replica, _ = copied_replica
    occupied = tmp_path / "occupied"
    occupied.write_text("keep me")

    refused = run_invoke("db.restore", "--latest", "--data-dir", str(occupied), url=url,
                         env={"INVOKE_DB_REPLICA": str(replica)})  # fmt: skip

    one_error_line(refused, 2, str(occupied), "name a new or empty folder")
    assert occupied.read_text() == "keep me"


# --- PostgreSQL: pgBackRest (the machine's server, only read) -------------------------


@pytest.mark.parametrize("stanza", ["x; rm -rf /", "a b", "$(id)", ""])
def test_a_stanza_with_shell_characters_is_one_line_before_anything_runs(tmp_path, stanza):
    require_server("postgres")
    url = f"{SERVERS['postgres']}/postgres"  # the machine's server: only read, never archived
    env = {"INVOKE_DB_REPLICA": str(tmp_path / "repository"), "INVOKE_DB_STANZA": stanza}

    for args in (["db.replicate", "--init"], ["db.backups", "--pitr"]):
        one_error_line(run_invoke(*args, url=url, env=env), 2, "db.stanza", "letters, digits")
    assert not (tmp_path / "repository").exists()


def test_a_port_another_program_holds_is_one_line_and_no_data_directory(copied_replica, tmp_path):
    url, replica, _ = copied_replica
    data_dir = tmp_path / "restored"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        refused = run_invoke("db.restore", "--latest", "--data-dir", str(data_dir),
                             "--port", str(port), url=url,
                             env={"INVOKE_DB_REPLICA": str(replica)})  # fmt: skip

    one_error_line(refused, 2, f"--port {port} is taken", "nothing restored")
    assert not data_dir.exists()


def test_the_live_servers_own_port_is_refused_never_replayed_into(copied_replica, tmp_path):
    # Reached on a port the live server holds, the restore once replayed the binary logs
    # into the live server itself: every statement since the base backup, a second time.
    url, replica, _ = copied_replica
    port = urlsplit(url).port
    before = query_on(port, "SELECT COUNT(*) FROM gallery.images")
    data_dir = tmp_path / "restored"

    refused = run_invoke("db.restore", "--latest", "--data-dir", str(data_dir),
                         "--port", str(port), url=url,
                         env={"INVOKE_DB_REPLICA": str(replica)})  # fmt: skip

    one_error_line(refused, 2, f"--port {port} is taken")
    assert not data_dir.exists()
    assert query_on(port, "SELECT COUNT(*) FROM gallery.images") == before
