"""Shared fixtures: real SQLite files in a temporary folder, real database servers, real
subprocesses.

``engine`` is parametrized over the engines under test (tests/servers.py): a test that
uses it, or ``engine_url`` / ``engine_db`` / ``engine_migrated_db``, runs once per engine
and is marked ``engine``. ``target_engine`` / ``target_url`` are a second such axis, for
tests between two engines (db.transfer): with ``engine`` too, a test runs once per pair.
The ``db_path`` family is SQLite only.
"""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from db import backups
from db.access import as_system
from db.engines import open_database
from db.models import bind_models
from db.runner import Runner
from db.seeders import Seeder
from tests import servers

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def newest_version(folder=MIGRATIONS_DIR):
    """Return the version of the newest migration in ``folder``, e.g. "006"."""
    return max(path.name[:3] for path in folder.glob("[0-9]*"))


# The project's newest migration, and the version a test's own migration takes after
# it: computed, so that the project's next migration breaks no test.
LATEST_VERSION = newest_version()
NEXT_VERSION = f"{int(LATEST_VERSION) + 1:03d}"


def sqlite_url(path):
    """Return the URL of an SQLite file."""
    return f"sqlite:///{path}"


def run_invoke(*args, url=None, migrations_dir=None, env=None, timeout=120):
    """Run ``invoke ARGS`` from the project as a real subprocess; return the CompletedProcess."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    environment.pop("DATABASE_URL", None)
    if url is not None:
        environment["DATABASE_URL"] = url
    if migrations_dir is not None:
        environment["INVOKE_DB_MIGRATIONS"] = str(migrations_dir)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def ctrl_c_reaches_python():
    """A ``preexec_fn`` for a child that the test interrupts with SIGINT: a shell runs
    background jobs with SIGINT ignored, Python then installs no KeyboardInterrupt
    handler, and the child would never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ok(result):
    """Assert a command succeeded; return it."""
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def printed_path(result, label):
    """Return the path a successful command printed after ``label:`` at a line's start."""
    found = re.search(rf"^{label}: (\S+)", ok(result).stdout, re.MULTILINE)
    assert found, result.stdout
    return Path(found.group(1))


def one_error_line(result, exit_code, *names):
    """Assert the command failed with ``exit_code`` (None: any but 0), printing one
    ``error:`` line on stderr that names each of ``names`` and no traceback; return it."""
    if exit_code is None:
        assert result.returncode != 0, (result.stdout, result.stderr)
    else:
        assert result.returncode == exit_code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for name in names:
        assert name in line, f"{name!r} not named in {line!r}"
    return line


@pytest.fixture(autouse=True)
def maintenance_code():
    """Tests write as maintenance code (db.access.as_system) unless they say who acts:
    tests/test_access.py runs its writes inside acting_as(user)."""
    with as_system():
        yield


@pytest.fixture
def db_path(tmp_path):
    """A path for an SQLite file that does not exist yet."""
    return tmp_path / "clonegallery.db"


@pytest.fixture
def db_url(db_path):
    """The URL of ``db_path``."""
    return sqlite_url(db_path)


@pytest.fixture
def fresh_db(db_url):
    """A connected, empty SQLite database (foreign keys on, WAL)."""
    database = open_database(db_url)
    yield database
    database.close()


@pytest.fixture
def migrated_db(fresh_db):
    """An SQLite database with every project migration applied and the models bound to it."""
    Runner(fresh_db, MIGRATIONS_DIR).migrate()
    bind_models(fresh_db)
    return fresh_db


@pytest.fixture
def gallery(migrated_db, db_path):
    """A migrated and seeded SQLite gallery; returns its path."""
    Seeder(migrated_db, PROJECT_ROOT / "seeders").seed()
    return db_path


@pytest.fixture
def new_york_time(monkeypatch):
    """The machine's local time zone is not UTC (and back as it was afterwards)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def backups_dir(tmp_path):
    """Where the backup tests write backups (not created yet)."""
    return tmp_path / "backups"


@pytest.fixture
def foreign_backup(tmp_path):
    """Another application's SQLite file, with a manifest that matches it: a sound file
    that is not a CloneGallery backup."""
    foreign = tmp_path / "notes.db"
    with closing(sqlite3.connect(foreign)) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
        connection.commit()
    digest, size = backups.file_digest(foreign)
    manifest = {"engine": "sqlite", "sha256": digest, "size": size, "row_counts": {"notes": 0}}
    backups.manifest_path(foreign).write_text(json.dumps(manifest))
    return foreign


@pytest.fixture
def migrations_dir(tmp_path):
    """An empty migrations folder for tests that write their own migrations."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    return folder


@pytest.fixture
def project_migrations(migrations_dir):
    """A copy of the project's migrations in ``migrations_dir``, to edit or add to."""
    for path in MIGRATIONS_DIR.glob("[0-9]*"):
        shutil.copy(path, migrations_dir / path.name)
    return migrations_dir


def file_writer(folder):
    """Return ``write(name, text)``, which writes a file into ``folder`` and returns its path."""

    def write(name, text):
        path = folder / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def write_migration(migrations_dir):
    """Write a migration file into ``migrations_dir``: ``write_migration(name, text)``."""
    return file_writer(migrations_dir)


def pytest_generate_tests(metafunc):
    for axis in ("engine", "target_engine"):
        if axis in metafunc.fixturenames:
            metafunc.parametrize(axis, servers.selected_engines(), indirect=True)


def pytest_collection_modifyitems(items):
    for item in items:
        if {"engine", "target_engine"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)


@pytest.fixture
def engine(request):
    """The engine under test: sqlite, postgres or mysql (its server must be reachable)."""
    return _reachable(request.param)


@pytest.fixture
def target_engine(request):
    """The engine of a second database under test (a transfer's target), as ``engine``."""
    return _reachable(request.param)


def _reachable(name):
    if name != "sqlite":
        servers.require_server(name)
    return name


def _database_url(engine, tmp_path, name):
    """Yield the URL of a database that does not exist yet; drop it afterwards."""
    if engine == "sqlite":
        yield sqlite_url(tmp_path / f"{name}.db")
        return
    url = servers.new_database_url(engine)
    yield url
    servers.drop_database(url)


@pytest.fixture
def engine_url(engine, tmp_path):
    """The URL of a database of the engine under test that does not exist yet."""
    yield from _database_url(engine, tmp_path, "clonegallery")


@pytest.fixture
def other_engine_url(engine, tmp_path):
    """The URL of a second database of the engine under test, which does not exist yet."""
    yield from _database_url(engine, tmp_path, "other")


@pytest.fixture
def target_url(target_engine, tmp_path):
    """The URL of a database of ``target_engine`` that does not exist yet."""
    yield from _database_url(target_engine, tmp_path, "target")


@pytest.fixture
def engine_db(engine_url):
    """A connected, empty database of the engine under test."""
    database = open_database(engine_url)
    yield database
    database.close()


@pytest.fixture
def engine_migrated_db(engine_db):
    """A database of the engine under test with every migration applied, models bound."""
    Runner(engine_db, MIGRATIONS_DIR).migrate()
    bind_models(engine_db)
    return engine_db
