"""The database servers the engine-parametrized tests run against, and their test databases.

Each test gets a database of its own with a parallel-safe name, created lazily (by the
tool under test, as a user's database would be) and dropped afterwards. Which engines
run comes from ``CLONEGALLERY_TEST_ENGINES`` (default: all three); where a server lives
from ``CLONEGALLERY_TEST_POSTGRES`` / ``CLONEGALLERY_TEST_MYSQL``.
"""

import contextlib
import functools
import os
import time
import uuid

import peewee
import pytest

from db.engines import engine_for_url, open_database
from db.engines.base import database_name_of
from db.errors import DbError

ENGINES = ("sqlite", "postgres", "mysql")
SERVERS = {
    "postgres": os.environ.get(
        "CLONEGALLERY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432"
    ),
    "mysql": os.environ.get("CLONEGALLERY_TEST_MYSQL", "mysql://root@127.0.0.1:3306"),
}
MAINTENANCE = {"postgres": "postgres", "mysql": "information_schema"}


def selected_engines():
    """Return the engines to test, from CLONEGALLERY_TEST_ENGINES."""
    wanted = os.environ.get("CLONEGALLERY_TEST_ENGINES", ",".join(ENGINES)).split(",")
    return [engine for engine in ENGINES if engine in wanted]


@functools.cache
def server_problem(engine):
    """Return why the engine's server cannot be used, or None when it can."""
    try:
        open_database(f"{SERVERS[engine]}/{MAINTENANCE[engine]}", create=False).close()
    except DbError as exc:
        return str(exc)
    return None


def new_database_url(engine):
    """Return the URL of a test database that does not exist yet."""
    return f"{SERVERS[engine]}/cgtest_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def mysql_user(url, password):
    """Yield the name of a MySQL user made for a test, with ``password`` and every right
    on the database of ``url`` and its side databases (``<name>_%``) but none to create
    accounts; dropped afterwards."""
    name = database_name_of(url)
    user = f"cg_{uuid.uuid4().hex[:8]}"
    root = open_database(f"{SERVERS['mysql']}/{MAINTENANCE['mysql']}", create=False)
    try:
        root.execute_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
        for databases in (f"`{name}`", f"`{name}\\_%%`"):
            root.execute_sql(f"GRANT ALL PRIVILEGES ON {databases}.* TO '{user}'@'%%'")
        yield user
    finally:
        root.execute_sql(f"DROP USER IF EXISTS '{user}'@'%%'")
        root.close()


def drop_database(url, attempts=5):
    """Drop a test database if it exists.

    MariaDB's DROP DATABASE now and then fails with errno 39 ("Directory not empty")
    while the server still tidies up files of a table just dropped; a retry succeeds.
    """
    for attempt in range(attempts):
        try:
            engine_for_url(url).drop(url)
            return
        except peewee.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


def require_server(engine):
    """Skip unless the engine is selected; a selected but unreachable server fails on CI."""
    if engine not in selected_engines():
        pytest.skip(f"{engine} not selected (CLONEGALLERY_TEST_ENGINES)")
    if problem := server_problem(engine):
        if os.environ.get("CI"):
            pytest.fail(f"{engine} server unreachable on CI: {problem}")
        pytest.skip(f"{engine} server unreachable: {problem}")
