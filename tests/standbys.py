"""What the standby tests of every engine share (tests/test_standby.py: PostgreSQL;
tests/test_standby_mysql.py: MariaDB): the tasks that write, and small probes.

    status_of(url)["replication"]       # db.status --json's replication object
    write_on_primary(primary_url, 50)   # 50 new tags committed on the primary
    eventually(lambda: probe())         # polled until true, or the test fails
"""

import json
import time
import uuid

from db.engines import open_database
from tests.conftest import ok, run_invoke

# Each refused on a standby before it runs, naming the primary.
WRITING_TASKS = [
    ("db.migrate",),
    ("db.setup",),
    ("db.seed",),
    ("db.seed", "--force"),
    ("db.reset",),  # refused before it asks to confirm
    ("db.reset", "--yes"),
    ("db.reset", "--yes", "--data-only"),
    ("db.populate", "--images", "20"),
    ("db.rollback",),
    ("db.repair",),
    ("db.baseline", "003"),
    ("db.optimize",),
    ("db.replicate", "--init"),  # continuous protection is of the primary
]


def status_of(url):
    return json.loads(ok(run_invoke("db.status", "--json", url=url)).stdout)


def write_on_primary(primary_url, rows=50):
    """Commit ``rows`` new tags on the primary."""
    database = open_database(primary_url, create=False)
    try:
        for _ in range(rows):
            database.execute_sql("INSERT INTO tags (name) VALUES (%s)", (uuid.uuid4().hex,))
    finally:
        database.close()


def eventually(probe, timeout=10):
    """Return ``probe()`` once it is true, polling; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.1)
    return result


def tag_count(url):
    database = open_database(url, create=False)
    try:
        return database.execute_sql("SELECT count(*) FROM tags").fetchone()[0]
    finally:
        database.close()
