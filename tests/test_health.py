"""db.health: checks with states, limits and exit codes that monitoring systems read.

Every condition here is real: a backup file of a given age, a session left idle in a
transaction by another process, a lock one process holds and another waits for, rows
deleted, a counter set wrong. The replication checks are tested on real standbys in
tests/test_health_replication.py.
"""

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from db import commands
from db.config import Settings
from db.engines import engine_for_url, open_database
from db.health import check_health
from db.models import Image, Tag
from db.populate import GalleryPlan, populate
from db.runner import Runner
from tests import servers
from tests.conftest import MIGRATIONS_DIR, NEXT_VERSION, PROJECT_ROOT, one_error_line, run_invoke

OFF = {"warning": "off", "critical": "off"}
# Limits whose verdict depends on the machine (its disk), not on the database under test.
STEADY = {"disk_free": OFF}
SESSION_ID = {"postgres": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}


@pytest.fixture
def settings(engine_url, tmp_path):
    """Settings of the database under test, its backups in an empty folder of the test's."""
    return Settings(url=engine_url, migrations_dir=MIGRATIONS_DIR, backups_dir=tmp_path / "backups")


def with_limits(settings, **limits):
    """Return ``settings`` with db.health limits (the STEADY ones unless overridden)."""
    return Settings(**{**vars(settings), "health": {**STEADY, **limits}})


def finding(report, check):
    """Return the one finding of ``check`` in a HealthReport."""
    (found,) = [f for f in report.findings if f.check == check]
    return found


def health_cli(settings, *args, **limits):
    """Run ``invoke db.health ARGS`` with the limits given as INVOKE_DB_HEALTH_* variables."""
    env = {"INVOKE_DB_BACKUPS": str(settings.backups_dir)}
    for check, levels in {**STEADY, **limits}.items():
        for level, value in levels.items():
            env[f"INVOKE_DB_HEALTH_{check}_{level}".upper()] = value
    return run_invoke("db.health", *args, url=settings.url, env=env)


def verified_backup(settings):
    return commands.backup(settings, verify=True).backup


class Session:
    """A session of another process: it runs its statements inside one transaction, says
    its id, and holds the transaction open until stopped."""

    SCRIPT = (
        "import sys\n"
        "from db.engines import open_database\n"
        "database = open_database(sys.argv[1], create=False)\n"
        "print(database.execute_sql(sys.argv[2]).fetchone()[0], flush=True)\n"
        "database.execute_sql('BEGIN')\n"
        "for statement in sys.argv[3:]:\n"
        "    database.execute_sql(statement)\n"
        "print('done', flush=True)\n"
        "sys.stdin.read()\n"
    )

    def __init__(self, engine, url, *statements):
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, url, SESSION_ID[engine], *statements],
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.id = int(self.process.stdout.readline())

    def wait_done(self):
        assert self.process.stdout.readline().strip() == "done"

    def stop(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def sessions():
    """Start Sessions of other processes; every one is ended after the test."""
    started = []

    def start(*args):
        started.append(Session(*args))
        return started[-1]

    yield start
    for session in reversed(started):
        session.process.kill()
        session.process.wait()


def eventually(probe, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


# -- the verdict and its exit code -----------------------------------------------------------


@pytest.mark.engine
def test_a_migrated_database_with_a_fresh_verified_backup_is_ok_and_exits_0(
    settings, engine_migrated_db
):
    verified_backup(settings)

    result = health_cli(settings)

    assert result.returncode == 0, result.stdout + result.stderr
    first, *lines = result.stdout.splitlines()
    assert first.startswith("health OK: ")
    assert {line.split()[0] for line in lines} == {"ok"}
    checks = {line.split()[1] for line in lines}
    assert {"response_time", "migrations", "backup_age", "counters", "bloat"} <= checks


@pytest.mark.engine
def test_the_json_lists_every_finding_with_its_value_and_limits(settings, engine_migrated_db):
    result = health_cli(settings, "--json")

    document = json.loads(result.stdout)
    assert document["state"] == "critical" and document["exit_code"] == result.returncode == 2
    backup = next(c for c in document["checks"] if c["check"] == "backup_age")
    assert backup["state"] == "critical" and backup["shown"] == "no verified backup"
    response = next(c for c in document["checks"] if c["check"] == "response_time")
    assert response["value"] > 0 and response["warning"] == 1.0 and response["critical"] == 5.0


def test_a_database_that_does_not_exist_is_critical(settings):
    report = check_health(with_limits(settings))

    assert finding(report, "response_time").state == "critical"
    assert finding(report, "response_time").shown == "does not exist"
    assert report.exit_code == 2


def test_a_server_that_does_not_answer_is_critical_naming_the_cause(tmp_path):
    url = "postgresql://app:secret@127.0.0.1:9/gallery"  # the discard port: nobody listens
    settings = Settings(url=url, migrations_dir=MIGRATIONS_DIR, backups_dir=tmp_path)

    result = health_cli(settings)

    assert result.returncode == 2
    assert "secret" not in result.stdout + result.stderr
    assert "critical  response_time  no answer: " in result.stdout
    assert "Connection refused" in result.stdout


def test_a_limit_that_is_no_duration_is_unknown_with_one_line_naming_it(
    settings, migrated_db, db_url
):
    settings = Settings(**{**vars(settings), "url": db_url})

    result = health_cli(settings, backup_age={"warning": "soon"})

    one_error_line(result, 3, "db.health.backup_age.warning", "'soon'", "not a duration")
    assert result.stdout == ""


def test_an_unknown_health_setting_is_refused_naming_the_known_ones(settings):
    with pytest.raises(Exception, match=r"db\.health\.backup_ages is no health setting"):
        check_health(Settings(**{**vars(settings), "health": {"backup_ages": {}}}))


# -- backups --------------------------------------------------------------------------------


def test_an_old_backup_turns_the_check_warning_then_critical(settings, migrated_db, db_url):
    settings = with_limits(Settings(**{**vars(settings), "url": db_url}))
    taken = verified_backup(settings)
    created = datetime.datetime.fromisoformat(taken.manifest["created_at"])

    def state_at(hours):
        report = check_health(settings, now=created + datetime.timedelta(hours=hours))
        return finding(report, "backup_age"), report.exit_code

    fresh, _ = state_at(1)
    assert (fresh.state, fresh.shown, fresh.detail) == ("ok", "1h", str(taken.path))
    old, old_code = state_at(30)
    assert (old.state, old.shown, old_code) == ("warning", "1d6h", 1)
    older, older_code = state_at(60)
    assert (older.state, older.shown, older_code) == ("critical", "2d12h", 2)


def test_an_unverified_backup_does_not_count(settings, migrated_db, db_url):
    settings = with_limits(Settings(**{**vars(settings), "url": db_url}))
    commands.backup(settings)

    assert finding(check_health(settings), "backup_age").shown == "no verified backup"


# -- migrations -----------------------------------------------------------------------------


def test_a_pending_migration_warns_and_a_changed_one_is_critical(
    settings, db_url, migrations_dir, project_migrations, write_migration
):
    settings = with_limits(
        Settings(**{**vars(settings), "url": db_url, "migrations_dir": migrations_dir}),
        backup_age=OFF,
    )
    commands.migrate(settings)
    write_migration(
        f"{NEXT_VERSION}_add_karma.sql", "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 1;\n"
    )

    pending = finding(check_health(settings), "migrations")
    assert (pending.state, pending.shown) == ("warning", "1 pending")

    first = sorted(migrations_dir.glob("001_*"))[0]
    first.write_text(first.read_text() + "\n# changed after it was applied\n")
    changed = finding(check_health(settings), "migrations")
    assert changed.state == "critical"
    assert changed.shown == "1 changed, 1 pending"


# -- sessions and locks ---------------------------------------------------------------------


@pytest.fixture
def tag(engine_migrated_db):
    return Tag.create(name="sunsets")


@pytest.mark.engine
def test_a_session_idle_in_a_transaction_is_seen_and_warns(
    engine, settings, tag, sessions, request
):
    if engine == "sqlite":
        pytest.skip("SQLite has no sessions to see")
    idle = sessions(engine, settings.url, f"UPDATE tags SET name = name WHERE id = {tag.id}")
    idle.wait_done()
    settings = with_limits(settings, idle_in_transaction={"warning": "1s", "critical": "1h"})

    found = eventually(
        lambda: (
            (f := finding(check_health(settings), "idle_in_transaction")).state == "warning" and f
        )
    )

    assert found.shown.startswith("1 idle, longest ")
    assert f"session {idle.id} " in found.detail
    oldest = finding(check_health(settings), "transaction_age")
    assert f"session {idle.id} " in oldest.detail and oldest.value >= 1


@pytest.mark.engine
def test_a_held_lock_shows_as_a_lock_wait_naming_its_blocker(engine, settings, tag, sessions):
    if engine == "sqlite":
        pytest.skip("SQLite's waiters retry in their busy handler: nothing lists them")
    update = f"UPDATE tags SET name = name WHERE id = {tag.id}"
    holder = sessions(engine, settings.url, update)
    holder.wait_done()
    waiter = sessions(engine, settings.url, update)
    limits = {"lock_wait": {"warning": "1s", "critical": "1h"}}

    found = eventually(
        lambda: (
            (f := finding(check_health(with_limits(settings, **limits)), "lock_wait")).state
            == "warning"
            and f
        )
    )
    assert found.shown.startswith("1 waiting, longest ")
    assert f"session {waiter.id} waits on {holder.id}" in found.detail

    result = health_cli(settings, "--json", backup_age=OFF, **limits)
    assert result.returncode == 1, result.stdout
    holder.stop()
    waiter.wait_done()
    assert finding(check_health(with_limits(settings, **limits)), "lock_wait").state == "ok"


# -- the data -------------------------------------------------------------------------------


@pytest.mark.engine
def test_a_counter_the_triggers_keep_set_wrong_is_found(settings, tag, engine_migrated_db):
    Tag.update(count=Tag.count + 5).where(Tag.id == tag.id).execute()

    found = finding(check_health(with_limits(settings)), "counters")

    assert (found.state, found.shown) == ("warning", "1 wrong")
    assert found.detail == f"tags.count of id {tag.id} is 5, not 0"


def test_deleted_rows_leave_free_pages_that_warn_until_optimized(settings, migrated_db, db_url):
    settings = with_limits(Settings(**{**vars(settings), "url": db_url}))
    populate(migrated_db, GalleryPlan(users=5, images=3000, seed=1))
    Image.delete().execute()

    bloated = finding(check_health(settings), "bloat")
    assert bloated.state in ("warning", "critical")
    assert "pages free (invoke db.optimize reclaims them)" in bloated.detail

    commands.optimize(settings)
    assert finding(check_health(settings), "bloat").state == "ok"


@pytest.mark.engine
def test_dead_rows_on_postgres_warn_until_vacuumed(engine, settings, engine_migrated_db):
    if engine != "postgres":
        pytest.skip("dead rows are PostgreSQL's (SQLite's free pages: the test above)")
    populate(engine_migrated_db, GalleryPlan(users=5, images=3000, seed=1))
    Image.delete().execute()
    engine_migrated_db.execute_sql("SELECT pg_stat_force_next_flush()")
    engine_migrated_db.execute_sql("SELECT 1")  # the statistics are sent when it goes idle

    found = eventually(
        lambda: (f := finding(check_health(with_limits(settings)), "bloat")).state != "ok" and f
    )

    assert found.shown == "100%" and found.detail.startswith("images: 3,000 dead rows")


@pytest.mark.engine
def test_an_index_never_used_while_its_table_is_read_warns(engine, settings, engine_migrated_db):
    if engine != "postgres":
        pytest.skip("PostgreSQL counts index use always (MariaDB: only with userstat on)")
    for _ in range(1_000):  # the app reads analytics, never through its index
        engine_migrated_db.execute_sql("SELECT count(*) FROM analytics")
    engine_migrated_db.execute_sql("SELECT pg_stat_force_next_flush()")
    engine_migrated_db.execute_sql("SELECT 1")

    found = eventually(
        lambda: (
            (f := finding(check_health(with_limits(settings)), "unused_indexes")).state == "warning"
            and f
        )
    )

    assert found.shown == "1 unused"
    assert found.detail == "analytics_metric_recorded_at on analytics"


@pytest.mark.engine
def test_a_typical_query_that_stops_using_an_index_warns(settings, engine_migrated_db):
    populate(engine_migrated_db, GalleryPlan(users=5, images=1500, seed=2))
    on_images = " ON images" if engine_for_url(settings.url).key == "mysql" else ""
    # Every index that serves the recent public images: 002's two and 006's partial one.
    for index in ("images_privacy", "images_uploaded_at", "images_public_newest"):
        engine_migrated_db.execute_sql(f"DROP INDEX {index}{on_images}")

    found = finding(check_health(with_limits(settings)), "index_scans")

    assert found.state == "warning"
    assert "recent public images: full scan of images" in found.detail


# -- Prometheus -----------------------------------------------------------------------------


def test_the_prometheus_file_parses_back_with_the_same_measurements(
    settings, migrated_db, db_url, tmp_path
):
    settings = Settings(**{**vars(settings), "url": db_url})
    verified_backup(settings)
    metrics = tmp_path / "metrics"
    metrics.mkdir()

    result = health_cli(settings, "--json", "--prometheus", str(metrics / "db.prom"))

    document = json.loads(result.stdout)
    families = {
        family.name: family
        for family in text_string_to_metric_families((metrics / "db.prom").read_text())
    }
    assert families["clonegallery_db_health_status"].samples[0].value == document["exit_code"]
    states = {
        sample.labels["check"]: sample.value
        for sample in families["clonegallery_db_health_check_state"].samples
    }
    assert states["backup_age"] == 0 and states["response_time"] == 0
    (age,) = families["clonegallery_db_backup_age_seconds"].samples
    backup = next(c for c in document["checks"] if c["check"] == "backup_age")
    assert age.value == pytest.approx(backup["value"])
    assert age.labels["database"] == document["database"]
    assert sorted(path.name for path in metrics.iterdir()) == ["db.prom"]  # nothing left beside


def test_a_prometheus_file_that_is_not_prom_or_cannot_be_written_is_unknown(
    settings, migrated_db, db_url, tmp_path
):
    settings = Settings(**{**vars(settings), "url": db_url})

    wrong_suffix = health_cli(settings, "--prometheus", str(tmp_path / "db.txt"))
    one_error_line(wrong_suffix, 3, "--prometheus", "*.prom")

    missing = health_cli(settings, "--prometheus", str(tmp_path / "nowhere" / "db.prom"))
    one_error_line(missing, 3, "--prometheus", "does not exist")

    refused = health_cli(settings, "--prometheus", "/sys/db.prom")  # not even root writes there
    one_error_line(refused, 3, "--prometheus /sys/db.prom", "not permitted")


# -- on a schedule --------------------------------------------------------------------------


def test_every_period_it_checks_again_and_rewrites_the_file_until_sigterm(
    settings, migrated_db, db_url, tmp_path
):
    metrics = tmp_path / "db.prom"
    env = {**os.environ, "DATABASE_URL": db_url, "INVOKE_DB_BACKUPS": str(tmp_path / "backups")}
    command = [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT), "db.health"]
    watcher = subprocess.Popen(
        [*command, "--every", "1s", "--json", "--prometheus", str(metrics)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        runs = [json.loads(watcher.stdout.readline()) for _ in range(3)]
        written = metrics.read_text()
    finally:
        watcher.send_signal(signal.SIGTERM)
        out, err = watcher.communicate(timeout=30)

    assert [run["state"] for run in runs] == ["critical"] * 3  # no backup yet
    assert "clonegallery_db_health_status" in written
    assert watcher.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"format_version": 1, "stopped_by": "SIGTERM"}


def test_what_no_later_run_could_mend_is_refused_before_the_first(settings, migrated_db, db_url):
    settings = Settings(**{**vars(settings), "url": db_url})

    bad_period = health_cli(settings, "--every", "often")
    one_error_line(bad_period, 3, "--every", "'often'")
    bad_file = health_cli(settings, "--every", "1m", "--prometheus", "metrics.txt")
    one_error_line(bad_file, 3, "--prometheus metrics.txt", "*.prom")
    bad_limit = health_cli(settings, "--every", "1m", connections={"critical": "lots"})
    one_error_line(bad_limit, 3, "db.health.connections.critical", "'lots'")


# -- a monitoring account with few rights ---------------------------------------------------


def test_what_an_account_without_the_process_right_cannot_see_is_unknown_naming_why(
    tmp_path, request
):
    if "mysql" not in servers.selected_engines():
        pytest.skip("MariaDB's PROCESS right")
    servers.require_server("mysql")
    url = servers.new_database_url("mysql")
    request.addfinalizer(lambda: servers.drop_database(url))
    Runner(open_database(url), MIGRATIONS_DIR).migrate()
    with servers.mysql_user(url, "s3cret-pw") as user:
        server = urlsplit(url)
        account = f"{user}:s3cret-pw@{server.hostname}:{server.port}"
        restricted = url.replace(server.netloc, account)
        settings = Settings(url=restricted, migrations_dir=MIGRATIONS_DIR, backups_dir=tmp_path)

        result = health_cli(settings, backup_age=OFF)

    assert "s3cret-pw" not in result.stdout + result.stderr
    found = {
        check: (state, said)
        for state, check, said in (line.split(None, 2) for line in result.stdout.splitlines()[1:])
    }
    assert found["response_time"][0] == "ok"
    state, said = found["transaction_age"]
    assert state == "unknown" and said.startswith("not measured: ") and "PROCESS" in said
    assert result.returncode == 3  # nothing known to be wrong: unknown is the worst state


def test_a_full_metrics_disk_is_one_line_and_leaves_the_last_file_whole(
    settings, migrated_db, db_url, tmp_path
):
    settings = Settings(**{**vars(settings), "url": db_url})
    disk = tmp_path / "metrics"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        assert health_cli(settings, "--prometheus", str(disk / "db.prom")).returncode in (1, 2)
        last = (disk / "db.prom").read_bytes()
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as fill, pytest.raises(OSError):
            while True:
                fill.write(b"\0" * 4096)

        result = health_cli(settings, "--prometheus", str(disk / "db.prom"))

        one_error_line(result, 3, f"--prometheus {disk / 'db.prom'}", "No space left")
        assert (disk / "db.prom").read_bytes() == last
        assert sorted(path.name for path in disk.iterdir()) == ["db.prom", "filler"]
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)
