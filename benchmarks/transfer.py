"""Benchmark db.transfer from SQLite to PostgreSQL against the floor: plain COPY of the rows.

    python benchmarks/transfer.py                      # a source of 1,000,000 images
    python benchmarks/transfer.py --images 100000
    nox -s bench -- --images 100000

The source is an SQLite gallery made by db.setup's seeders and db.populate; it is built
once and kept for later runs in SOURCE_DIR (in the temporary folder). Then each side
runs in its own process (so its peak RSS is its own) into a fresh PostgreSQL database:

- the floor: the schema made by the migrations (off the clock), then every table read
  with ``sqlite3`` and loaded with psycopg's ``COPY ... FROM STDIN``, one statement per
  table, parents first, in one transaction; nothing is checked;
- db.transfer: all it does on the clock (create and migrate the target, copy in batches
  of 5,000 rows inside one read of the source, checksum both sides, compare).

Both rates are the same rows over each side's seconds. Targets: db.transfer >= 40 % of
the floor's rows/s, peak RSS < 500 MB; exit status 1 when one is missed.
"""

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from db.access import as_system
from db.engines import engine_for_url, open_database
from db.history import SeederHistory
from db.populate import GalleryPlan, populate
from db.runner import Runner
from db.seeders import Seeder
from db.target import Target
from db.transfer import DEFAULT_BATCH, plan_tables, transfer

PROJECT_DIR = Path(__file__).resolve().parents[1]
MIGRATIONS_DIR = PROJECT_DIR / "migrations"
SOURCE_DIR = Path(tempfile.gettempdir()) / "clonegallery-bench"
TARGET_RATIO = 0.4
TARGET_RSS_MB = 500
READ_ROWS = 10_000  # the floor's fetchmany size
POSTGRES_SERVER = os.environ.get(
    "CLONEGALLERY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432"
)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def source_url(plan):
    return f"sqlite:///{SOURCE_DIR / f'transfer-source-{plan.images}-{plan.users}-{plan.seed}.db'}"


def ensure_source(plan):
    """Build the SQLite source unless a complete one is kept from an earlier run; return
    (its URL, seconds spent building it or None)."""
    url = source_url(plan)
    if _complete(url, plan):
        return url, None
    started = time.perf_counter()
    SOURCE_DIR.mkdir(exist_ok=True)
    engine_for_url(url).drop(url)
    database = open_database(url)
    Runner(database, MIGRATIONS_DIR).migrate()
    Seeder(database, PROJECT_DIR / "seeders").seed()
    populate(database, plan)  # one transaction: a killed build leaves no images
    database.close()
    return url, time.perf_counter() - started


def _complete(url, plan):
    path = url.removeprefix("sqlite:///")
    if not Path(path).exists():
        return False
    with sqlite3.connect(path) as connection:
        try:
            (count,) = connection.execute(
                "SELECT COUNT(*) FROM images WHERE id LIKE ?", (f"{plan.prefix}%",)
            ).fetchone()
        except sqlite3.DatabaseError:
            return False
    return count == plan.images


def run_floor(source, target):
    """Migrate the target (off the clock), then COPY every table into it; return figures."""
    database = open_database(target)
    Runner(database, MIGRATIONS_DIR).migrate()
    SeederHistory(database).ensure_table()
    database.close()
    database = open_database(source, create=False)
    plan = plan_tables(database)  # the tables, parents first
    database.close()
    reader = sqlite3.connect(source.removeprefix("sqlite:///"))
    rows, started = 0, time.perf_counter()
    with psycopg.connect(target) as writer:  # one transaction, committed on leaving
        for copy in plan:
            listed = ", ".join(f'"{column}"' for column in copy.columns)
            cursor = reader.execute(f'SELECT {listed} FROM "{copy.table}"')
            with writer.cursor().copy(f'COPY "{copy.table}" ({listed}) FROM STDIN') as stream:
                while batch := cursor.fetchmany(READ_ROWS):
                    for row in batch:
                        stream.write_row(row)
                    rows += len(batch)
    return {"rows": rows, "seconds": time.perf_counter() - started}


def run_transfer(source, target):
    """Transfer the source to the target; return figures."""
    origin = Target(source)
    with origin.opened():
        started = time.perf_counter()
        result = transfer(origin, target, MIGRATIONS_DIR, batch=DEFAULT_BATCH)
        seconds = time.perf_counter() - started
    return {"rows": result.total_rows, "seconds": seconds}


SIDES = {"floor": run_floor, "transfer": run_transfer}


def measure(side, source, target):
    """Run one side in a process of its own; return its figures."""
    command = [sys.executable, __file__, "--side", side, "--source", source, "--target", target]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])


def compare(plan):
    """Measure floor and transfer, print the table; return whether the targets were met."""
    source, built = ensure_source(plan)
    targets = {side: f"{POSTGRES_SERVER}/cgbench_transfer_{side}_{os.getpid()}" for side in SIDES}
    try:
        figures = {side: measure(side, source, targets[side]) for side in SIDES}
    finally:
        for url in targets.values():
            engine_for_url(url).drop(url)
    rates = {side: figures[side]["rows"] / figures[side]["seconds"] for side in SIDES}
    ratio = rates["transfer"] / rates["floor"]
    how = f"built in {built:.0f} s" if built is not None else "kept from an earlier run"
    print(f"\nsqlite -> postgres: {plan.images:,} images, {plan.users:,} users, seed {plan.seed}")
    print(f"source: {source} ({how})")
    print(f"{'':<22}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'peak RSS MB':>13}")
    for side, name in (("floor", "floor (COPY)"), ("transfer", "db.transfer")):
        print(
            f"{name:<22}{figures[side]['rows']:>12,}{figures[side]['seconds']:>10.1f}"
            f"{rates[side]:>12,.0f}{figures[side]['rss_mb']:>13.0f}"
        )
    rate_ok = ratio >= TARGET_RATIO
    rss_ok = figures["transfer"]["rss_mb"] < TARGET_RSS_MB
    print(f"ratio transfer/floor: {ratio:.0%} (target >= {TARGET_RATIO:.0%}) "
          f"{'PASS' if rate_ok else 'FAIL'}")  # fmt: skip
    print(f"transfer peak RSS: {figures['transfer']['rss_mb']:.0f} MB "
          f"(target < {TARGET_RSS_MB} MB) {'PASS' if rss_ok else 'FAIL'}")  # fmt: skip
    return rate_ok and rss_ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=None, help="default: images / 20")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--engine", choices=("sqlite", "postgres", "all"), default="all",
        help="as benchmarks/populate.py takes (nox -s bench passes it to both); "
        "the transfer runs unless it is sqlite only",
    )  # fmt: skip
    parser.add_argument("--side", choices=tuple(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument(
        "--smoke", action="store_true", help="print the figures, check no target (CI, tiny sizes)"
    )
    args = parser.parse_args()
    if args.side:
        figures = SIDES[args.side](args.source, args.target)
        print(json.dumps({**figures, "rss_mb": peak_rss_mb()}))
        return 0
    if args.engine == "sqlite":
        return 0
    plan = GalleryPlan.sized(images=args.images, users=args.users, seed=args.seed)
    return 0 if compare(plan) or args.smoke else 1


if __name__ == "__main__":
    with as_system():  # a benchmark is maintenance code: it writes with no acting user
        sys.exit(main())
