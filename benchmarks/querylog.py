"""Benchmark the SQLite query recorder (db.querylog) against the same work unrecorded.

    python benchmarks/querylog.py                  # 100,000 images, 5 runs a side
    python benchmarks/querylog.py --images 20000 --repeats 3
    nox -s bench -- querylog

Two measures, each with the recorder off (the baseline) and on, in the same run, the
sides taking turns on fresh, fully migrated SQLite files (medians compared):

- ``db.populate``: db.populate's own load (``populate()``). Its rows go through
  ``cursor().executemany``, which the recorder does not see: what it costs there is
  the price of having it on in a process that loads in bulk. Target: <= 5 % more time.
- one statement a row: the same generator's rows written as an app writes, one
  ``execute_sql`` INSERT each (the recorder's worst case: tiny statements on a fast
  engine, every one timed, normalised and counted); reported per statement, not judged.

Exit status 1 when the target is missed (not with ``--smoke``).
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from db.access import as_system
from db.engines import open_database
from db.engines.base import insert_statement
from db.populate import COLUMNS, GalleryGenerator, GalleryPlan, populate, tag_vocabulary
from db.querylog import record_queries
from db.runner import Runner

PROJECT_DIR = Path(__file__).resolve().parents[1]
TARGET_OVERHEAD = 0.05


def fresh_database(folder, name):
    """Return a connected, fully migrated SQLite database in ``folder``."""
    database = open_database(f"sqlite:///{Path(folder) / name}")
    Runner(database, PROJECT_DIR / "migrations").migrate()
    return database


def populate_side(database, plan):
    """Run db.populate's load; return (seconds, statements)."""
    return populate(database, plan).seconds, None


def row_by_row_side(database, plan):
    """Write the generator's rows one INSERT each, in one transaction; return (seconds,
    statements)."""
    names = tag_vocabulary(plan.images)
    with database.atomic():
        tag_sql = insert_statement(database, "tags", ["name"])
        tag_ids = [database.execute_sql(tag_sql, (name,)).lastrowid for name in names]
    statements = {table: insert_statement(database, table, cols) for table, cols in COLUMNS.items()}
    count = 0
    started = time.perf_counter()
    with database.atomic():
        for table, batch in GalleryGenerator(plan, tag_ids).batches(lambda done, total: None):
            sql = statements[table]
            for row in batch:
                database.execute_sql(sql, row)
            count += len(batch)
    return time.perf_counter() - started, count


def run_once(side, recorded, plan, folder, run):
    """Run one side on a fresh database, the recorder on or off; return (seconds, statements)."""
    database = fresh_database(folder, f"{side.__name__}-{run}-{recorded}.db")
    recorder = record_queries(database) if recorded else None
    try:
        return side(database, plan)
    finally:
        if recorder:
            recorder.close()
        database.close()


def compare(side, title, plan, repeats, folder):
    """Time a side off and on, taking turns; return (off median, on median, statements)."""
    times = {False: [], True: []}
    statements = None
    for run in range(repeats):
        for recorded in (False, True) if run % 2 == 0 else (True, False):
            seconds, statements = run_once(side, recorded, plan, folder, run)
            times[recorded].append(seconds)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    overhead = on / off - 1
    print(f"{title:<30}{off:>11.3f}{on:>11.3f}{overhead:>+11.1%}", end="")
    if statements:
        print(f"   {(on - off) / statements * 1e6:+.1f} µs a statement ({statements:,})")
    else:
        print()
    return overhead


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--smoke", action="store_true", help="print the figures, check no target (CI, tiny sizes)"
    )
    args = parser.parse_args()
    plan = GalleryPlan.sized(images=args.images, seed=args.seed)
    print(f"SQLite, {plan.images:,} images, {plan.users:,} users; medians of {args.repeats}")
    print(f"{'':<30}{'off s':>11}{'on s':>11}{'overhead':>11}")
    with tempfile.TemporaryDirectory() as folder:
        populated = compare(populate_side, "db.populate", plan, args.repeats, folder)
        compare(row_by_row_side, "one statement a row", plan, args.repeats, folder)
    met = populated <= TARGET_OVERHEAD
    print(
        f"db.populate with the recorder on: {populated:+.1%} "
        f"(target <= {TARGET_OVERHEAD:.0%}) {'PASS' if met else 'FAIL'}"
    )
    return 0 if args.smoke or met else 1


if __name__ == "__main__":
    with as_system():  # a benchmark is maintenance code: it writes with no acting user
        sys.exit(main())
