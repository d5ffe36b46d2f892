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
import warnings

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


def drop_database(url, attempts=6):
    """Drop a test database if it exists.

    MariaDB's DROP DATABASE now and then fails with errno 39 ("Directory not empty"):
    its tables are gone but a file the server did not recognise stays in the database's
    folder. A retry usually succeeds; if it does not, the server's documented remedy is
    to remove what is left of that folder by hand, which the test run does for its own
    throwaway database when it can reach the server's data directory, with a warning
    naming the files.
    """
    for attempt in range(attempts):
        try:
            engine_for_url(url).drop(url)
            return
        except peewee.OperationalError as error:
            if attempt == attempts - 1:
                if not ("errno: 39" in str(error) and remove_leftover_files(url)):
                    raise
                engine_for_url(url).drop(url)
                return
            time.sleep(0.5 * (attempt + 1))


def remove_leftover_files(url):
    """Remove what DROP DATABASE left in a MariaDB test database's folder; True if done."""
    name = database_name_of(url)
    if not name.startswith("cgtest_"):
        return False
    root = open_database(f"{SERVERS['mysql']}/{MAINTENANCE['mysql']}", create=False)
    try:
        (datadir,) = root.execute_sql("SELECT @@datadir").fetchone()
    finally:
        root.close()
    folder = os.path.join(datadir, name)
    try:
        leftovers = sorted(os.listdir(folder))
        for leftover in leftovers:
            os.unlink(os.path.join(folder, leftover))
    except OSError:
        return False
    warnings.warn(f"DROP DATABASE {name} left {leftovers} in {folder}; removed them", stacklevel=2)
    return True


def require_server(engine):
    """Skip unless the engine is selected; a selected but unreachable server fails on CI."""
    if engine not in selected_engines():
        pytest.skip(f"{engine} not selected (CLONEGALLERY_TEST_ENGINES)")
    if problem := server_problem(engine):
        if os.environ.get("CI"):
            pytest.fail(f"{engine} server unreachable on CI: {problem}")
        pytest.skip(f"{engine} server unreachable: {problem}")
