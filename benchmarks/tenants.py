"""Benchmark db.migrate --all-tenants on PostgreSQL against one psql call per tenant.

    python benchmarks/tenants.py                   # 1,000 tenants
    python benchmarks/tenants.py --tenants 100 --jobs 4
    nox -s bench -- tenants --tenants 200

A scratch database gets N tenants (a schema and a role each, db.tenants), migrated to the
project's latest version off the clock. Then one new migration (a column added to
images, recorded in each tenant's history) is applied to every tenant, timed three ways:

- ``db.migrate --all-tenants --jobs J``: the toolkit, as an operator runs it;
- the shell loop it replaces: ``psql`` once per tenant, one after the other, each running
  the same ALTER and history INSERT in one transaction;
- the same ``psql`` calls, J at a time (``xargs -P J``'s way).

Each prints tenants per second, side by side. Target: the toolkit at least as fast as
the sequential loop (it plans, locks and records each tenant, and checks its history);
exit status 1 when it is missed.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

from db.engines import engine_for_url  # noqa: E402
from db.engines.postgres import tenant_schema  # noqa: E402
from db.tenants import tenant_url  # noqa: E402

POSTGRES_SERVER = os.environ.get(
    "CLONEGALLERY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432"
)
TARGET_RATIO = 1.0  # the toolkit's tenants/s over the sequential psql loop's
NEW_MIGRATION = "900_bench_caption_language"
OURS_SQL = (
    "-- migrate:up\nALTER TABLE images ADD COLUMN caption_language VARCHAR(8);\n"
    "-- migrate:down\nALTER TABLE images DROP COLUMN caption_language;\n"
)
# Each side adds a column of its own to every tenant's images, and records it as applied.
LOOP_CHANGE, XARGS_CHANGE = ("caption_region", "901"), ("caption_script", "902")
PSQL_SQL = (
    "BEGIN; SET LOCAL search_path TO {schema}; "
    "ALTER TABLE images ADD COLUMN {column} VARCHAR(8); "
    "INSERT INTO migrations (version, name, applied_at, checksum, duration_ms) "
    "VALUES ('{version}', '{version}_bench_{column}', now(), 'psql', 0); COMMIT;"
)


def main():
    options = parse_options()
    url = f"{POSTGRES_SERVER}/clonegallery_bench_tenants_{os.getpid()}"
    engine = engine_for_url(url)
    names = [f"t{number:05d}" for number in range(options.tenants)]
    migrations = Path(tempfile.mkdtemp(prefix="bench-tenants-"))
    try:
        started = time.perf_counter()
        engine.create(url)
        for name in names:
            engine.create(tenant_url(url, name))
        for migration in (PROJECT_DIR / "migrations").iterdir():
            if migration.suffix in (".py", ".sql"):
                shutil.copy(migration, migrations)
        run_toolkit(url, migrations, options.jobs)  # every tenant at the latest version
        print(f"setup: {options.tenants} tenants migrated in {time.perf_counter() - started:.1f} s")

        (migrations / f"{NEW_MIGRATION}.sql").write_text(OURS_SQL)
        ours = timed(lambda: run_toolkit(url, migrations, options.jobs))
        loop = timed(lambda: [run_psql(url, name, *LOOP_CHANGE) for name in names])
        with ThreadPoolExecutor(options.jobs) as pool:
            parallel = timed(
                lambda: list(pool.map(lambda n: run_psql(url, n, *XARGS_CHANGE), names))
            )
        check_applied(url, names)
    finally:
        engine.drop(url)
        shutil.rmtree(migrations, ignore_errors=True)
    return report(options, ours, loop, parallel)


def parse_options():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="check no target")
    return parser.parse_args()


def run_toolkit(url, migrations, jobs):
    command = [sys.executable, "-m", "invoke", "-r", str(PROJECT_DIR)]
    command += ["db.migrate", "--all-tenants", "--jobs", str(jobs)]
    env = {**os.environ, "DATABASE_URL": url, "INVOKE_DB_MIGRATIONS": str(migrations)}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"db.migrate --all-tenants failed: {result.stdout[-2000:]}{result.stderr}")


def run_psql(url, name, column, version):
    schema = tenant_schema(name)
    base = url.rsplit("/", 1)
    command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", base[1]]
    command += ["-c", PSQL_SQL.format(schema=schema, column=column, version=version)]
    host, port = base[0].split("@")[1].split(":")
    env = {**os.environ, "PGHOST": host, "PGPORT": port, "PGUSER": "postgres"}
    subprocess.run(command, env=env, check=True, capture_output=True)


def timed(work):
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def check_applied(url, names):
    """Fail unless every tenant has the three new columns: each side did its work."""
    database = engine_for_url(url).connect(url)
    try:
        (count,) = database.execute_sql(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'images' "
            "AND column_name IN ('caption_language', 'caption_region', 'caption_script') "
            "AND starts_with(table_schema, 'tenant_')"
        ).fetchone()
    finally:
        database.close()
    if count != 3 * len(names):
        sys.exit(f"expected 3 new columns in {len(names)} tenants, found {count} in all")


def report(options, ours, loop, parallel):
    count = options.tenants
    print(f"{'applying one migration to':<34} {'seconds':>8} {'tenants/s':>10}")
    rows = (
        (f"db.migrate --all-tenants --jobs {options.jobs}", ours),
        ("psql per tenant, one at a time", loop),
        (f"psql per tenant, {options.jobs} at a time", parallel),
    )
    for label, seconds in rows:
        print(f"{label:<34} {seconds:>8.2f} {count / seconds:>10.1f}")
    ratio = loop / ours
    print(f"toolkit / sequential psql loop: {ratio:.2f}x (target >= {TARGET_RATIO:.1f}x)")
    if options.smoke or ratio >= TARGET_RATIO:
        return 0
    print("target missed")
    return 1


if __name__ == "__main__":
    sys.exit(main())
