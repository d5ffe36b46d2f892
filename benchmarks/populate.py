"""Benchmark db.populate against the floor: plain sqlite3 executemany of the same rows.

    python benchmarks/populate.py                    # 1,000,000 images (the target run)
    python benchmarks/populate.py --images 100000    # a quicker look
    nox -s bench -- --images 100000

Both sides start from a fresh, fully migrated SQLite database (same indexes and
triggers) and write the same rows, each in one transaction. The floor's clock runs
only around its executemany calls (its rows are generated outside the clock), so it
is the fastest these rows can go in from Python; db.populate's clock runs around
everything it does, generating the rows included. Each side runs in its own process,
so its peak RSS is its own.

Targets: populate's rows/second >= 50 % of the floor's; populate's peak RSS < 500 MB.
Exit status 1 when a target is missed.
"""

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from db.engines import open_database
from db.models import Tag
from db.populate import COLUMNS, GalleryGenerator, GalleryPlan, populate, tag_vocabulary
from db.runner import Runner

PROJECT_DIR = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.5
TARGET_RSS_MB = 500


def migrated(path):
    """Create a fully migrated SQLite database at ``path``; return its URL."""
    url = f"sqlite:///{path}"
    database = open_database(url)
    Runner(database, PROJECT_DIR / "migrations").migrate()
    database.close()
    return url


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_populate(url, plan):
    database = open_database(url)
    result = populate(database, plan)
    database.close()
    return {"rows": result.total_rows, "seconds": result.seconds}


def run_floor(url, plan):
    # Tags first, outside the clock: the generator needs their ids.
    database = open_database(url)
    with database.bind_ctx([Tag]):
        names = tag_vocabulary(plan.images)
        Tag.insert_many([{"name": n} for n in names]).execute()
        ids = dict(Tag.select(Tag.name, Tag.id).tuples())
    database.close()
    tag_ids = [ids[name] for name in names]

    connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA journal_mode = WAL")
    statements = {
        table: f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})"
        for table, columns in COLUMNS.items()
    }
    rows, seconds = len(tag_ids), 0.0
    connection.execute("BEGIN")
    for table, batch in GalleryGenerator(plan, tag_ids).batches(lambda done, total: None):
        started = time.perf_counter()
        connection.executemany(statements[table], batch)
        seconds += time.perf_counter() - started
        rows += len(batch)
    started = time.perf_counter()
    connection.execute("COMMIT")
    seconds += time.perf_counter() - started
    connection.close()
    return {"rows": rows, "seconds": seconds}


def run_side(side, path, plan):
    """Run one side in this process and print its figures as JSON."""
    url = migrated(path)
    figures = (run_floor if side == "floor" else run_populate)(url, plan)
    figures["rss_mb"] = peak_rss_mb()
    print(json.dumps(figures))


def measure(side, folder, args):
    command = [
        sys.executable, __file__, "--side", side, "--db", str(folder / f"{side}.db"),
        "--images", str(args.images), "--users", str(args.users), "--seed", str(args.seed),
    ]  # fmt: skip
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=None, help="default: images / 20")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--side", choices=("floor", "populate"), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    plan = GalleryPlan.sized(images=args.images, users=args.users, seed=args.seed)
    args.users = plan.users
    if args.side:
        run_side(args.side, args.db, plan)
        return 0

    with tempfile.TemporaryDirectory() as folder:
        floor = measure("floor", Path(folder), args)
        ours = measure("populate", Path(folder), args)
    floor_rate = floor["rows"] / floor["seconds"]
    our_rate = ours["rows"] / ours["seconds"]
    ratio = our_rate / floor_rate
    print(f"populate benchmark: {args.images:,} images, {args.users:,} users, seed {args.seed}")
    print(f"{'':<22}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'peak RSS MB':>13}")
    for name, figures, rate in (("floor (executemany)", floor, floor_rate),
                                ("db.populate", ours, our_rate)):  # fmt: skip
        print(
            f"{name:<22}{figures['rows']:>12,}{figures['seconds']:>10.1f}"
            f"{rate:>12,.0f}{figures['rss_mb']:>13.0f}"
        )
    rate_ok, rss_ok = ratio >= TARGET_RATIO, ours["rss_mb"] < TARGET_RSS_MB
    print(f"ratio populate/floor: {ratio:.0%} (target >= {TARGET_RATIO:.0%}) "
          f"{'PASS' if rate_ok else 'FAIL'}")  # fmt: skip
    print(f"populate peak RSS: {ours['rss_mb']:.0f} MB (target < {TARGET_RSS_MB} MB) "
          f"{'PASS' if rss_ok else 'FAIL'}")  # fmt: skip
    return 0 if rate_ok and rss_ok else 1


if __name__ == "__main__":
    sys.exit(main())
