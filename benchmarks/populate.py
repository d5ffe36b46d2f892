"""Benchmark db.populate against the floor: the driver's own fastest load of the same rows.

    python benchmarks/populate.py                      # 1,000,000 images: SQLite, PostgreSQL
    python benchmarks/populate.py --engine postgres --images 100000
    nox -s bench -- --images 100000

For each engine, both sides start from a fresh, fully migrated database (same indexes
and triggers) and write the same rows in one transaction:

- SQLite: the floor is plain ``sqlite3`` ``executemany``; target: populate >= 50 % of it;
- PostgreSQL: the floor is ``COPY ... FROM STDIN`` through psycopg; target: >= 40 %.

The floor's clock runs only around its load calls (its rows are generated outside the
clock); db.populate's clock runs around everything it does, generating the rows included.
Each side runs in its own process, so its peak RSS is its own (target: populate < 500 MB).
Exit status 1 when a target is missed.
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

from db.access import as_system
from db.engines import engine_for_url, open_database
from db.engines.base import quoted
from db.models import Tag
from db.populate import COLUMNS, GalleryGenerator, GalleryPlan, populate, tag_vocabulary
from db.runner import Runner

PROJECT_DIR = Path(__file__).resolve().parents[1]
TARGET_RATIO = {"sqlite": 0.5, "postgres": 0.4}
FLOOR_NAME = {"sqlite": "floor (executemany)", "postgres": "floor (COPY)"}
TARGET_RSS_MB = 500
POSTGRES_SERVER = os.environ.get(
    "CLONEGALLERY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432"
)


def migrate(url):
    """Bring the database at ``url`` (created if needed) fully up to date."""
    database = open_database(url)
    Runner(database, PROJECT_DIR / "migrations").migrate()
    database.close()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_populate(url, plan):
    database = open_database(url)
    result = populate(database, plan)
    database.close()
    return {"rows": result.total_rows, "seconds": result.seconds}


def create_tags(url, plan):
    """Insert the tag vocabulary (outside the floor's clock); return the tag ids in order."""
    database = open_database(url)
    with database.bind_ctx([Tag]):
        names = tag_vocabulary(plan.images)
        Tag.insert_many([{"name": n} for n in names]).execute()
        ids = dict(Tag.select(Tag.name, Tag.id).tuples())
    database.close()
    return [ids[name] for name in names]


def run_sqlite_floor(url, plan):
    tag_ids = create_tags(url, plan)
    connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA journal_mode = WAL")
    statements = {
        table: f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})"
        for table, columns in COLUMNS.items()
    }
    rows, seconds = timed_load(
        plan,
        tag_ids,
        begin=lambda: connection.execute("BEGIN"),
        load=lambda table, batch: connection.executemany(statements[table], batch),
        commit=lambda: connection.execute("COMMIT"),
    )
    connection.close()
    return {"rows": len(tag_ids) + rows, "seconds": seconds}


def run_postgres_floor(url, plan):
    tag_ids = create_tags(url, plan)
    database = open_database(url, create=False)
    connection = database.connection()

    def copy(table, batch):
        listed = ", ".join(quoted(database, c) for c in COLUMNS[table])
        with connection.cursor() as cursor:
            statement = f"COPY {quoted(database, table)} ({listed}) FROM STDIN"
            with cursor.copy(statement) as stream:
                for row in batch:
                    stream.write_row(row)

    rows, seconds = timed_load(
        plan,
        tag_ids,
        begin=lambda: None,  # psycopg opens the transaction with the first statement
        load=copy,
        commit=connection.commit,
    )
    database.close()
    return {"rows": len(tag_ids) + rows, "seconds": seconds}


def timed_load(plan, tag_ids, begin, load, commit):
    """Load every generated batch in one transaction; return (rows, seconds spent loading)."""
    rows, seconds = 0, 0.0
    begin()
    for table, batch in GalleryGenerator(plan, tag_ids).batches(lambda done, total: None):
        started = time.perf_counter()
        load(table, batch)
        seconds += time.perf_counter() - started
        rows += len(batch)
    started = time.perf_counter()
    commit()
    return rows, seconds + time.perf_counter() - started


FLOORS = {"sqlite": run_sqlite_floor, "postgres": run_postgres_floor}


def run_side(engine, side, url, plan):
    """Run one side in this process and print its figures as JSON."""
    migrate(url)
    figures = (FLOORS[engine] if side == "floor" else run_populate)(url, plan)
    figures["rss_mb"] = peak_rss_mb()
    print(json.dumps(figures))


def measure(engine, side, url, args):
    command = [
        sys.executable, __file__, "--engine", engine, "--side", side, "--url", url,
        "--images", str(args.images), "--users", str(args.users), "--seed", str(args.seed),
    ]  # fmt: skip
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])


def compare(engine, args, folder):
    """Measure floor and populate on one engine, print the table; return whether targets met."""
    urls = {side: side_url(engine, side, folder) for side in ("floor", "populate")}
    try:
        floor = measure(engine, "floor", urls["floor"], args)
        ours = measure(engine, "populate", urls["populate"], args)
    finally:
        for url in urls.values():
            engine_for_url(url).drop(url)
    floor_rate = floor["rows"] / floor["seconds"]
    our_rate = ours["rows"] / ours["seconds"]
    ratio, target = our_rate / floor_rate, TARGET_RATIO[engine]
    print(f"\n{engine}: {args.images:,} images, {args.users:,} users, seed {args.seed}")
    print(f"{'':<22}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'peak RSS MB':>13}")
    for name, figures, rate in ((FLOOR_NAME[engine], floor, floor_rate),
                                ("db.populate", ours, our_rate)):  # fmt: skip
        print(
            f"{name:<22}{figures['rows']:>12,}{figures['seconds']:>10.1f}"
            f"{rate:>12,.0f}{figures['rss_mb']:>13.0f}"
        )
    rate_ok, rss_ok = ratio >= target, ours["rss_mb"] < TARGET_RSS_MB
    print(f"ratio populate/floor: {ratio:.0%} (target >= {target:.0%}) "
          f"{'PASS' if rate_ok else 'FAIL'}")  # fmt: skip
    print(f"populate peak RSS: {ours['rss_mb']:.0f} MB (target < {TARGET_RSS_MB} MB) "
          f"{'PASS' if rss_ok else 'FAIL'}")  # fmt: skip
    return rate_ok and rss_ok


def side_url(engine, side, folder):
    if engine == "sqlite":
        return f"sqlite:///{Path(folder) / f'{side}.db'}"
    return f"{POSTGRES_SERVER}/cgbench_{side}_{os.getpid()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=None, help="default: images / 20")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engine", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument("--side", choices=("floor", "populate"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument(
        "--smoke", action="store_true", help="print the figures, check no target (CI, tiny sizes)"
    )
    args = parser.parse_args()
    plan = GalleryPlan.sized(images=args.images, users=args.users, seed=args.seed)
    args.users = plan.users
    if args.side:
        run_side(args.engine, args.side, args.url, plan)
        return 0

    engines = ("sqlite", "postgres") if args.engine == "all" else (args.engine,)
    with tempfile.TemporaryDirectory() as folder:
        results = [compare(engine, args, folder) for engine in engines]
    return 0 if args.smoke or all(results) else 1


if __name__ == "__main__":
    with as_system():  # a benchmark is maintenance code: it writes with no acting user
        sys.exit(main())
