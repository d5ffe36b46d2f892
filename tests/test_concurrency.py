"""Real processes at once and real crashes: migrations are applied once and never by half."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from db.engines import open_database
from db.history import History
from tests.conftest import MIGRATIONS_DIR, PROJECT_ROOT, run_invoke, sqlite_url

pytestmark = pytest.mark.slow

PROCESSES = 4
KILLS = 20

# Migrations that take long enough to be killed in the middle of: bulk rows,
# a table rebuild that copies them, an index over them, triggers.
SLOW_MIGRATIONS = {
    "001_photos.sql": """
-- migrate:up
CREATE TABLE photo (id INTEGER PRIMARY KEY, width INTEGER, title TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 150000)
INSERT INTO photo (id, width, title) SELECT i, i % 4000, 'photo ' || i FROM n;
-- migrate:down
DROP TABLE photo;
""",
    "002_widen_width.py": """import peewee as pw

def up(migrator, db):
    migrator.migrate(migrator.alter_column_type("photo", "width", pw.BigIntegerField(null=True)))

def down(migrator, db):
    migrator.migrate(migrator.alter_column_type("photo", "width", pw.IntegerField(null=True)))
""",
    "003_index_titles.sql": """
-- migrate:up
CREATE INDEX photo_title ON photo (title, width);
-- migrate:down
DROP INDEX photo_title;
""",
    "004_counters.sql": """
-- migrate:up
CREATE TABLE stats (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO stats SELECT 'photos', COUNT(*) FROM photo;
CREATE TRIGGER photo_counted AFTER INSERT ON photo BEGIN
    UPDATE stats SET value = value + 1 WHERE name = 'photos';
END;
-- migrate:down
DROP TRIGGER photo_counted;
DROP TABLE stats;
""",
}


def fingerprint(path):
    """The schema (without history rows) and applied versions of an SQLite file."""
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        schema = connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
        has_history = any(name == "migrations" for _, name, _, _ in schema)
        versions = (
            [v for (v,) in connection.execute("SELECT version FROM migrations ORDER BY version")]
            if has_history
            else []
        )
    connection.close()
    return tuple(versions), tuple(row for row in schema if row[2] != "migrations")


def invoke_command(*args):
    return [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT), *args]


def invoke_env(url, migrations_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env.update(DATABASE_URL=url, INVOKE_DB_MIGRATIONS=str(migrations_dir))
    return env


def start_migrate(path, migrations_dir, stdout=subprocess.DEVNULL):
    return subprocess.Popen(
        invoke_command("db.migrate"),
        env=invoke_env(sqlite_url(path), migrations_dir),
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def kill_after_a_while(path, migrations_dir, seconds):
    process = start_migrate(path, migrations_dir)
    time.sleep(seconds)
    process.send_signal(signal.SIGKILL)
    process.wait()


def kill_after_line(path, migrations_dir, line_start, jitter):
    """SIGKILL a db.migrate as soon as it prints a line starting with ``line_start``."""
    process = start_migrate(path, migrations_dir, stdout=subprocess.PIPE)
    for line in process.stdout:
        if line.startswith(line_start):
            time.sleep(jitter)
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()


@pytest.fixture
def slow_migrations(migrations_dir, write_migration):
    """Migrations that take long enough to be killed in the middle of."""
    for name, text in SLOW_MIGRATIONS.items():
        write_migration(name, text)
    return migrations_dir


SLEEPY_MIGRATION = """import time

def up(migrator, db):
    time.sleep(1)  # hold the lock long enough for the other processes to queue on it

def down(migrator, db):
    pass
"""


@pytest.fixture
def project_and_sleepy_migrations(migrations_dir, write_migration):
    """The project's migrations and a slow fourth one, on every engine."""
    for path in MIGRATIONS_DIR.glob("[0-9]*_*.py"):
        write_migration(path.name, path.read_text())
    write_migration("099_take_a_while.py", SLEEPY_MIGRATION)
    return migrations_dir


def test_concurrent_migrates_apply_each_migration_exactly_once(
    engine_url, project_and_sleepy_migrations
):
    env = invoke_env(engine_url, project_and_sleepy_migrations)
    processes = [
        subprocess.Popen(
            invoke_command("db.migrate"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]

    assert [code for code, _, _ in results] == [0] * PROCESSES, results
    assert not any("locked" in err for _, _, err in results)
    outputs = "".join(out for _, out, _ in results)
    migrations = sorted(p.stem for p in project_and_sleepy_migrations.glob("[0-9]*_*.py"))
    for migration in migrations:
        assert outputs.count(f"applied {migration} (") == 1
    assert outputs.count("already up to date") == PROCESSES - 1
    database = open_database(engine_url, create=False)
    try:
        assert sorted(History(database).applied()) == [name[:3] for name in migrations]
    finally:
        database.close()


def test_a_migrate_killed_at_any_moment_leaves_history_matching_the_schema(
    tmp_path, slow_migrations
):
    expected = {(): ((), ())}  # killed before the first commit: nothing at all
    for version in ("001", "002", "003", "004"):
        reference = tmp_path / f"reference-{version}.db"
        migrated = run_invoke(
            "db.migrate", "--to", version, url=sqlite_url(reference), migrations_dir=slow_migrations
        )
        assert migrated.returncode == 0, migrated.stderr
        state = fingerprint(reference)
        expected[state[0]] = state
    complete = expected[("001", "002", "003", "004")]

    started = time.monotonic()
    full = run_invoke(
        "db.migrate", url=sqlite_url(tmp_path / "timing.db"), migrations_dir=slow_migrations
    )
    duration = time.monotonic() - started
    assert full.returncode == 0, full.stderr

    rng = random.Random(20261126)
    states_seen = set()
    for attempt in range(KILLS):
        path = tmp_path / f"killed-{attempt}.db"
        if attempt % 2:
            # Spread over the whole run, with a little jitter.
            kill_after_a_while(path, slow_migrations, duration * (attempt + rng.random()) / KILLS)
        else:
            # Right after a progress line, so kills land between and inside migrations
            # however fast or slow this machine runs today.
            line = rng.choice(["applying 001", "applied 001", "applied 002", "applied 003"])
            kill_after_line(path, slow_migrations, line, jitter=rng.random() * 0.05)

        if path.exists():
            versions, schema = fingerprint(path)
            assert (versions, schema) == expected[versions], f"kill {attempt}: {versions}"
            states_seen.add(versions)

        rerun = run_invoke("db.migrate", url=sqlite_url(path), migrations_dir=slow_migrations)
        assert rerun.returncode == 0, rerun.stderr
        assert fingerprint(path) == complete

    partial = {v for v in states_seen if v and v != complete[0]}
    assert partial, f"no kill landed between two migrations: {sorted(states_seen)}"
