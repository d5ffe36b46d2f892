"""A MariaDB primary and its replica (tests/mariadb_servers.py), through the real tasks.

db.status shows each side's role (the replica: its primary and its own lag; the primary: the
replicas reading its binary log); every task that writes is refused on the replica before
it runs, naming the primary; the tasks that read (db.backup, db.check, db.status) work
there; the replica follows the primary's db.migrate. The witness that nothing was written
on the replica is its own binary log: a write there would move its ``@@gtid_binlog_pos``
(what it applies from the primary is not logged again).
"""

import uuid

import pytest

from tests.conftest import MIGRATIONS_DIR, ok, one_error_line, printed_path, run_invoke
from tests.mariadb_servers import REPLICATION_USER, primary_and_replica, require_mariadb_servers
from tests.standbys import WRITING_TASKS, eventually, status_of, tag_count, write_on_primary


@pytest.fixture(scope="module")
def servers():
    """A primary and a read-only replica of it, for this module; removed afterwards."""
    require_mariadb_servers()
    with primary_and_replica() as pair:
        yield pair


@pytest.fixture
def gallery(servers):
    """A new gallery database set up on the primary and applied on the replica; returns
    its URLs (primary, replica)."""
    primary, replica = servers
    name = f"gallery_{uuid.uuid4().hex[:8]}"
    try:
        ok(run_invoke("db.setup", url=primary.url(name)))
        replica.wait_for(primary)
        yield primary.url(name), replica.url(name)
    finally:
        primary.sql(f"DROP DATABASE IF EXISTS `{name}`")
        replica.wait_for(primary)


@pytest.fixture
def applying_stopped(servers):
    """The replica's SQL thread stopped (its IO thread still receives the primary's binary
    log); started again afterwards."""
    primary, replica = servers
    replica.sql("STOP SLAVE SQL_THREAD")
    try:
        yield
    finally:
        replica.sql("START SLAVE SQL_THREAD")
        replica.wait_for(primary)


def own_writes(server):
    """Return what the server has logged of its own writes."""
    return server.sql("SELECT @@gtid_binlog_pos")[0][0]


def test_status_shows_the_replica_behind_its_primary_in_bytes(servers, gallery, applying_stopped):
    primary, _ = servers
    primary_url, replica_url = gallery
    write_on_primary(primary_url)

    behind = eventually(lambda: (s := status_of(replica_url)["replication"])["lag_bytes"] and s)
    assert behind == {
        "role": "standby",
        "primary": primary.address,
        "lag_bytes": behind["lag_bytes"],
        "lag_seconds": None,  # MariaDB does not measure it while nothing is applied
    }
    assert behind["lag_bytes"] > 0

    text = ok(run_invoke("db.status", url=replica_url)).stdout
    assert f"replication: read-only standby of {primary.address}, lag " in text
    assert f"lag {behind['lag_bytes']:,} bytes, ?" in text


def test_status_on_the_primary_shows_its_replica_without_lag(servers, gallery):
    primary_url, _ = gallery

    (seen,) = status_of(primary_url)["replication"]["standbys"]
    assert seen["name"] == REPLICATION_USER
    assert seen["address"] in ("localhost", "127.0.0.1")  # as the server resolved it
    assert seen["state"] == "streaming"  # it has sent the replica all it logged
    assert (seen["lag_bytes"], seen["lag_seconds"]) == (None, None)  # only the replica knows

    text = ok(run_invoke("db.status", url=primary_url)).stdout
    assert "replication: primary, 1 standby" in text
    assert f"standby {REPLICATION_USER} ({seen['address']}): streaming, lag ?, ?" in text


def test_a_replica_that_has_applied_everything_is_not_behind(servers, gallery):
    primary, _ = servers
    _, replica_url = gallery

    caught_up = {"role": "standby", "primary": primary.address, "lag_bytes": 0, "lag_seconds": 0}

    assert eventually(lambda: status_of(replica_url)["replication"] == caught_up)


@pytest.mark.parametrize("task", WRITING_TASKS, ids=" ".join)
def test_a_task_that_writes_is_refused_on_a_replica_naming_its_primary(servers, gallery, task):
    primary, replica = servers
    _, replica_url = gallery
    before = (tag_count(replica_url), status_of(replica_url)["migrations"], own_writes(replica))

    result = run_invoke(*task, url=replica_url)

    line = one_error_line(result, 2, replica_url, f"read-only standby of {primary.address}")
    assert line.endswith(f"run invoke {task[0]} against the primary")
    assert result.stdout == ""  # refused before anything ran: no progress line either
    after = (tag_count(replica_url), status_of(replica_url)["migrations"], own_writes(replica))
    assert after == before


def test_setting_up_a_new_database_on_a_replica_is_refused_naming_its_primary(servers):
    primary, replica = servers
    name = f"gallery_{uuid.uuid4().hex[:8]}"
    url = replica.url(name)

    result = run_invoke("db.setup", url=url)

    one_error_line(result, 2, url, f"read-only standby of {primary.address}", "db.setup")
    assert not replica.sql("SHOW DATABASES LIKE %s", (name,))


@pytest.mark.xfail(
    strict=True,
    reason="db.backup on MariaDB loads its dump into a scratch database to count the rows "
    "(db/backups/mysql.py), which a read-only replica refuses (a write there, by an account "
    "read_only lets through, would be the replica's own transaction)",
)
def test_a_replica_is_backed_up_without_writing_there(servers, gallery, tmp_path):
    _, replica = servers
    _, replica_url = gallery
    before = own_writes(replica)

    dump = printed_path(
        run_invoke("db.backup", url=replica_url, env={"INVOKE_DB_BACKUPS": str(tmp_path)}),
        "backup",
    )

    assert dump.parent == tmp_path and dump.stat().st_size > 0
    assert own_writes(replica) == before


def test_a_backup_is_neither_restored_onto_a_replica_nor_verified_there(servers, gallery, tmp_path):
    primary, replica = servers
    _, replica_url = gallery
    backups = {"INVOKE_DB_BACKUPS": str(tmp_path / "backups")}
    # Any backup will do: the refusal comes before the file is read past its manifest.
    sqlite_url = f"sqlite:///{tmp_path / 'gallery.db'}"
    ok(run_invoke("db.setup", url=sqlite_url))
    dump = printed_path(run_invoke("db.backup", url=sqlite_url, env=backups), "backup")
    made = sorted(dump.parent.iterdir())
    before = own_writes(replica)

    for confirm in (["--yes"], []):  # refused before any question is asked
        result = run_invoke("db.restore", str(dump), *confirm, url=replica_url, env=backups)
        one_error_line(result, 2, f"read-only standby of {primary.address}", "db.restore")
    result = run_invoke("db.backup", "--verify", url=replica_url, env=backups)
    one_error_line(result, 2, f"read-only standby of {primary.address}", "db.verify")
    assert sorted(dump.parent.iterdir()) == made  # no safety backup: nothing was begun
    assert own_writes(replica) == before


def test_check_and_status_work_on_a_replica_without_writing(servers, gallery):
    _, replica = servers
    _, replica_url = gallery
    before = own_writes(replica)

    ok(run_invoke("db.check", url=replica_url))
    assert status_of(replica_url)["up_to_date"] is True
    assert own_writes(replica) == before


def test_a_replica_catches_up_after_the_primary_runs_db_migrate(servers):
    primary, replica = servers
    name = f"gallery_{uuid.uuid4().hex[:8]}"
    primary_url, replica_url = primary.url(name), replica.url(name)
    try:
        ok(run_invoke("db.migrate", "--to", "001", url=primary_url))
        replica.wait_for(primary)
        assert status_of(replica_url)["current_version"] == "001"

        ok(run_invoke("db.migrate", url=primary_url))
        replica.wait_for(primary)

        report = status_of(replica_url)
        assert report["up_to_date"] is True
        assert report["current_version"] == max(p.name[:3] for p in MIGRATIONS_DIR.glob("0*"))
        ok(run_invoke("db.check", url=replica_url))
    finally:
        primary.sql(f"DROP DATABASE IF EXISTS `{name}`")
        replica.wait_for(primary)


def test_a_user_who_may_not_ask_sees_no_replication_and_no_error(servers, gallery):
    primary, replica = servers
    _, replica_url = gallery
    name = replica_url.rsplit("/", 1)[1]
    user = f"cg_{uuid.uuid4().hex[:8]}"
    primary.sql(f"CREATE USER '{user}'@'localhost'")  # replicated: the replica has it too
    primary.sql(f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{user}'@'localhost'")
    try:
        replica.wait_for(primary)
        as_user = replica_url.replace("root@", f"{user}@")

        report = status_of(as_user)  # SHOW SLAVE STATUS refused: the role is not known
        assert report["replication"] is None
        assert report["up_to_date"] is True
    finally:
        primary.sql(f"DROP USER IF EXISTS '{user}'@'localhost'")
        replica.wait_for(primary)
