"""Benchmark point-in-time recovery: how far behind a replica runs while db.populate writes,
and how long a restore takes, beside the engines' own tools called directly.

    python benchmarks/pitr.py                          # SQLite 100,000, PostgreSQL 1,000,000 images
    python benchmarks/pitr.py --engine sqlite --images 20000
    nox -s bench -- pitr --pg-images 100000

SQLite (Litestream, a folder as the replica, the default 1 s sync interval). A real
``invoke db.replicate`` protects a migrated gallery while a real ``invoke db.populate``
writes ``--images`` images into it, and a side connection commits a marker row every
100 ms from 2 s before populate until 3 s after. A marker's lag is the time from its
commit returning to the moment the replica first holds it. To know that moment without
trusting what Litestream's timestamps mean, the replica's listing (``litestream ltx
-json -level 0``) is read every 100 ms and the moment each new file (a transaction id)
is first listed is noted; after the run, each of those transaction ids is restored
(``litestream restore -txid``, not timed) and its newest marker read: a marker's lag runs
to the first listing of the first transaction id that holds it. The lag is thus exact to
one listing (about 100 ms, erring long), and every marker committed is found in the
replica, or the run fails. SQLite has one writer: db.populate writes in one transaction,
so a marker due while it runs waits for the write lock and commits after populate does;
its lag counts from that commit (the replica cannot ship what is not committed) and the
longest wait for the lock is printed beside. Then, with the replicator stopped, the time
to restore the latest state: ``invoke db.restore --latest --yes`` (the replica's state,
checked, a safety backup of the live database, the atomic swap) vs ``litestream restore
-o OUT URL`` called directly, taking turns, three times each (``--repeats``), medians and
their ratio. The issue sets no target for SQLite: the figures are printed.

PostgreSQL (a throwaway primary archiving its WAL to a pgBackRest repository, and a
standby streaming from it: tests/clusters.py, as the ``postgres`` OS user). While ``invoke
db.populate`` writes ``--pg-images`` images into the primary, the primary's
pg_stat_replication is read every 100 ms: the standby's lag in bytes (the primary's current
WAL position less the standby's replayed one) and in seconds (replay_lag; NULL, which
PostgreSQL shows once the standby has caught up and nothing is written, counts as 0);
p50/p99/max, and how long the standby, and the WAL archive, took to catch up after
populate ended. Then ``invoke
db.replicate --init`` (as the postgres user, who owns the data) creates the stanza and
takes a base backup before populate, and another after it (the archive caught up), a
moment T is noted between two later commits, and the whole server
is restored as it was at T into a new data directory: ``invoke db.restore --to-time T
--data-dir D`` (it reads the recoverable range first, then runs pgBackRest) vs ``pgbackrest
restore --type=time --target=T --pg1-path D`` called directly with the same repository
and options (archive-mode off, promote), taking turns, medians; target <= 1.2x. Neither
starts the restored server: both leave a data directory that replays up to T when started.

Exit status 1 when a target is missed or a marker never reached the replica.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from db.access import as_system
from db.engines import open_database
from db.runner import Runner

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))  # tests.clusters: the throwaway clusters the tests use
from tests.clusters import (  # noqa: E402
    OS_USER,
    STANDBY_NAME,
    archiving_primary,
    cluster_problem,
    init_standby,
    invoke_as_postgres_command,
    owned_by_postgres,
)

INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_DIR)]
BACKUP_TAKEN = re.compile(r"^base backup \S+ taken", re.MULTILINE)  # db.replicate's line
TARGET_RESTORE_RATIO = 1.2  # PostgreSQL: db.restore --to-time vs pgbackrest restore
EVERY = 0.1  # seconds between two markers, two listings, two lag samples
LEAD_IN, TAIL = 2.0, 3.0  # markers before db.populate starts and after it ends
MARKERS = "bench_markers"
STANDBY_LAG = """
    SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), extract(epoch FROM replay_lag)
    FROM pg_stat_replication WHERE application_name = %s
"""


def litestream():
    """Return the path of the litestream binary (on PATH, or beside this Python)."""
    found = shutil.which("litestream") or Path(sys.executable).with_name("litestream")
    if not Path(found).exists():
        raise SystemExit("Litestream is not installed: pip install 'clonegallery-db[litestream]'")
    return str(found)


def run_timed(command, env=None, replace=False):
    """Run a command to completion (``env`` added to ours, or with ``replace`` instead of
    it); return its wall seconds (exit on its failure)."""
    environment = env if replace else {**os.environ, **(env or {})}
    started = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True, cwd="/")
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"benchmark step failed: {' '.join(command)}\n{done.stderr}")
    return seconds


def migrate(url):
    """Bring the database at ``url`` (created if needed) to the project's schema (not timed)."""
    database = open_database(url)
    try:
        Runner(database, PROJECT_DIR / "migrations").migrate()
    finally:
        database.close()


def spread(values, unit, digits=2):
    """Return "p50 X, p99 Y, max Z" of ``values`` in ``unit``."""
    shown = (percentile(values, 0.5), percentile(values, 0.99), max(values))
    p50, p99, most = (f"{value:,.{digits}f} {unit}" for value in shown)
    return f"p50 {p50}, p99 {p99}, max {most}"


def percentile(values, share):
    """Return the value below which ``share`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


class Repeating(threading.Thread):
    """Call ``step`` every EVERY seconds in a thread until ``stop()``."""

    def __init__(self, step):
        super().__init__(daemon=True)
        self.step, self.stopping = step, threading.Event()

    def run(self):
        while not self.stopping.is_set():
            self.step()
            self.stopping.wait(EVERY)

    def stop(self):
        self.stopping.set()
        self.join()


# --- SQLite -------------------------------------------------------------------------


class Markers:
    """Commit a numbered row every EVERY seconds; note when each commit returned and how
    long it waited for SQLite's write lock."""

    def __init__(self, path):
        self.connection = sqlite3.connect(path, isolation_level=None, timeout=3600,
                                          check_same_thread=False)  # fmt: skip
        self.connection.execute(f"CREATE TABLE {MARKERS} (id INTEGER PRIMARY KEY)")
        self.committed, self.longest_wait = {}, 0.0

    def commit_one(self):
        asked = time.monotonic()
        number = self.connection.execute(f"INSERT INTO {MARKERS} DEFAULT VALUES").lastrowid
        self.committed[number] = time.monotonic()
        self.longest_wait = max(self.longest_wait, self.committed[number] - asked)


class Listings:
    """Read the replica's level-0 listing; note when each transaction id first shows."""

    def __init__(self, url):
        self.url, self.first_seen = url, {}

    def read_once(self):
        listed = subprocess.run(
            [litestream(), "ltx", "-json", "-level", "0", self.url],
            capture_output=True,
            text=True,
        )
        seen = time.monotonic()  # the end of the call: a lag errs long, never short
        if listed.returncode != 0:
            return  # the replica may not exist before the first sync
        for entry in json.loads(listed.stdout or "[]"):
            self.first_seen.setdefault(entry["max_txid"], seen)


def newest_marker(url, txid, folder):
    """Restore the replica up to ``txid`` (not timed); return its newest marker (0: none)."""
    out = folder / f"at-{txid}.db"
    subprocess.run([litestream(), "restore", "-txid", txid, "-o", str(out), url],
                   check=True, capture_output=True)  # fmt: skip
    with sqlite3.connect(out) as connection:
        try:
            (newest,) = connection.execute(f"SELECT max(id) FROM {MARKERS}").fetchone()
        except sqlite3.OperationalError:  # before the marker table existed
            newest = None
    out.unlink()
    for leftover in folder.glob(f"at-{txid}.db*"):
        leftover.unlink()
    return newest or 0


def marker_lags(markers, listings, url, folder):
    """Return each marker's lag in seconds; exit when one never reached the replica."""
    holds = [(listings.first_seen[txid], newest_marker(url, txid, folder))
             for txid in sorted(listings.first_seen)]  # fmt: skip
    lags = []
    for number, committed in markers.committed.items():
        shown = [seen for seen, newest in holds if newest >= number]
        if not shown:
            raise SystemExit(f"marker {number} never reached the replica")
        lags.append(min(shown) - committed)
    return lags


class Replicator:
    """A running ``invoke db.replicate``, as a user runs it."""

    def __init__(self, env, logs):
        self.log = logs / "replicate.out"
        with open(self.log, "w") as out:
            self.process = subprocess.Popen([*INVOKE, "db.replicate"], stdout=out,
                                            stderr=subprocess.STDOUT, env=env)  # fmt: skip
        deadline = time.monotonic() + 60
        while "protecting" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"invoke db.replicate did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


def sqlite_lag(folder, env, url, images):
    """Run db.populate under db.replicate with markers; return (lags, populate seconds,
    longest wait for the write lock)."""
    markers = Markers(folder / "gallery.db")
    replicator = Replicator(env, folder)
    try:
        listings = Listings(url)
        writer, lister = Repeating(markers.commit_one), Repeating(listings.read_once)
        writer.start()
        lister.start()
        time.sleep(LEAD_IN)
        seconds = run_timed([*INVOKE, "db.populate", "--images", str(images)], env)
        time.sleep(TAIL)
        writer.stop()
        time.sleep(3 * 1.0)  # three sync intervals: the last markers ship
        lister.stop()
    finally:
        replicator.stop()
        markers.connection.close()
    restores = folder / "at-txid"
    restores.mkdir()
    return marker_lags(markers, listings, url, restores), seconds, markers.longest_wait


def sqlite_restores(folder, env, url, repeats):
    """Time db.restore --latest and litestream restore, taking turns; return their medians."""
    out = folder / "theirs.db"

    def theirs():
        for leftover in folder.glob("theirs.db*"):
            leftover.unlink()
        return run_timed([litestream(), "restore", "-o", str(out), url])

    def ours():
        return run_timed([*INVOKE, "db.restore", "--latest", "--yes"], env)

    runs = [(theirs(), ours()) for _ in range(repeats)]
    return tuple(statistics.median(side) for side in zip(*runs, strict=True))


def bench_sqlite(args):
    with tempfile.TemporaryDirectory(prefix="cg-bench-pitr-") as name:
        folder = Path(name)
        live = folder / "gallery.db"
        migrate(f"sqlite:///{live}")
        env = {
            "DATABASE_URL": f"sqlite:///{live}",
            "INVOKE_DB_REPLICA": str(folder / "replica"),
            "INVOKE_DB_BACKUPS": str(folder / "backups"),
        }
        url = (folder / "replica" / live.name).as_uri()  # db.replica's folder for this file
        lags, populate_seconds, waited = sqlite_lag(folder, env, url, args.images)
        theirs, ours = sqlite_restores(folder, env, url, args.repeats)
        size = live.stat().st_size / 2**20
    print(f"\nsqlite: {args.images:,} images (db.populate {populate_seconds:.1f} s), "
          f"Litestream sync every 1 s, {len(lags)} markers")  # fmt: skip
    print(f"replica lag: {spread(lags, 's')} (longest wait for the write lock: {waited:.1f} s)")
    print(f"restore latest ({size:.0f} MiB), median of {args.repeats}:")
    print(f"  litestream restore           {theirs:>7.2f} s")
    print(f"  invoke db.restore --latest   {ours:>7.2f} s   ({ours / theirs:.2f}x)")
    return True


# --- PostgreSQL ---------------------------------------------------------------------


class StandbyLag:
    """Sample the standby's lag on the primary: bytes and seconds."""

    def __init__(self, primary_url):
        self.connection = psycopg.connect(primary_url, autocommit=True)
        self.bytes, self.seconds = [], []

    def sample(self):
        row = self.connection.execute(STANDBY_LAG, (STANDBY_NAME,)).fetchone()
        if row is not None and row[0] is not None:
            self.bytes.append(float(row[0]))
            self.seconds.append(float(row[1] or 0))  # NULL: caught up, nothing to replay


def stanza_of(repository):
    """Name the stanza after the cluster's folder: pgBackRest locks a stanza by its name on
    the host (/tmp/pgbackrest), so a test running beside the benchmark keeps its own."""
    return repository.parent.name


def standby_lag(primary, standby, url, images):
    """Run db.populate on ``url`` while sampling the standby's lag; return (StandbyLag,
    populate seconds, the moment it ended (perf_counter), seconds the standby took to catch
    up afterwards)."""
    standby.wait_for(primary)
    lag = StandbyLag(primary.url())
    sampler = Repeating(lag.sample)
    sampler.start()
    try:
        seconds = run_timed([*INVOKE, "db.populate", "--images", str(images)],
                            {"DATABASE_URL": url})  # fmt: skip
        ended = time.perf_counter()
        standby.wait_for(primary, timeout=600)
        caught_up = time.perf_counter() - ended
    finally:
        sampler.stop()
        lag.connection.close()
    return lag, seconds, ended, caught_up


def wait_for_archive(primary, timeout=3600):
    """Wait until the primary has archived every WAL segment written so far (after a large
    write the archiver has a backlog: pgbackrest check, which db.replicate --init runs,
    waits only a minute for the newest segment)."""
    (segment,) = primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0]
    primary.sql("SELECT pg_switch_wal()")
    deadline = time.monotonic() + timeout
    while True:
        (archived,) = primary.sql("SELECT last_archived_wal FROM pg_stat_archiver")[0]
        if archived is not None and archived >= segment:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the primary did not archive {segment} in {timeout} s")
        time.sleep(EVERY)


def bench_postgres(args):
    """Measure the standby's lag during db.populate, then time the restores to a moment,
    on one primary that archives to pgBackRest and streams to a standby."""
    if problem := cluster_problem() or pgbackrest_problem():
        print(f"\npostgres: skipped ({problem})")
        return True
    with archiving_primary(stanza_of) as (primary, repository):
        url = primary.create_database("gallery")
        migrate(url)
        env = tasks_env(url, repository)
        base_backup(env, "--init")  # the stanza: from here on the server's archiving works
        standby = init_standby(primary, repository.parent / "standby")
        try:
            lag, seconds, ended, caught_up = standby_lag(primary, standby, url, args.pg_images)
        finally:
            standby.stop()
        wait_for_archive(primary)
        archived = time.perf_counter() - ended
        (size,) = primary.sql("SELECT pg_database_size('gallery')")[0]
        base_backup({**env, "INVOKE_DB_BASE_BACKUP_INTERVAL": "1s"})  # of the full gallery
        moment = moment_between_commits(primary)
        theirs, ours = postgres_restores(repository, env, moment, args.repeats)
    print(f"\npostgres: {args.pg_images:,} images (db.populate {seconds:.1f} s, gallery "
          f"{size / 2**20:.0f} MiB), archiving to pgBackRest, standby streaming")  # fmt: skip
    print(f"standby lag, {len(lag.bytes)} samples every {EVERY * 1000:.0f} ms:")
    print(f"  bytes:   {spread([b / 2**10 for b in lag.bytes], 'KiB', 0)}")
    print(f"  seconds: {spread(lag.seconds, 's')}")
    print(f"  caught up {caught_up:.2f} s after db.populate ended "
          f"(the WAL archive: {archived:.1f} s after)")  # fmt: skip
    ratio = ours / theirs
    met = ratio <= TARGET_RESTORE_RATIO
    print(f"restore to a time into a new data directory, median of {args.repeats}:")
    print(f"  pgbackrest restore --type=time   {theirs:>7.2f} s")
    print(f"  invoke db.restore --to-time      {ours:>7.2f} s   ({ratio:.2f}x, target <= "
          f"{TARGET_RESTORE_RATIO}x) {'PASS' if met else 'FAIL'}")  # fmt: skip
    return met


def tasks_env(url, repository):
    """Return the environment our tasks run on the primary with: its repository, its stanza."""
    return {
        "DATABASE_URL": url,
        "INVOKE_DB_REPLICA": str(repository),
        "INVOKE_DB_STANZA": stanza_of(repository),
    }


def base_backup(env, *options):
    """Run ``invoke db.replicate OPTIONS`` as the postgres user until it has taken a base
    backup, then stop it."""
    command, environment = invoke_as_postgres_command("db.replicate", *options, env=env)
    log = Path(tempfile.mkstemp(prefix="cg-bench-replicate-")[1])
    try:
        with open(log, "w") as out:
            replicator = subprocess.Popen(command, env=environment, stdout=out,
                                          stderr=subprocess.STDOUT, cwd="/")  # fmt: skip
        try:
            deadline = time.monotonic() + 3600
            while not BACKUP_TAKEN.search(log.read_text()):
                if replicator.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"invoke db.replicate failed: {log.read_text()}")
                time.sleep(0.2)
        finally:
            replicator.terminate()
            replicator.wait(timeout=60)
    finally:
        log.unlink()


def moment_between_commits(primary):
    """Commit, note a moment, commit again, ship the WAL; return the moment (aware)."""
    primary.sql("CREATE TABLE bench_after (id int)", database="gallery")
    time.sleep(1.1)
    moment = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(1.1)
    primary.sql("INSERT INTO bench_after VALUES (1)", database="gallery")
    wait_for_archive(primary)
    return moment


def postgres_restores(repository, env, moment, repeats):
    """Time db.restore --to-time --data-dir and pgbackrest restore --type=time into a new
    data directory each, taking turns; return their medians."""
    target = moment.strftime("%Y-%m-%d %H:%M:%S.%f") + "+00"
    stanza = env["INVOKE_DB_STANZA"]
    folders = Path(tempfile.mkdtemp(prefix="cg-bench-restored-"))
    owned_by_postgres(folders)
    try:

        def theirs(n):
            data_dir = owned_by_postgres(folders / f"theirs-{n}")
            return run_timed([
                "runuser", "-u", OS_USER, "--", "pgbackrest", f"--stanza={stanza}",
                f"--repo1-path={repository}", f"--pg1-path={data_dir}", "--log-level-file=off",
                "--archive-mode=off", "--type=time", f"--target={target}",
                "--target-action=promote", "restore",
            ])  # fmt: skip

        def ours(n):
            data_dir = owned_by_postgres(folders / f"ours-{n}")
            command, environment = invoke_as_postgres_command(
                "db.restore", "--to-time", moment.isoformat(), "--data-dir", str(data_dir),
                env=env,
            )  # fmt: skip
            return run_timed(command, environment, replace=True)

        os.sync()  # what the base backup and the last commits wrote, before the first run
        runs = [(settled(theirs(n)), settled(ours(n))) for n in range(repeats)]
    finally:
        shutil.rmtree(folders, ignore_errors=True)
    return tuple(statistics.median(side) for side in zip(*runs, strict=True))


def settled(seconds):
    """Flush what a restore left in the page cache before the next runs (not timed)."""
    os.sync()
    return seconds


def pgbackrest_problem():
    """Return why pgBackRest cannot run here, or None."""
    return None if shutil.which("pgbackrest") else "pgBackRest is not installed"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000, help="SQLite's db.populate")
    parser.add_argument("--pg-images", type=int, default=1_000_000, help="PostgreSQL's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument(
        "--smoke", action="store_true", help="print the figures, check no target (CI, tiny sizes)"
    )
    args = parser.parse_args()
    results = []
    if args.engine in ("sqlite", "all"):
        results.append(bench_sqlite(args))
    if args.engine in ("postgres", "all"):
        results.append(bench_postgres(args))
    return 0 if args.smoke or all(results) else 1


if __name__ == "__main__":
    with as_system():  # a benchmark is maintenance code: it writes with no acting user
        sys.exit(main())
