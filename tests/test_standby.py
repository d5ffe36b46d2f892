"""A PostgreSQL primary and its streaming standby (tests/clusters.py), through the real tasks.

db.status shows each side's role and lag; every task that writes is refused on the standby
before it runs, naming the primary; the tasks that read (db.backup, db.check, db.status) work
there; a standby follows the primary's db.migrate; ``reading_from`` sends reads to it.
"""

import uuid

import pytest

from db.config import resolve_read_url
from db.engines import open_database
from db.errors import ConfigError
from db.models import Tag, bind_models, reading_from
from tests.clusters import STANDBY_NAME, primary_and_standby, require_clusters
from tests.conftest import MIGRATIONS_DIR, ok, one_error_line, printed_path, run_invoke
from tests.standbys import WRITING_TASKS, eventually, status_of, tag_count, write_on_primary


@pytest.fixture(scope="module")
def clusters():
    """A primary and a standby streaming from it, for this module; removed afterwards."""
    require_clusters()
    with primary_and_standby() as pair:
        yield pair


@pytest.fixture
def gallery(clusters):
    """A new gallery database set up on the primary and replayed on the standby; returns
    its URLs (primary, standby)."""
    primary, standby = clusters
    name = f"gallery_{uuid.uuid4().hex[:8]}"
    try:
        ok(run_invoke("db.setup", url=primary.url(name)))
        standby.wait_for(primary)
        yield primary.url(name), standby.url(name)
    finally:
        primary.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def replay_paused(clusters):
    """Replay paused on the standby (WAL still arrives); resumed afterwards."""
    primary, standby = clusters
    standby.sql("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        standby.sql("SELECT pg_wal_replay_resume()")
        standby.wait_for(primary)


def test_status_shows_the_standby_behind_its_primary_in_bytes_and_seconds(
    clusters, gallery, replay_paused
):
    primary, _ = clusters
    primary_url, standby_url = gallery
    write_on_primary(primary_url)

    behind = eventually(lambda: (s := status_of(standby_url)["replication"])["lag_bytes"] and s)
    assert behind["role"] == "standby"
    assert behind["primary"] == primary.address
    assert behind["lag_bytes"] > 0
    assert behind["lag_seconds"] > 0

    def lagging_standby():
        standbys = status_of(primary_url)["replication"]["standbys"]
        return standbys if standbys and standbys[0]["lag_bytes"] else None

    (seen,) = eventually(lagging_standby)
    assert seen["name"] == STANDBY_NAME
    assert seen["address"] == "127.0.0.1"
    assert seen["state"] == "streaming"
    assert seen["lag_bytes"] > 0

    text = ok(run_invoke("db.status", url=standby_url)).stdout
    assert f"replication: read-only standby of {primary.address}, lag " in text
    assert "lag 0 bytes" not in text  # replay is still paused
    text = ok(run_invoke("db.status", url=primary_url)).stdout
    assert "replication: primary, 1 standby" in text
    assert f"standby {STANDBY_NAME} (127.0.0.1): streaming, lag " in text


def test_a_standby_that_has_replayed_everything_is_not_behind(clusters, gallery):
    primary, _ = clusters
    _, standby_url = gallery

    caught_up = {
        "role": "standby",
        "primary": primary.address,
        "lag_bytes": 0,
        "lag_seconds": 0,
    }

    # Polled: the primary logs running transactions on its own every 15 s, and a record
    # received a moment before the status read may not be replayed yet.
    assert eventually(lambda: status_of(standby_url)["replication"] == caught_up)


@pytest.mark.parametrize("task", WRITING_TASKS, ids=" ".join)
def test_a_task_that_writes_is_refused_on_a_standby_naming_its_primary(clusters, gallery, task):
    primary, _ = clusters
    _, standby_url = gallery
    before = (tag_count(standby_url), status_of(standby_url)["migrations"])

    result = run_invoke(*task, url=standby_url)

    line = one_error_line(result, 2, standby_url, f"read-only standby of {primary.address}")
    assert line.endswith(f"run invoke {task[0]} against the primary")
    assert result.stdout == ""  # refused before anything ran: no progress line either
    assert (tag_count(standby_url), status_of(standby_url)["migrations"]) == before


def test_setting_up_a_new_database_on_a_standby_is_refused_naming_its_primary(clusters):
    primary, standby = clusters
    url = standby.url(f"gallery_{uuid.uuid4().hex[:8]}")

    result = run_invoke("db.setup", url=url)

    one_error_line(result, 2, url, f"read-only standby of {primary.address}", "db.setup")


@pytest.mark.parametrize("existing", [True, False], ids=["its database", "a new database"])
def test_transferring_onto_a_standby_is_refused_naming_its_primary(
    clusters, gallery, existing, tmp_path
):
    primary, standby = clusters
    source = f"sqlite:///{tmp_path / 'gallery.db'}"
    ok(run_invoke("db.setup", url=source))
    _, standby_url = gallery
    to = standby_url if existing else standby.url(f"gallery_{uuid.uuid4().hex[:8]}")

    result = run_invoke("db.transfer", "--to", to, "--force", url=source)

    one_error_line(result, 2, to, f"read-only standby of {primary.address}", "db.transfer")


def test_a_standby_cannot_verify_its_backup_and_says_where_to(clusters, gallery, tmp_path):
    primary, _ = clusters
    _, standby_url = gallery
    backups = {"INVOKE_DB_BACKUPS": str(tmp_path)}

    for flags in (["--verify"], ["--keep", "3"]):
        result = run_invoke("db.backup", *flags, url=standby_url, env=backups)
        one_error_line(result, 2, f"read-only standby of {primary.address}", "db.verify")
    assert list(tmp_path.iterdir()) == []


def test_scheduled_backups_of_a_standby_are_refused_at_start_not_once_a_period(
    clusters, gallery, tmp_path
):
    primary, _ = clusters
    _, standby_url = gallery

    result = run_invoke(
        "db.backup", "--every", "1h", url=standby_url, env={"INVOKE_DB_BACKUPS": str(tmp_path)}
    )

    one_error_line(result, 2, f"read-only standby of {primary.address}", "db.verify")
    assert list(tmp_path.iterdir()) == []


def test_restoring_a_backup_onto_a_standby_is_refused_and_backing_it_up_works(
    clusters, gallery, tmp_path
):
    primary, _ = clusters
    _, standby_url = gallery
    backups = {"INVOKE_DB_BACKUPS": str(tmp_path)}

    dump = printed_path(run_invoke("db.backup", url=standby_url, env=backups), "backup")
    assert dump.parent == tmp_path and dump.stat().st_size > 0
    made = sorted(tmp_path.iterdir())

    for confirm in (["--yes"], []):  # refused before any question is asked
        result = run_invoke("db.restore", str(dump), *confirm, url=standby_url, env=backups)
        one_error_line(result, 2, f"read-only standby of {primary.address}", "db.restore")
    assert sorted(tmp_path.iterdir()) == made  # no safety backup: nothing was begun


def test_check_and_status_work_on_a_standby(clusters, gallery):
    # A standby takes no write at all: that they succeed there shows they need none. (The
    # primary's WAL position is no witness: PostgreSQL logs running transactions on its
    # own every 15 s.)
    _, standby = clusters
    _, standby_url = gallery

    ok(run_invoke("db.check", url=standby_url))
    assert status_of(standby_url)["up_to_date"] is True
    assert standby.sql("SELECT pg_is_in_recovery()")[0][0] is True


def test_a_standby_catches_up_after_the_primary_runs_db_migrate(clusters, tmp_path):
    primary, standby = clusters
    name = f"gallery_{uuid.uuid4().hex[:8]}"
    primary_url, standby_url = primary.url(name), standby.url(name)
    try:
        ok(run_invoke("db.migrate", "--to", "001", url=primary_url))
        standby.wait_for(primary)
        assert status_of(standby_url)["current_version"] == "001"

        ok(run_invoke("db.migrate", url=primary_url))
        standby.wait_for(primary)

        report = status_of(standby_url)
        assert report["up_to_date"] is True
        assert report["current_version"] == max(p.name[:3] for p in MIGRATIONS_DIR.glob("0*"))
        ok(run_invoke("db.check", url=standby_url))
    finally:
        primary.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_reading_from_sends_the_models_queries_to_the_standby(clusters, gallery, replay_paused):
    primary_url, standby_url = gallery
    on_primary = bind_models(open_database(primary_url, create=False))
    on_standby = open_database(standby_url, create=False)
    try:
        replayed = Tag.select().count()
        write_on_primary(primary_url, rows=3)  # the standby does not replay it yet

        with reading_from(on_standby):
            assert Tag.select().count() == replayed
        assert Tag.select().count() == replayed + 3
    finally:
        on_standby.close()
        on_primary.close()


def test_reading_from_no_standby_reads_from_the_bound_database(clusters, gallery):
    primary_url, _ = gallery
    on_primary = bind_models(open_database(primary_url, create=False))
    try:
        with reading_from(None) as database:
            assert database is on_primary
            assert Tag.select().count() == tag_count(primary_url)
    finally:
        on_primary.close()


def test_the_read_url_comes_from_database_read_url_before_db_read_url(monkeypatch):
    monkeypatch.delenv("DATABASE_READ_URL", raising=False)
    assert resolve_read_url(None) is None  # reads go to the database itself
    configured = "postgresql://app@standby:5432/gallery"
    assert resolve_read_url(configured) == configured

    monkeypatch.setenv("DATABASE_READ_URL", "postgresql://app@other:5432/gallery")
    assert resolve_read_url(configured) == "postgresql://app@other:5432/gallery"

    monkeypatch.setenv("DATABASE_READ_URL", "postgresql://app@other:5432/")
    with pytest.raises(ConfigError, match=r"DATABASE_READ_URL .* has no database name"):
        resolve_read_url(configured)


def test_a_bad_read_url_stops_a_task_with_one_line_naming_it(tmp_path):
    result = run_invoke(
        "db.status", url=f"sqlite:///{tmp_path}/g.db", env={"INVOKE_DB_READ_URL": "sqlite://"}
    )

    one_error_line(result, 2, "db.read_url", "in-memory")
