"""Point-in-time recovery on SQLite: ``db.replicate`` (Litestream), ``db.restore --to-time``
and ``--latest``, ``db.backups --pitr``.

Every test runs the real CLI and real Litestream processes on a real SQLite file, with a
folder as the replica. The restored database goes through every rule of db.restore (it
is checked, the replaced one is kept as a safety backup), so the tests judge the rows it
holds, the counters the triggers keep, and db.check on it.
"""

import datetime
import os
import signal
import sys
import time

import pytest

from db.backups import file_digest
from db.models import Album, AlbumImage, Image, User
from db.pitr import parse_moment
from tests.conftest import PROJECT_ROOT, ok, one_error_line, run_invoke
from tests.factories import make_album, make_image, make_user
from tests.replicators import Replicator, wait_until_gone

pytestmark = pytest.mark.skipif(
    not (os.path.exists(os.path.join(os.path.dirname(sys.executable), "litestream"))),
    reason="Litestream is not installed (pip install 'clonegallery-db[litestream]')",
)

INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT)]
SYNC_INTERVAL = 1.0  # db.replica_sync_interval, the default
SHIPPED = 2.5 * SYNC_INTERVAL  # long enough for a commit to reach the replica


@pytest.fixture
def replica(tmp_path):
    return tmp_path / "replica"


@pytest.fixture
def replicators(tmp_path, db_url, replica):
    """Start ``invoke db.replicate`` on the test database with ``replicators()``."""
    started = []

    def start():
        environment = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
        environment.update(DATABASE_URL=db_url, INVOKE_DB_REPLICA=str(replica))
        logs = tmp_path / f"replicator-{len(started)}"
        started.append(Replicator([*INVOKE, "db.replicate"], environment, logs))
        started[-1].wait_for("protecting", timeout=30)
        return started[-1]

    yield start
    for replicator in started:
        replicator.kill()


def cli(db_url, replica, *args):
    """Run a task with the replica configured; safety backups go beside it, not into the
    project's backups folder."""
    backups = replica.parent / "backups"
    env = {"INVOKE_DB_REPLICA": str(replica), "INVOKE_DB_BACKUPS": str(backups)}
    return run_invoke(*args, url=db_url, env=env)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def titles():
    return sorted(image.title for image in Image.select())


@pytest.fixture
def ada(migrated_db):
    return make_user("Ada")


def test_restore_to_time_brings_back_the_rows_of_then_with_their_counters(
    migrated_db, db_url, replica, replicators, ada
):
    replicator = replicators()
    seascapes = make_album(ada)
    for title in ("A one", "A two"):
        AlbumImage.create(album=seascapes, image=make_image(ada, title))
    time.sleep(SHIPPED)
    moment = now()
    time.sleep(SHIPPED)
    AlbumImage.create(album=seascapes, image=make_image(ada, "B one"))
    time.sleep(SHIPPED)
    assert replicator.stop() == 0
    migrated_db.close()

    restored = ok(cli(db_url, replica, "db.restore", "--to-time", moment.isoformat(), "--yes"))

    assert "safety backup of the replaced database:" in restored.stdout
    assert titles() == ["A one", "A two"]
    assert User.get_by_id(ada.id).uploads == 2
    assert Album.get_by_id(seascapes.id).image_count == 2
    ok(run_invoke("db.check", url=db_url))


def test_restore_latest_brings_back_everything_shipped(
    migrated_db, db_url, replica, replicators, ada
):
    replicator = replicators()
    make_image(ada, "A one")
    make_image(ada, "B one")
    time.sleep(SHIPPED)
    assert replicator.stop() == 0
    Image.delete().execute()  # the accident
    migrated_db.close()

    ok(cli(db_url, replica, "db.restore", "--latest", "--yes"))

    assert titles() == ["A one", "B one"]
    assert User.get_by_id(ada.id).uploads == 2
    ok(run_invoke("db.check", url=db_url))


def test_replicator_killed_and_started_again_loses_nothing_shipped_before_the_kill(
    migrated_db, db_url, replica, replicators, ada
):
    first = replicators()
    make_image(ada, "before the kill")
    time.sleep(SHIPPED)  # committed more than the sync interval before the kill
    litestream = first.children()
    assert litestream
    first.stop(signal.SIGKILL)
    wait_until_gone(litestream)  # not left running beside the next db.replicate
    make_image(ada, "while nothing replicated")
    second = replicators()
    make_image(ada, "after the restart")
    time.sleep(SHIPPED)
    assert second.stop() == 0
    migrated_db.close()

    ok(cli(db_url, replica, "db.restore", "--latest", "--yes"))

    assert titles() == ["after the restart", "before the kill", "while nothing replicated"]


def test_sigterm_stops_replicate_cleanly_with_exit_0(db_url, replica, replicators, migrated_db):
    replicator = replicators()

    assert replicator.stop(signal.SIGTERM) == 0
    assert "stopped by SIGTERM" in replicator.out.read_text()
    assert replicator.err.read_text() == ""


def test_backups_pitr_shows_the_range_and_to_time_outside_it_changes_nothing(
    migrated_db, db_url, db_path, replica, replicators, ada
):
    replicator = replicators()
    make_image(ada, "A one")
    time.sleep(SHIPPED)
    assert replicator.stop() == 0
    migrated_db.close()
    before = file_digest(db_path)

    listed = ok(cli(db_url, replica, "db.backups", "--pitr")).stdout
    earliest, latest = (
        parse_moment("range", text)
        for text in listed.split("from ")[1].split(" (UTC)")[0].split(" to ")
    )
    assert earliest <= latest <= now()

    for outside in ("2020-01-01T00:00:00Z", (now() + datetime.timedelta(hours=1)).isoformat()):
        result = cli(db_url, replica, "db.restore", "--to-time", outside, "--yes")
        one_error_line(result, 1, "outside", str(replica), listed.split("from ")[1].split(" (")[0])
    assert file_digest(db_path) == before


def test_without_a_replica_replicate_restore_and_pitr_say_so_in_one_line(migrated_db, db_url):
    for args in (["db.replicate"], ["db.backups", "--pitr"], ["db.restore", "--latest", "--yes"]):
        one_error_line(run_invoke(*args, url=db_url), 2, "no replica", "db.replica")


def test_an_unreadable_time_is_one_line(migrated_db, db_url, replica):
    result = cli(db_url, replica, "db.restore", "--to-time", "yesterday noon", "--yes")

    one_error_line(result, 2, "--to-time", "ISO 8601")


def test_a_time_without_offset_is_local_time(new_york_time):
    assert parse_moment("--to-time", "2026-11-30T09:00") == datetime.datetime(
        2026, 11, 30, 14, 0, tzinfo=datetime.timezone.utc
    )
    assert parse_moment("--to-time", "2026-11-30T09:00Z").hour == 9


def test_two_databases_given_the_same_replica_folder_each_keep_a_replica_of_their_own(
    tmp_path, replica
):
    from db.config import Settings
    from db.pitr.sqlite import replica_url

    first = Settings(url=f"sqlite:///{tmp_path / 'gallery.db'}", migrations_dir=tmp_path,
                     replica=replica)  # fmt: skip
    second = Settings(url=f"sqlite:///{tmp_path / 'staging.db'}", migrations_dir=tmp_path,
                      replica=replica)  # fmt: skip

    assert replica_url(first) == (replica / "gallery.db").as_uri()
    assert replica_url(first) != replica_url(second)
