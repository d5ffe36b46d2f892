"""Point-in-time recovery on PostgreSQL: ``db.replicate`` (pgBackRest), ``db.restore
--to-time`` and ``--latest`` into a new data directory, ``db.backups --pitr``.

Each test starts its own primary, archiving its WAL with pgBackRest (tests/clusters.py:
the machine's server does not archive), and runs the real tasks as the postgres OS user,
who owns the data directory, as db.replicate runs beside a server in production. The
restored server is started by db.restore on a port of its own, and judged by its rows, the
counters its triggers keep, and db.check.
"""

import datetime
import signal
import subprocess
import time
import uuid

import pytest

from db.access import as_system
from db.models import Album, AlbumImage, Image
from db.pitr import parse_moment
from tests.clusters import (
    Cluster,
    archiving_primary,
    as_postgres,
    cluster_folder,
    free_port,
    init_primary,
    invoke_as_postgres,
    invoke_as_postgres_command,
    require_clusters,
)
from tests.conftest import ok, one_error_line, run_invoke
from tests.factories import make_album, make_image, make_user, models_on
from tests.replicators import Replicator


@pytest.fixture
def primary():
    """(cluster, repository, URL of the set-up gallery database): a primary archiving to
    pgBackRest, the gallery migrated and seeded on it; removed afterwards."""
    require_clusters()
    with archiving_primary(stanza_of) as (cluster, repository):
        url = cluster.create_database(f"gallery_{uuid.uuid4().hex[:8]}")
        ok(run_invoke("db.setup", url=url))
        yield cluster, repository, url


def stanza_of(repository):
    """The stanza of a test's repository: pgBackRest locks a stanza by its name on the host
    (/tmp/pgbackrest), so each test has its own, named after its cluster folder."""
    return repository.parent.name


def settings_env(url, repository):
    return {
        "DATABASE_URL": url,
        "INVOKE_DB_REPLICA": str(repository),
        "INVOKE_DB_STANZA": stanza_of(repository),
    }


def replicator_of(url, repository, logs):
    """Start ``invoke db.replicate --init`` on ``url`` as the postgres user."""
    command, env = invoke_as_postgres_command(
        "db.replicate", "--init", env=settings_env(url, repository)
    )
    return Replicator(command, env, logs, cwd="/")


def wait_for_base_backup(replicator, timeout=120):
    replicator.wait_for(" taken in ", timeout=timeout)


@pytest.fixture
def postgres_path():
    """A temporary folder of the postgres user's (tmp_path is root's only)."""
    with cluster_folder() as folder:
        yield folder


@pytest.fixture
def replicator(primary, postgres_path):
    """db.replicate --init running on the primary, its first base backup taken."""
    _, repository, url = primary
    running = replicator_of(url, repository, postgres_path / "replicator")
    try:
        wait_for_base_backup(running)
        yield running
    finally:
        running.stop()


@pytest.fixture
def restored_servers():
    """Start nothing: collect the data directories of servers db.restore started, and
    stop them afterwards."""
    started = []
    yield started
    for data_dir in started:
        if (data_dir / "postmaster.pid").exists():
            as_postgres("pg_ctl", "-D", data_dir, "-m", "immediate", "-w", "stop")


def add_images(url, album_title, titles):
    """Add the images ``titles`` of a user to a new album; return the album's id."""
    with models_on(url), as_system():
        owner = make_user(f"owner-{uuid.uuid4().hex[:6]}")
        album = make_album(owner, title=album_title)
        for title in titles:
            AlbumImage.create(album=album, image=make_image(owner, title))
        return album.id


def archive_everything(cluster):
    """Have the primary ship its current WAL segment now (else it ships it when full)."""
    cluster.sql("SELECT pg_switch_wal()")


def now():
    time.sleep(1.1)  # a moment clearly between two commits
    moment = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(1.1)
    return moment


def pitr(url, repository, *args):
    return invoke_as_postgres(*args, env=settings_env(url, repository))


def wait_until_recoverable(url, repository, moment, timeout=60):
    """Wait until the archive holds a commit after ``moment``."""
    deadline = time.monotonic() + timeout
    while True:
        listed = pitr(url, repository, "db.backups", "--pitr")
        if listed.returncode == 0:
            latest = listed.stdout.strip().split(" to ")[-1].split(" ")[0]
            if parse_moment("latest", latest) > moment:
                return
        assert time.monotonic() < deadline, listed.stdout + listed.stderr
        time.sleep(0.5)


def test_restore_to_time_brings_back_the_server_as_it_was_with_its_counters(
    primary, replicator, postgres_path, restored_servers
):
    cluster, repository, url = primary
    album_a = add_images(url, "Seascapes", ["A one", "A two"])
    moment = now()
    add_images(url, "Later", ["B one"])
    archive_everything(cluster)
    wait_until_recoverable(url, repository, moment)
    data_dir, port = postgres_path / "restored", free_port()

    restored = pitr(url, repository, "db.restore", "--to-time", moment.isoformat(),
                    "--data-dir", str(data_dir), "--port", str(port))  # fmt: skip
    restored_servers.append(data_dir)

    assert f"running on postgresql://postgres@127.0.0.1:{port}/" in ok(restored).stdout
    then = url.replace(f":{cluster.port}/", f":{port}/")
    with models_on(then), as_system():
        ours = Image.select().where(Image.title.in_(["A one", "A two", "B one"]))
        assert sorted(image.title for image in ours) == ["A one", "A two"]
        album = Album.get_by_id(album_a)
        assert album.image_count == 2
        assert album.created_by.uploads == 2
    ok(run_invoke("db.check", url=then))
    cluster.sql("SELECT 1")  # the live server ran on, untouched


def test_restore_latest_without_a_port_prints_how_to_start_it(primary, replicator, postgres_path):
    cluster, repository, url = primary
    add_images(url, "Seascapes", ["A one"])
    archive_everything(cluster)
    data_dir = postgres_path / "restored"

    restored = ok(pitr(url, repository, "db.restore", "--latest", "--data-dir", str(data_dir)))

    assert "next steps:" in restored.stdout
    assert f"pg_ctl -D {data_dir}" in restored.stdout
    assert (data_dir / "PG_VERSION").exists()
    assert "archive_mode = 'off'" in (data_dir / "postgresql.auto.conf").read_text()


def test_backups_pitr_shows_the_range_from_the_first_base_backup(primary, replicator):
    _, repository, url = primary

    listed = ok(pitr(url, repository, "db.backups", "--pitr"))

    stanza = stanza_of(repository)
    assert f"{repository} (stanza {stanza}) can restore any moment from" in listed.stdout


def test_a_time_before_the_first_base_backup_is_one_line_naming_the_range(
    primary, replicator, postgres_path
):
    _, repository, url = primary
    data_dir = postgres_path / "restored"

    refused = pitr(url, repository, "db.restore", "--to-time", "2001-01-01T00:00:00Z",
                   "--data-dir", str(data_dir))  # fmt: skip

    one_error_line(refused, None, "2001-01-01T00:00:00Z", "is outside what", "can restore")
    assert not data_dir.exists()


def test_a_data_dir_that_holds_files_is_refused_before_anything_is_restored(
    primary, replicator, postgres_path
):
    _, repository, url = primary
    occupied = postgres_path / "occupied"
    occupied.mkdir()
    (occupied / "PG_VERSION").write_text("15\n")

    refused = pitr(url, repository, "db.restore", "--latest", "--data-dir", str(occupied))

    one_error_line(refused, 2, str(occupied), "not empty")
    assert [path.name for path in occupied.iterdir()] == ["PG_VERSION"]


def test_restore_to_time_on_a_server_needs_a_data_dir(primary):
    _, repository, url = primary

    refused = pitr(url, repository, "db.restore", "--latest")

    one_error_line(refused, 2, "--data-dir", "whole server")


def test_without_init_a_missing_stanza_is_one_line_saying_to_run_init(primary):
    _, repository, url = primary

    refused = pitr(url, repository, "db.replicate")

    one_error_line(refused, 2, f"stanza {stanza_of(repository)}", "db.replicate --init")


def test_the_postgresql_conf_lines_it_prints_make_the_server_archive_as_printed(
    postgres_path,
):
    require_clusters()
    repository = postgres_path / "it's a repository"  # a shell and a conf file quote it
    cluster = init_primary(postgres_path / "plain")
    try:
        url = cluster.create_database("gallery")
        ok(run_invoke("db.setup", url=url))

        refused = pitr(url, repository, "db.replicate", "--init")

        assert refused.returncode == 2, refused.stdout + refused.stderr
        first, *lines = refused.stderr.splitlines()
        assert first.startswith("error: the server does not archive its WAL")
        assert "    archive_mode = on" in lines
        with open(cluster.data_dir / "postgresql.auto.conf", "a") as conf:
            conf.writelines(line.strip() + "\n" for line in lines)
        cluster.stop()
        cluster.start()
        replicator = replicator_of(url, repository, postgres_path / "replicator")
        try:
            wait_for_base_backup(replicator)
        finally:
            assert replicator.stop() == 0
        assert any(repository.rglob("*.gz"))  # the server's WAL, archived where printed
    finally:
        cluster.stop()


def test_replicate_stops_cleanly_on_sigterm(primary, replicator):
    assert replicator.stop() == 0
    assert "stopped by SIGTERM" in replicator.out.read_text()


def test_a_server_restored_elsewhere_does_not_archive_into_the_live_repository(
    primary, replicator, postgres_path, restored_servers
):
    cluster, repository, url = primary
    add_images(url, "Seascapes", ["A one"])
    archive_everything(cluster)
    data_dir, port = postgres_path / "restored", free_port()
    ok(pitr(url, repository, "db.restore", "--latest", "--data-dir", str(data_dir),
            "--port", str(port)))  # fmt: skip
    restored_servers.append(data_dir)

    restored = Cluster(data_dir, port)
    assert restored.sql("SHOW archive_mode") == [("off",)]


def test_replicate_run_by_another_user_than_the_datas_owner_says_whose_it_is(primary):
    _, repository, url = primary  # this test runs as root; the data is postgres's

    refused = run_invoke("db.replicate", "--init", url=url, env=settings_env(url, repository))

    one_error_line(refused, 2, "owner of the data directory", "(postgres)", "runuser -u postgres")
    assert not repository.exists()


def test_restore_with_a_port_as_root_is_refused_before_anything_is_restored(
    primary, replicator, postgres_path
):
    _, repository, url = primary
    data_dir = postgres_path / "restored"

    refused = run_invoke("db.restore", "--latest", "--data-dir", str(data_dir), "--port", "5999",
                         url=url, env=settings_env(url, repository))  # fmt: skip

    one_error_line(refused, 2, "does not run as root")
    assert not data_dir.exists()


def pgbackrest_processes(repository):
    """The pgBackRest processes of this test's stanza (not those archive-push runs for the
    server)."""
    ps = subprocess.run(
        ["pgrep", "-af", f"pgbackrest --stanza={stanza_of(repository)} "],
        capture_output=True, text=True,
    )  # fmt: skip
    return [line for line in ps.stdout.splitlines() if "archive-push" not in line]


def test_replicate_killed_during_a_base_backup_takes_it_again_when_started_again(
    primary, postgres_path
):
    cluster, repository, url = primary
    first = replicator_of(url, repository, postgres_path / "first")
    first.wait_for("protecting")  # the first base backup starts now
    first.stop(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pgbackrest_processes(repository):  # it dies with it: no orphan holds the stanza
        assert time.monotonic() < deadline, pgbackrest_processes(repository)
        time.sleep(0.1)

    second = replicator_of(url, repository, postgres_path / "second")
    try:
        wait_for_base_backup(second)
        add_images(url, "After", ["A one"])
        archive_everything(cluster)
        data_dir = postgres_path / "restored"
        ok(pitr(url, repository, "db.restore", "--latest", "--data-dir", str(data_dir)))
    finally:
        assert second.stop() == 0


def test_init_on_a_server_with_wal_waiting_to_be_archived_waits_for_the_backlog(
    primary, postgres_path
):
    cluster, repository, url = primary  # archive_command fails until the stanza exists
    for _ in range(20):
        add_images(url, "Backlog", ["one"])
        archive_everything(cluster)
    assert cluster.sql("SELECT failed_count FROM pg_stat_archiver")[0][0] > 0

    replicator = replicator_of(url, repository, postgres_path / "replicator")
    try:
        wait_for_base_backup(replicator, timeout=300)
    finally:
        assert replicator.stop() == 0
    assert cluster.sql("SELECT last_archived_time > last_failed_time FROM pg_stat_archiver") == [
        (True,)
    ]


def test_a_port_the_live_server_listens_on_is_refused_before_anything_is_restored(
    primary, replicator, postgres_path
):
    cluster, repository, url = primary
    data_dir = postgres_path / "restored"

    refused = pitr(url, repository, "db.restore", "--latest", "--data-dir", str(data_dir),
                   "--port", str(cluster.port))  # fmt: skip

    one_error_line(refused, 2, f"--port {cluster.port} is taken")
    assert not data_dir.exists()
