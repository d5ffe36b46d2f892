"""``invoke db.migrate --all-tenants`` on an operator's bad day, as real processes on every
engine: what a run says, and what the tenants are left with, when part of it is killed.

- A worker process killed with SIGKILL in the middle of one tenant's migration fails that
  tenant alone: a tenant running beside it in another worker, and the tenants that had
  not started yet, still migrate and are reported ok; the run still ends with its summary
  line and a non-zero exit. The killed tenant's transaction is rolled back (its change is
  gone, its version is not recorded), and a second run brings it to the latest version.
- The whole run killed with SIGKILL (the ``invoke`` process and its workers at once)
  leaves no migration lock held: a rerun migrates every tenant without waiting or
  reporting a lock.
- Two runs at once migrate each tenant exactly once: the second waits for the migration
  lock of a tenant the first is migrating, then finds nothing left to do; both exit 0.

A tenant is made to stop mid-migration by the test's own migration 007: in a tenant with
a ``held`` table it writes its process id to ``<tenant>.pid`` after its first change and
waits while ``<tenant>.hold`` exists (a minute at most), inside its transaction and
holding the tenant's migration lock.
"""

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from db.engines import open_database
from db.tenants import tenant_url
from tests import test_tenant_tasks
from tests.conftest import NEXT_VERSION, ok
from tests.test_tenant_tasks import tables_of, with_tenants

# test_tenant_tasks' fixtures: a migrated gallery with a copy of the project's migrations,
# and ``cli(*args)``, which runs ``invoke`` on it.
settings = test_tenant_tasks.settings
cli = test_tenant_tasks.cli

TENANTS = ("a", "b", "c", "d")
WAIT_SECONDS = 60  # the longest any step here waits for a process to get somewhere

HOLDING_MIGRATION = """\
import os
import time
from pathlib import Path

import peewee

FOLDER = Path({folder!r})
CREATE = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(200))"


def up(migrator, db):
    # MySQL commits a CREATE TABLE at once: there it comes after the wait, so that a
    # killed run leaves nothing behind on any engine.
    transactional_ddl = not isinstance(db, peewee.MySQLDatabase)
    if transactional_ddl:
        db.execute_sql(CREATE)
    if "held" in db.get_tables():
        hold(db.execute_sql("SELECT tenant FROM held").fetchone()[0])
    if not transactional_ddl:
        db.execute_sql(CREATE)


def hold(tenant):
    pid_file = FOLDER / f"{{tenant}}.pid"
    pid_file.with_suffix(".tmp").write_text(str(os.getpid()))
    pid_file.with_suffix(".tmp").rename(pid_file)
    deadline = time.monotonic() + {wait}
    while (FOLDER / f"{{tenant}}.hold").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def down(migrator, db):
    db.execute_sql("DROP TABLE notes")
"""


@pytest.fixture
def holds(tmp_path, write_migration):
    """Holds: migration 007 (notes), which waits in the tenants ``holds.hold(name)`` names;
    the holds are let go afterwards, so no process of the test waits on."""
    folder = tmp_path / "holds"
    folder.mkdir()
    yield Holds(folder, write_migration)
    for hold_file in folder.glob("*.hold"):
        hold_file.unlink()


class Holds:
    """The tenants migration 007 stops in, and the process each stopped in."""

    def __init__(self, folder, write_migration):
        self.folder, self.write_migration = folder, write_migration

    def add_migration(self):
        """Add migration 007 (after the tenants are created, which would apply it)."""
        self.write_migration(
            f"{NEXT_VERSION}_add_notes.py",
            HOLDING_MIGRATION.format(folder=str(self.folder), wait=WAIT_SECONDS),
        )

    def hold(self, settings, name):
        """Make migration 007 of tenant ``name`` wait until ``release(name)``."""
        database = open_database(tenant_url(settings.url, name), create=False)
        try:
            database.execute_sql("CREATE TABLE held (tenant VARCHAR(30))")
            database.execute_sql(f"INSERT INTO held (tenant) VALUES ('{name}')")
        finally:
            database.close()
        (self.folder / f"{name}.hold").touch()

    def release(self, name):
        (self.folder / f"{name}.hold").unlink(missing_ok=True)

    def holding_pid(self, name):
        """Wait until tenant ``name``'s migration is held; return the process holding it."""
        pid_file = self.folder / f"{name}.pid"
        wait_for(pid_file.exists, f"tenant {name}'s migration to reach its hold")
        return int(pid_file.read_text())


def wait_for(condition, what):
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


# -- the processes of a run -----------------------------------------------------------------


def children(pid):
    """Return the process ids of ``pid``'s children (any of its threads' children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:  # the task ended meanwhile
            continue
    return found


def descendants(pid):
    """Return the process ids below ``pid`` in the process tree."""
    below = children(pid)
    return below + [pid for child in below for pid in descendants(child)]


class Run:
    """``cli(*args)`` (a real ``invoke`` subprocess) in a thread of the test, with its
    process id once it has started."""

    def __init__(self, pool, cli, *args):
        before = set(children(os.getpid()))
        self.future = pool.submit(cli, *args)
        wait_for(lambda: set(children(os.getpid())) - before, "invoke to start")
        (self.pid,) = set(children(os.getpid())) - before

    def result(self):
        return self.future.result(timeout=WAIT_SECONDS * 2)

    def kill_all(self):
        """SIGKILL the invoke process and every process it started, as ``kill -9`` on
        its process group: stopped first, so that it starts no other meanwhile."""
        try:
            os.kill(self.pid, signal.SIGSTOP)
        except ProcessLookupError:
            return
        for pid in [self.pid, *descendants(self.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue


@pytest.fixture
def background():
    """Start ``invoke`` runs that the test goes on beside: ``background(cli, *args)``
    returns a Run. Whatever is still running at the end is killed."""
    runs = []
    with ThreadPoolExecutor(max_workers=2) as pool:

        def start(cli, *args):
            runs.append(Run(pool, cli, *args))
            return runs[-1]

        yield start
        for run in runs:
            if not run.future.done():
                run.kill_all()


# -- what the tenants are left with ----------------------------------------------------------


def recorded_versions(url):
    """Return the versions in the migration history of the database at ``url``, as rows
    (a version recorded twice shows twice)."""
    database = open_database(url, create=False)
    try:
        return [row[0] for row in database.execute_sql("SELECT version FROM migrations")]
    finally:
        database.close()


def assert_migrated_once(settings, names):
    for name in names:
        url = tenant_url(settings.url, name)
        assert recorded_versions(url).count(NEXT_VERSION) == 1, name
        assert "notes" in tables_of(url), name


def summary(result):
    return result.stdout.splitlines()[-1]


# -- a worker killed -------------------------------------------------------------------------


def test_a_worker_killed_mid_migration_fails_its_tenant_alone_and_a_rerun_completes_it(
    settings, cli, holds, background
):
    with_tenants(settings, *TENANTS)
    holds.add_migration()
    holds.hold(settings, "a")  # killed in its migration
    holds.hold(settings, "b")  # slow but healthy, in the other worker meanwhile

    run = background(cli, "db.migrate", "--all-tenants", "--jobs", "2")
    killed = holds.holding_pid("a")
    holds.holding_pid("b")  # both workers are busy: c and d have not started
    assert killed in descendants(run.pid)  # a worker of this run
    os.kill(killed, signal.SIGKILL)
    holds.release("b")
    migrated = run.result()

    assert migrated.returncode == 1, migrated.stdout + migrated.stderr
    assert summary(migrated) == "db.migrate --all-tenants: 3 of 4 tenants ok; failed: a"
    assert "[a] error: its worker process died (killed by SIGKILL)" in migrated.stdout
    assert "Traceback" not in migrated.stdout + migrated.stderr
    assert_migrated_once(settings, ["b", "c", "d"])
    half = tenant_url(settings.url, "a")
    assert NEXT_VERSION not in recorded_versions(half)  # rolled back: nothing half done
    assert "notes" not in tables_of(half)

    holds.release("a")
    rerun = ok(cli("db.migrate", "--all-tenants", "--jobs", "2"))
    assert summary(rerun) == "db.migrate --all-tenants: 4 of 4 tenants ok"
    assert_migrated_once(settings, TENANTS)


# -- the whole run killed --------------------------------------------------------------------


def test_the_whole_run_killed_midway_leaves_no_lock_and_a_rerun_completes_every_tenant(
    settings, cli, holds, background
):
    with_tenants(settings, *TENANTS)
    holds.add_migration()
    holds.hold(settings, "b")

    run = background(cli, "db.migrate", "--all-tenants", "--jobs", "2")
    holds.holding_pid("b")  # b mid-migration, its lock held
    run.kill_all()
    assert run.result().returncode == -signal.SIGKILL
    assert NEXT_VERSION not in recorded_versions(tenant_url(settings.url, "b"))

    holds.release("b")
    rerun = ok(cli("db.migrate", "--all-tenants", "--jobs", "2"))
    assert summary(rerun) == "db.migrate --all-tenants: 4 of 4 tenants ok"
    assert "lock" not in rerun.stdout + rerun.stderr
    assert_migrated_once(settings, TENANTS)


# -- two runs at once ------------------------------------------------------------------------


def test_two_runs_at_once_migrate_each_tenant_once_the_second_waiting_for_the_lock(
    settings, cli, holds, background
):
    with_tenants(settings, *TENANTS)
    holds.add_migration()
    holds.hold(settings, "b")

    first = background(cli, "db.migrate", "--all-tenants", "--jobs", "2")
    holds.holding_pid("b")  # the first run holds b's migration lock, mid-migration
    second = background(cli, "db.migrate", "--all-tenants", "--jobs", "4")
    wait_for(lambda: children(second.pid), "the second run's workers to start")
    time.sleep(1)  # let the second run reach b's lock (if it is later, it waits no more)
    holds.release("b")

    for run in (first, second):
        result = ok(run.result())
        assert summary(result) == "db.migrate --all-tenants: 4 of 4 tenants ok"
        assert "Traceback" not in result.stdout + result.stderr
    assert_migrated_once(settings, TENANTS)
    second_b = [line for line in second.result().stdout.splitlines() if line.startswith("[b] ")]
    assert second_b == ["[b] already up to date: no pending migrations"], second.result().stdout
