"""A database URL that cannot name a lasting database is refused by every task, in one line.

An in-memory SQLite database is gone when the task ends (migrations applied to nothing, a
backup of an empty database); a server URL without a database name cannot say which
database to use. Both are refused with exit 2 before anything is opened or written, and a
password in the URL is shown as ``***``.
"""

from urllib.parse import urlsplit

import pytest

from tasks import ns
from tests import servers
from tests.conftest import one_error_line, run_invoke

PASSWORD = "wrong-secret"  # wrong on purpose: nothing may log in with it, or print it


def nameless(engine, trailing_slash=True):
    """Return the URL of the engine's test server with a password and no database name."""
    parts = urlsplit(servers.SERVERS[engine])
    user, host = parts.netloc.rsplit("@", 1)
    url = f"{parts.scheme}://{user.split(':')[0]}:{PASSWORD}@{host}"
    return url + "/" if trailing_slash else url


def masked(url):
    return url.replace(f":{PASSWORD}@", ":***@")


IN_MEMORY = "sqlite:///:memory:"
POSTGRES_NAMELESS = nameless("postgres")

# Every db.* task, with the arguments that get it as far as its database.
TASK_ARGUMENTS = {
    "db.setup": (),
    "db.migrate": (),
    "db.lint": (),
    "db.baseline": ("003",),
    "db.rollback": (),
    "db.repair": (),
    "db.seed": (),
    "db.reset": ("--yes",),
    "db.populate": ("--images", "1"),
    "db.transfer": ("--to", "sqlite:///copy.db"),
    "db.backup": (),
    "db.backups": (),
    "db.verify": ("backup.db",),
    "db.restore": ("backup.db", "--yes"),
    "db.status": (),
    "db.stats": (),
    "db.top": (),
    "db.new-migration": ("add karma to users",),
    "db.schema": (),
    "db.optimize": (),
    "db.explain": ("--builtin",),
    "db.diagram": (),
    "db.check": (),
    "db.replicate": (),
    "db.health": (),
    "db.locks": (),
    "db.tenants": (),
    "db.tenant-create": ("acme",),
    "db.tenant-drop": ("acme", "--yes"),
}
# A check that cannot run is UNKNOWN to a monitoring system: db.health exits 3 on any error.
REFUSAL_EXIT = {"db.health": 3}
REPORTED_TASKS = ("db.status", "db.stats", "db.schema", "db.backup")  # where issue 11 saw it


@pytest.fixture
def workdir(tmp_path, project_migrations, monkeypatch):
    """The tasks' working folder (relative files land here), with the project's migrations."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke_in(workdir, *args, url):
    """Run a task on ``url`` with backups kept in ``workdir``/backups."""
    return run_invoke(
        *args,
        url=url,
        migrations_dir=workdir / "migrations",
        env={"INVOKE_DB_BACKUPS": str(workdir / "backups")},
    )


def contents(folder):
    """Return every path under ``folder`` with its size: what a refused task must not change."""
    return sorted((path.relative_to(folder), path.stat().st_size) for path in folder.rglob("*"))


def refused(result, url, *names, task=None):
    """Assert one masked error line with exit 2 (or the task's REFUSAL_EXIT), naming
    ``url``; return the line."""
    assert PASSWORD not in result.stdout + result.stderr
    return one_error_line(result, REFUSAL_EXIT.get(task, 2), masked(url), *names)


def test_the_tables_here_cover_every_db_task():
    assert {f"db.{name}" for name in ns.collections["db"].task_names} == set(TASK_ARGUMENTS)


# -- an in-memory SQLite database -----------------------------------------------------------


@pytest.mark.parametrize("task", TASK_ARGUMENTS)
def test_an_in_memory_sqlite_database_is_refused_by_every_task(task, workdir):
    before = contents(workdir)

    result = invoke_in(workdir, task, *TASK_ARGUMENTS[task], url=IN_MEMORY)

    refused(result, IN_MEMORY, "DATABASE_URL", "in-memory", "sqlite:///clonegallery.db", task=task)
    assert contents(workdir) == before


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:?cache=shared",
        "sqlite:///file::memory:",
        "sqlite:///file::memory:?uri=true",
        "sqlite:///file:%3Amemory%3A",
        "sqlite:///gallery.db?mode=memory",
        "sqlite+pool:///:memory:",
    ],
)
def test_every_spelling_of_an_in_memory_sqlite_database_is_refused(url, workdir):
    before = contents(workdir)

    result = invoke_in(workdir, "db.setup", url=url)

    refused(result, url, "in-memory")
    assert contents(workdir) == before


def test_an_in_memory_database_in_invoke_configuration_is_refused_naming_db_url(workdir):
    before = contents(workdir)

    result = run_invoke(
        "db.backup",
        migrations_dir=workdir / "migrations",
        env={"INVOKE_DB_URL": IN_MEMORY, "INVOKE_DB_BACKUPS": str(workdir / "backups")},
    )

    refused(result, IN_MEMORY, "db.url", "in-memory")
    assert contents(workdir) == before


# -- a server URL without a database name ---------------------------------------------------


@pytest.mark.parametrize("task", TASK_ARGUMENTS)
def test_a_server_url_without_a_database_name_is_refused_by_every_task(task, workdir):
    before = contents(workdir)

    result = invoke_in(workdir, task, *TASK_ARGUMENTS[task], url=POSTGRES_NAMELESS)

    refused(
        result,
        POSTGRES_NAMELESS,
        "DATABASE_URL",
        "has no database name",
        masked(POSTGRES_NAMELESS) + "clonegallery",
        task=task,
    )
    assert contents(workdir) == before


@pytest.mark.parametrize("task", REPORTED_TASKS)
@pytest.mark.parametrize(
    "url",
    [nameless("postgres", trailing_slash=False), nameless("mysql"), nameless("mysql", False)],
    ids=["postgres-no-slash", "mysql", "mysql-no-slash"],
)
def test_with_or_without_the_slash_on_either_server_it_is_one_masked_line(url, task, workdir):
    before = contents(workdir)

    result = invoke_in(workdir, task, url=url)

    line = refused(result, url, "has no database name")
    assert line.endswith(f"{masked(url).rstrip('/')}/clonegallery")
    assert contents(workdir) == before


def test_debug_shows_the_traceback_but_never_the_password(workdir):
    result = invoke_in(workdir, "db.status", "--debug", url=POSTGRES_NAMELESS)

    assert result.returncode == 2
    assert PASSWORD not in result.stdout + result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"error: DATABASE_URL {masked(POSTGRES_NAMELESS)}"
    )


# -- db.transfer --to ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "named"),
    [
        (IN_MEMORY, "in-memory"),
        ("sqlite://", "in-memory"),
        ("sqlite:///file::memory:", "in-memory"),
        (POSTGRES_NAMELESS, "has no database name"),
        (nameless("mysql", trailing_slash=False), "has no database name"),
    ],
    ids=["memory", "empty-path", "file-uri", "postgres-nameless", "mysql-nameless"],
)
def test_transfer_to_a_url_that_names_no_lasting_database_is_refused(
    to, named, workdir, migrated_db, db_url
):
    before = contents(workdir)

    result = invoke_in(workdir, "db.transfer", "--to", to, url=db_url)

    refused(result, to, "--to", named)
    assert contents(workdir) == before
