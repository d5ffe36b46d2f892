"""Benchmark db.backup and db.restore against the engines' own tools, side by side.

    python benchmarks/backup.py                          # builds a ~1 GiB SQLite gallery first
    python benchmarks/backup.py --sqlite big.db          # reuse an existing gallery
    python benchmarks/backup.py --keep-gallery big.db    # build it there, keep it for reuse
    nox -s bench -- --images 100000                      # smaller, quicker

Every side runs as its own process (ours through ``invoke``, as a user runs it), timed
by wall clock, with its peak RSS read from ``wait4``; the two sides take turns, three
times each (``--repeats``), and the medians are compared:

- ``db.backup``            vs ``sqlite3 SRC ".backup DST"``      target <= 1.5x, RSS < 200 MB
- ``db.backup --compress`` vs ``zstd -3 -T0 SRC``                target <= 1.5x, RSS < 200 MB
- ``db.restore`` of a verified backup (over a live database, safety backup included)
                           vs ``cp BACKUP LIVE && sync LIVE``     target <= 2x,   RSS < 200 MB
- PostgreSQL ``db.backup`` vs ``pg_dump -Fc``                     target <= 1.2x

Exit status 1 when a target is missed.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from db.access import as_system
from db.engines import engine_for_url, open_database
from db.populate import GalleryPlan, populate
from db.runner import Runner

PROJECT_DIR = Path(__file__).resolve().parents[1]
POSTGRES_SERVER = os.environ.get(
    "CLONEGALLERY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432"
)
TARGET_RSS_MB = 200
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_DIR)]


def run_measured(command, env=None):
    """Run a command; return (wall seconds, peak RSS in MB of it and its children)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark step failed: {' '.join(map(str, command))}")
    return seconds, usage.ru_maxrss / 1024


def ours(*arguments, url, folder):
    """Run one of our tasks on ``url``, safety backups going to ``folder``."""
    return run_measured(
        [*INVOKE, *arguments], env={"DATABASE_URL": url, "INVOKE_DB_BACKUPS": str(folder)}
    )


def build_gallery(url, images):
    """Create and fill a gallery of ``images`` images at ``url`` (not timed), as
    maintenance code (the access rules let only it write without an acting user)."""
    database = open_database(url)
    try:
        with as_system():
            Runner(database, PROJECT_DIR / "migrations").migrate()
            populate(database, GalleryPlan.sized(images, users=None, seed=1))
    finally:
        database.close()


def compare(step, baseline, theirs, mine, target, repeats):
    """Run both sides ``repeats`` times, interleaved (so a slow spell of the machine hits
    both); return a table row with each side's median time and peak RSS."""
    runs = [(settled(theirs(n)), settled(mine(n))) for n in range(repeats)]
    their_runs, my_runs = zip(*runs, strict=True)
    return step, baseline, summary(their_runs), summary(my_runs), target


def settled(measured):
    """Flush what a side left in the page cache before the next one runs (not timed): each
    side pays for its own writes to disk (ours fsyncs; cp and zstd do not), not the
    other's."""
    os.sync()
    return measured


def summary(runs):
    return statistics.median(s for s, _ in runs), max(rss for _, rss in runs)


def sqlite_rows(source, folder, repeats):
    url = f"sqlite:///{source}"
    out = folder / "out"

    def fresh(name=None):
        """Empty the output folder (not timed); return the path of ``name`` in it, or
        the folder itself."""
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        return str(out / name) if name else out

    backup_row = compare(
        f"backup ({source.stat().st_size / 2**30:.2f} GiB)",
        "sqlite3 .backup",
        lambda n: run_measured(["sqlite3", str(source), f".backup {fresh('theirs.db')}"]),
        lambda n: ours("db.backup", "--output", fresh("ours.db"), url=url, folder=folder),
        1.5,
        repeats,
    )
    compress_row = compare(
        "backup --compress",
        "zstd -3 -T0",
        lambda n: run_measured(["zstd", "-q", "-3", "-T0", str(source), "-o", fresh("t.zst")]),
        lambda n: ours(
            "db.backup", "--compress", "--output", fresh("o.zst"), url=url, folder=folder
        ),
        1.5,
        repeats,
    )
    backup, live = folder / "verified.db", folder / "live.db"
    subprocess.run(
        [*INVOKE, "db.backup", "--verify", "--output", str(backup)],
        env={**os.environ, "DATABASE_URL": url}, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    # A restore that survives a power cut must reach the disk before it reports success:
    # the baseline is cp made as durable (sync of the copy), so both sides pay the write.
    restore_row = compare(
        "restore (verified backup)",
        "cp + sync FILE",
        lambda n: run_measured(["sh", "-c", 'cp "$0" "$1" && sync "$1"', str(backup), str(live)]),
        lambda n: ours("db.restore", str(backup), "--yes", url=f"sqlite:///{live}", folder=fresh()),
        2.0,
        repeats,
    )
    return [backup_row, compress_row, restore_row]


def postgres_rows(images, folder, repeats):
    url = f"{POSTGRES_SERVER}/clonegallery_bench_backup"
    engine = engine_for_url(url)
    engine.drop(url)
    build_gallery(url, images)

    def pg_dump(n):
        output = str(folder / f"theirs-{n}.pgdump")
        command = ["pg_dump", "-Fc", "-f", output, "clonegallery_bench_backup"]
        return run_measured(command, env={"PGHOST": "127.0.0.1", "PGUSER": "postgres"})

    def db_backup(n):
        return ours(
            "db.backup", "--output", str(folder / f"ours-{n}.pgdump"), url=url, folder=folder
        )

    try:
        row = compare(
            f"PostgreSQL backup ({images:,} images)",
            "pg_dump -Fc",
            pg_dump,
            db_backup,
            1.2,
            repeats,
        )
    finally:
        engine.drop(url)
    return [row]


def print_table(rows):
    print(
        f"{'step':<28} {'baseline':<16} {'theirs s':>9} {'ours s':>8} {'ratio':>6} "
        f"{'target':>7} {'ours RSS MB':>12}  verdict"
    )
    missed = False
    for step, baseline, (their_s, _), (our_s, our_rss), target in rows:
        ratio = our_s / their_s
        ok = ratio <= target and our_rss < TARGET_RSS_MB
        missed |= not ok
        print(
            f"{step:<28} {baseline:<16} {their_s:>9.2f} {our_s:>8.2f} {ratio:>5.2f}x "
            f"{'<=' + str(target) + 'x':>7} {our_rss:>12.0f}  {'ok' if ok else 'MISSED'}"
        )
    return missed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite", type=Path, help="an existing SQLite gallery to back up")
    parser.add_argument("--images", type=int, default=1_200_000, help="images when building")
    parser.add_argument("--keep-gallery", type=Path, help="build the gallery here and keep it")
    parser.add_argument("--pg-images", type=int, default=300_000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side (median taken)")
    parser.add_argument(
        "--smoke", action="store_true", help="print the figures, check no target (CI, tiny sizes)"
    )
    args = parser.parse_args()
    missing = [tool for tool in ("sqlite3", "zstd", "pg_dump") if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"the benchmark needs {', '.join(missing)} on PATH")
    with tempfile.TemporaryDirectory(prefix="clonegallery-bench-") as scratch:
        folder = Path(scratch)
        source = args.sqlite
        if source is None:
            source = args.keep_gallery or folder / "gallery.db"
            print(f"building a gallery of {args.images:,} images ...", flush=True)
            build_gallery(f"sqlite:///{source}", args.images)
        rows = sqlite_rows(source.resolve(), folder, args.repeats)
        if not args.skip_postgres:
            rows += postgres_rows(args.pg_images, folder, args.repeats)
        missed = print_table(rows)
    sys.exit(1 if missed and not args.smoke else 0)


if __name__ == "__main__":
    main()
