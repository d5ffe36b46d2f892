"""Point-in-time recovery on MariaDB: ``db.replicate`` (mariadb-backup base backups, the
binary logs kept by mariadb-binlog), ``db.restore --to-time/--latest --data-dir [--port]``
(the whole server, as it was at a moment, into a new data directory), ``db.backups --pitr``.

Every test starts a MariaDB server of its own that keeps a binary log
(tests/mariadb_servers.py: the machine's server keeps none), sets the gallery up on it
with the real CLI, and runs the real ``invoke db.replicate`` against it. A restore starts
a server on the new data directory; the tests judge the rows it holds, the counters the
triggers keep, and db.check on it, then stop it. Binary log events carry whole seconds,
so the moments noted here are a second and more away from the writes around them.
"""

import datetime
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from db.config import Settings
from db.models import Album, AlbumImage, Image, User
from db.pitr import mysql, utc_text
from tests.clusters import free_port
from tests.conftest import MIGRATIONS_DIR, PROJECT_ROOT, ok, one_error_line, run_invoke
from tests.factories import make_album, make_image, make_user, models_on
from tests.mariadb_servers import mariadb_server, require_mariadb_servers, stop_server
from tests.replicators import Replicator, wait_until_gone

INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT)]
APART = 1.2  # seconds between a noted moment and the writes around it
KEPT_TIMEOUT = 30


def replicator_of(url, replica, logs, *args, env=None, ready="taken in"):
    """Start ``invoke db.replicate ARGS`` on ``url``; return it once it says ``ready``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    environment.update(DATABASE_URL=url, INVOKE_DB_REPLICA=str(replica), **(env or {}))
    replicator = Replicator([*INVOKE, "db.replicate", *args], environment, logs)
    try:
        replicator.wait_for(ready)
    except BaseException:
        replicator.kill()
        raise
    return replicator


@pytest.fixture
def server():
    """A MariaDB server of the test's own, keeping a binary log."""
    require_mariadb_servers()
    with mariadb_server() as started:
        yield started


@pytest.fixture
def gallery_url(server):
    """The URL of a gallery set up (migrated and seeded) with the CLI on ``server``."""
    url = server.url("gallery")
    ok(run_invoke("db.setup", url=url))
    return url


@pytest.fixture
def replica(tmp_path):
    return tmp_path / "replica"


@pytest.fixture
def settings(gallery_url, replica):
    return Settings(url=gallery_url, migrations_dir=MIGRATIONS_DIR, replica=str(replica))


@pytest.fixture
def replicators(tmp_path, gallery_url, replica):
    """Start ``invoke db.replicate`` on the gallery with ``replicators(*args, ...)``."""
    started = []

    def start(*args, **options):
        logs = tmp_path / f"replicator-{len(started)}"
        started.append(replicator_of(gallery_url, replica, logs, *args, **options))
        return started[-1]

    yield start
    for replicator in started:
        replicator.kill()


@pytest.fixture
def restored_dirs():
    """The data directories restores made: the servers left running there are stopped."""
    made = []
    yield made
    for data_dir in made:
        stop_server(data_dir)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def noted_moment():
    """Return a moment a second and more away from the writes before and after it."""
    time.sleep(APART)
    moment = now()
    time.sleep(APART)
    return moment


def wait_until_kept(settings, written):
    """Wait until the replica's binary logs hold what was written at ``written``."""
    deadline = time.monotonic() + KEPT_TIMEOUT
    while mysql.recoverable_range(settings).latest < written.replace(microsecond=0):
        assert time.monotonic() < deadline, "the binary logs did not reach the replica"
        time.sleep(0.1)


def titles_of(user):
    return sorted(image.title for image in Image.select().where(Image.uploader == user.id))


def cli(url, replica, *args):
    return run_invoke(*args, url=url, env={"INVOKE_DB_REPLICA": str(replica)})


def restore(url, replica, when, data_dir, restored_dirs):
    """Run ``invoke db.restore`` WHEN (--to-time T, or --latest) into ``data_dir`` with a
    server started there; return the restored gallery's URL."""
    port = free_port()
    restored_dirs.append(data_dir)
    done = cli(url, replica, "db.restore", *when, "--data-dir", str(data_dir), "--port", str(port))
    assert f"running on mysql://root@127.0.0.1:{port}/gallery" in ok(done).stdout
    return f"mysql://root@127.0.0.1:{port}/gallery"


def test_restore_to_time_brings_back_the_server_of_then_with_its_counters(
    settings, gallery_url, replica, replicators, restored_dirs, tmp_path
):
    replicators("--init")
    with models_on(gallery_url):
        rita = make_user("Rita")
        seascapes = make_album(rita)
        for title in ("A one", "A two"):
            AlbumImage.create(album=seascapes, image=make_image(rita, title))
        moment = noted_moment()
        AlbumImage.create(album=seascapes, image=make_image(rita, "B one"))
    wait_until_kept(settings, now())

    when = ["--to-time", moment.isoformat()]
    restored = restore(gallery_url, replica, when, tmp_path / "restored", restored_dirs)

    with models_on(restored):
        assert titles_of(rita) == ["A one", "A two"]
        assert User.get_by_id(rita.id).uploads == 2
        assert Album.get_by_id(seascapes.id).image_count == 2
    ok(run_invoke("db.check", url=restored))
    with models_on(gallery_url):  # the live server is untouched
        assert titles_of(rita) == ["A one", "A two", "B one"]


def test_restore_without_a_port_leaves_a_stopped_server_and_the_commands_to_start_it(
    settings, gallery_url, replica, replicators, tmp_path
):
    replicators("--init")
    with models_on(gallery_url):
        make_user("Rita")
    wait_until_kept(settings, now())
    data_dir = tmp_path / "restored"

    done = ok(cli(gallery_url, replica, "db.restore", "--latest", "--data-dir", str(data_dir)))

    assert "next steps:" in done.stdout and f"--datadir={data_dir}" in done.stdout
    assert (data_dir / "gallery").is_dir() and not (data_dir / "mysqld.pid").exists()


def test_a_moment_outside_the_range_is_refused_naming_the_range_and_creates_nothing(
    settings, gallery_url, replica, replicators, tmp_path
):
    replicator = replicators("--init")
    assert replicator.stop() == 0
    span = mysql.recoverable_range(settings)
    assert span.describe() in ok(cli(gallery_url, replica, "db.backups", "--pitr")).stdout
    data_dir = tmp_path / "restored"

    for moment in (
        span.earliest - datetime.timedelta(hours=1),
        span.latest + datetime.timedelta(hours=1),
    ):
        when = ["--to-time", moment.isoformat(), "--data-dir", str(data_dir), "--port", "3399"]
        refused = cli(gallery_url, replica, "db.restore", *when)
        one_error_line(refused, None, "outside", utc_text(moment), span.describe())
        assert not data_dir.exists()


def test_a_replicator_killed_and_started_again_loses_nothing_committed(
    settings, gallery_url, replica, replicators, restored_dirs, tmp_path
):
    first = replicators("--init")
    with models_on(gallery_url):
        rita = make_user("Rita")
        make_image(rita, "before the kill")
        wait_until_kept(settings, now())
        children = first.children()
        first.stop(signal.SIGKILL)
        wait_until_gone(children)  # mariadb-binlog dies with it
        make_image(rita, "while it was down")
        replicators(ready="protecting")
        make_image(rita, "after the restart")
    wait_until_kept(settings, now())

    restored = restore(gallery_url, replica, ["--latest"], tmp_path / "restored", restored_dirs)

    with models_on(restored):
        assert titles_of(rita) == ["after the restart", "before the kill", "while it was down"]
        assert User.get_by_id(rita.id).uploads == 3


def test_base_backups_are_taken_every_interval_and_the_newest_kept(
    settings, gallery_url, replica, replicators
):
    (replica / "base" / ".partial-20261130T000000Z").mkdir(parents=True)  # a killed backup
    every = {"INVOKE_DB_BASE_BACKUP_INTERVAL": "1s", "INVOKE_DB_BASE_BACKUPS_KEPT": "2"}
    replicator = replicators("--init", env=every)
    replicator.wait_for("taken in", count=3)
    assert replicator.stop() == 0

    kept = sorted(path.name for path in (replica / "base").iterdir())
    assert len(kept) == 2 and all(not name.startswith(".") for name in kept)
    bases = mysql.complete_base_backups(replica)
    assert mysql.recoverable_range(settings).earliest == bases[0].ended
    assert mysql.binlog_files(replica)[0].name == bases[0].binlog_file


def replicate_init(url, replica):
    """Run ``invoke db.replicate --init`` on ``url``, on a server that refuses it."""
    return run_invoke("db.replicate", "--init", url=url, env={"INVOKE_DB_REPLICA": str(replica)})


def test_a_server_without_a_binary_log_is_refused_with_the_lines_to_add(tmp_path):
    require_mariadb_servers()
    with mariadb_server(binary_log=False) as plain:
        plain.sql("CREATE DATABASE gallery")
        refused = replicate_init(plain.url("gallery"), tmp_path / "replica")
    one_error_line(refused, 2, "keeps no binary log", "[mariadb]", "log_bin=", "server_id=1")


def test_a_binary_log_that_lets_only_super_create_triggers_is_refused_with_the_line_to_add(
    tmp_path,
):
    require_mariadb_servers()
    with mariadb_server(options=["--log-bin-trust-function-creators=0"]) as strict:
        strict.sql("CREATE DATABASE gallery")
        refused = replicate_init(strict.url("gallery"), tmp_path / "replica")
    one_error_line(refused, 2, "only SUPER", "log_bin_trust_function_creators=1")


def test_a_server_kept_for_point_in_time_recovery_backs_up_and_verifies(gallery_url, tmp_path):
    backed_up = run_invoke(
        "db.backup", "--verify", url=gallery_url, env={"INVOKE_DB_BACKUPS": str(tmp_path)}
    )

    ok(backed_up)
    assert "verified" in backed_up.stdout


def test_a_replica_not_set_up_is_one_line_asking_for_init(gallery_url, replica):
    refused = run_invoke("db.replicate", url=gallery_url, env={"INVOKE_DB_REPLICA": str(replica)})

    one_error_line(refused, 2, str(replica), "db.replicate --init")
    assert not replica.exists()


def test_binary_logs_purged_while_the_replicator_was_stopped_are_one_line_not_a_gap(
    server, gallery_url, replica, replicators
):
    assert replicators("--init").stop() == 0
    kept = mysql.newest_binlog(replica)
    server.sql("FLUSH BINARY LOGS")
    (current,) = server.sql("SHOW MASTER STATUS")[0][:1]
    server.sql(f"PURGE BINARY LOGS TO '{current}'")

    refused = cli(gallery_url, replica, "db.replicate")

    one_error_line(refused, 2, kept, "purged", "db.replicate --init")
    assert mysql.newest_binlog(replica) == kept  # nothing copied over the gap


def test_a_password_reaches_the_tools_by_option_file_only_and_is_masked_in_output(
    server, replica, restored_dirs, tmp_path
):
    for host in ("%", "localhost"):  # TCP from 127.0.0.1 comes from "localhost" too
        server.sql(f"CREATE USER 'keeper'@'{host}' IDENTIFIED BY 's3cret-pw'")
        server.sql(f"GRANT ALL PRIVILEGES ON *.* TO 'keeper'@'{host}'")
    url = f"mysql://keeper:s3cret-pw@127.0.0.1:{server.port}/gallery"
    ok(run_invoke("db.setup", url=url))
    replicator = replicator_of(url, replica, tmp_path / "logs", "--init")
    try:
        arguments = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in replicator.children()]
        assert any(b"mariadb-binlog" in argv for argv in arguments)
        assert not any(b"s3cret-pw" in argv for argv in arguments)
        assert replicator.stop() == 0
    finally:
        replicator.kill()
    assert "s3cret-pw" not in replicator.out.read_text() + replicator.err.read_text()
    port = free_port()
    data_dir = tmp_path / "restored"
    restored_dirs.append(data_dir)

    done = ok(
        cli(
            url, replica, "db.restore", "--latest", "--data-dir", str(data_dir), "--port", str(port)
        )
    )

    assert f"running on mysql://keeper:***@127.0.0.1:{port}/gallery" in done.stdout
    assert "s3cret-pw" not in done.stdout + done.stderr
