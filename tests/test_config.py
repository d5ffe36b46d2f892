"""Where the database URL comes from, how it is shown, and how SQLite is opened."""

import os
import shutil
import subprocess
import sys

import pytest

from db.config import (
    RECIPIENTS_VARIABLE,
    anchored,
    database_name,
    is_in_memory_sqlite,
    mask_url,
    resolve_recipients,
    resolve_url,
    scheme_of,
)
from db.engines import open_database
from db.errors import ConfigError
from db.target import IN_MEMORY_URL
from tests.conftest import PROJECT_ROOT, run_invoke


@pytest.fixture
def no_database_url(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)


def test_database_url_wins_over_the_configured_url(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", "sqlite:////srv/from-env.db")

    assert resolve_url("sqlite:////srv/from-config.db", tmp_path) == "sqlite:////srv/from-env.db"


def test_the_configured_url_is_used_without_database_url(no_database_url, tmp_path):
    configured = "sqlite:////srv/from-config.db"
    assert resolve_url(configured, tmp_path) == configured


@pytest.mark.parametrize("source", ["DATABASE_URL", "db.url"])
def test_a_relative_sqlite_path_is_taken_from_the_project_folder(monkeypatch, tmp_path, source):
    # As the default database and the migrations and backups folders are: from whatever
    # folder a task runs, the same file.
    monkeypatch.chdir(tmp_path)
    project = tmp_path / "project"
    if source == "DATABASE_URL":
        monkeypatch.setenv("DATABASE_URL", "sqlite:///data/gallery.db?timeout=5")
        configured = None
    else:
        monkeypatch.delenv("DATABASE_URL", raising=False)
        configured = "sqlite:///data/gallery.db?timeout=5"

    url = resolve_url(configured, project)

    assert url == f"sqlite:///{project.resolve() / 'data' / 'gallery.db'}?timeout=5"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////srv/gallery.db?timeout=5",  # absolute
        "sqlite:///~/gallery.db",  # the user's home, expanded when opened
        "sqlite:///file:gallery.db?uri=true",  # an SQLite URI filename
        "postgresql://app@db:5432/gallery",  # a server's database name is no path
        "mysql://root@db/gallery?charset=utf8mb4",
    ],
)
def test_only_a_relative_sqlite_path_is_anchored(url, tmp_path):
    assert anchored(url, tmp_path) == url


def test_an_anchored_url_gains_no_query_it_did_not_have(tmp_path):
    assert anchored("sqlite:///gallery.db", tmp_path) == f"sqlite:///{tmp_path / 'gallery.db'}"


def test_a_server_url_is_used_as_given(no_database_url, tmp_path):
    url = "postgresql://app@db:5432/gallery?sslmode=require"

    assert resolve_url(url, tmp_path) == url


def test_the_default_is_clonegallery_db_in_the_project_folder(no_database_url, tmp_path):
    assert resolve_url(None, tmp_path) == f"sqlite:///{tmp_path / 'clonegallery.db'}"


def test_an_in_memory_database_url_is_refused_naming_where_it_came_from(monkeypatch):
    with pytest.raises(ConfigError, match=r"^db\.url sqlite:///:memory: is an in-memory"):
        resolve_url("sqlite:///:memory:")
    monkeypatch.setenv("DATABASE_URL", "sqlite://")
    with pytest.raises(ConfigError, match=r"^DATABASE_URL sqlite:// is an in-memory"):
        resolve_url("sqlite:///from-config.db")


def test_a_server_url_without_a_database_name_is_refused_masked(no_database_url):
    with pytest.raises(ConfigError) as refused:
        resolve_url("mysql://root:s3cret@db:3306?charset=utf8mb4")

    assert str(refused.value) == (
        "db.url mysql://root:***@db:3306?charset=utf8mb4 has no database name: add it to "
        "the URL, e.g. mysql://root:***@db:3306/clonegallery?charset=utf8mb4"
    )


def test_the_example_for_a_url_without_a_database_name_adds_no_query(no_database_url):
    with pytest.raises(ConfigError) as refused:
        resolve_url("postgresql://app@db:5432/")

    assert str(refused.value).endswith("e.g. postgresql://app@db:5432/clonegallery")


def test_a_malformed_url_is_refused_without_showing_it(no_database_url):
    with pytest.raises(ConfigError, match=r"^db\.url is not a valid database URL: Port") as refused:
        resolve_url("postgresql://app:s3cret@db:54x2/gallery")

    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "in_memory"),
    [
        ("sqlite:///:memory:", True),
        ("sqlite://", True),
        ("sqlite:///file::memory:?cache=shared", True),
        ("sqlite:///file:?uri=true", True),
        ("sqlite:///gallery.db?mode=memory", True),
        ("sqlite:///gallery.db", False),
        ("sqlite:///memory.db", False),
        ("sqlite:////tmp/:memory:", False),  # a file of that name
        ("sqlite:///file:gallery.db?uri=true", False),
    ],
)
def test_in_memory_sqlite_urls_are_told_from_files(url, in_memory):
    assert is_in_memory_sqlite(url) is in_memory


def test_opening_a_server_url_without_a_database_name_is_one_masked_line():
    with pytest.raises(ConfigError, match=r"^postgresql://postgres:\*\*\*@127\.0\.0\.1:5432/ has"):
        open_database("postgresql://postgres:s3cret@127.0.0.1:5432/", create=False)


def test_the_commands_in_memory_stand_in_still_opens():
    database = open_database(IN_MEMORY_URL)
    try:
        assert database.execute_sql("SELECT 1").fetchone() == (1,)
    finally:
        database.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/gallery", "postgresql://app:***@db:5432/gallery"),
        ("mysql://root:pa:ss@[::1]:3306/gallery", "mysql://root:***@[::1]:3306/gallery"),
        (
            "postgresql://app@db/gallery?password=s3cret&sslmode=require",
            "postgresql://app@db/gallery?password=***&sslmode=require",
        ),
        ("mysql://root@db/gallery?passwd=s3cret", "mysql://root@db/gallery?passwd=***"),
        # An @ in the password: the host is what follows the last one.
        ("postgresql://app:p@ss@db:5432/gallery", "postgresql://app:***@db:5432/gallery"),
        # Empty parameters are kept as they were.
        (
            "postgresql://app@db/gallery?password=s3cret&options=",
            "postgresql://app@db/gallery?password=***&options=",
        ),
        ("mysql://root@db/gallery?PASSWORD=s3cret", "mysql://root@db/gallery?PASSWORD=***"),
        ("sqlite:///clonegallery.db", "sqlite:///clonegallery.db"),
    ],
)
def test_passwords_are_masked_wherever_the_url_carries_them(url, shown):
    assert mask_url(url) == shown


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("sqlite:////srv/data/gallery.db", "gallery.db"),
        ("sqlite:///data/gallery.db?timeout=5", "gallery.db"),
        ("postgresql://app:s3cret@db:5432/gallery", "gallery"),
        ("mysql://root@db/photos?charset=utf8mb4", "photos"),
    ],
)
def test_a_database_is_known_by_its_file_name_or_its_name_on_the_server(url, name):
    assert database_name(url) == name


def test_a_servers_database_name_is_kept_whole():
    assert database_name("postgresql://app@db/team/gallery") == "team/gallery"


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("oracle://scott:tiger@db/orcl", "oracle"),  # unknown to peewee
        ("cockroachdb://app@db/gallery", "cockroachdb"),  # peewee's, not ours
        ("mysqlconnector://root@db/gallery", "mysqlconnector"),
    ],
)
def test_an_unsupported_scheme_is_refused_naming_the_ones_that_work(url, scheme):
    with pytest.raises(ConfigError) as refused:
        scheme_of(url)

    assert str(refused.value) == (
        f"unsupported database URL scheme {scheme!r} in {mask_url(url)}: use sqlite:///PATH, "
        "postgresql://USER@HOST/NAME or mysql://USER@HOST/NAME"
    )
    assert "tiger" not in str(refused.value)


def test_a_pooled_url_is_of_its_engines_scheme():
    assert scheme_of("postgresql+pool://app@db/gallery") == "postgresql+pool"
    assert scheme_of("sqlite+pool:////srv/gallery.db") == "sqlite+pool"


def test_backup_recipients_come_from_the_environment_before_the_configuration(monkeypatch):
    monkeypatch.setenv(RECIPIENTS_VARIABLE, "age1fromenvironment")
    assert resolve_recipients("age1configured") == "age1fromenvironment"
    monkeypatch.setenv(RECIPIENTS_VARIABLE, "")
    assert resolve_recipients("age1configured") == "age1configured"
    monkeypatch.delenv(RECIPIENTS_VARIABLE)
    assert resolve_recipients("age1configured") == "age1configured"
    assert resolve_recipients() is None


def test_sqlite_opens_with_foreign_keys_wal_and_a_busy_timeout(db_url):
    database = open_database(db_url)
    try:
        assert database.pragma("foreign_keys") == 1
        assert database.pragma("journal_mode") == "wal"
        assert database.pragma("busy_timeout") >= 10_000
    finally:
        database.close()


def test_invoke_db_url_configures_the_tasks(db_path, migrations_dir):
    result = run_invoke(
        "db.status", migrations_dir=migrations_dir, env={"INVOKE_DB_URL": f"sqlite:///{db_path}"}
    )

    assert result.returncode == 0, result.stderr
    assert f"database: sqlite:///{db_path}" in result.stdout


def test_db_url_in_an_invoke_config_file_configures_the_tasks(db_path, migrations_dir, tmp_path):
    config = tmp_path / "invoke.yaml"
    config.write_text(f"db:\n  url: sqlite:///{db_path}\n")

    result = run_invoke("-f", str(config), "db.status", migrations_dir=migrations_dir)

    assert result.returncode == 0, result.stderr
    assert f"database: sqlite:///{db_path}" in result.stdout


def test_database_url_overrides_the_invoke_configuration(db_path, migrations_dir, tmp_path):
    other = tmp_path / "other.db"

    result = run_invoke(
        "db.status",
        url=f"sqlite:///{other}",
        migrations_dir=migrations_dir,
        env={"INVOKE_DB_URL": f"sqlite:///{db_path}"},
    )

    assert f"database: sqlite:///{other}" in result.stdout


def test_run_from_a_subfolder_a_relative_sqlite_url_is_still_the_projects_file(tmp_path):
    # One project, its tasks run from one of its subfolders: a second database must not
    # appear there.
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    for name in ("tasks.py", "migrations", "seeders"):
        source = PROJECT_ROOT / name
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, project / name)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    environment["DATABASE_URL"] = "sqlite:///gallery.db"

    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(project), "db.setup"],
        cwd=project / "scripts", env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert (project / "gallery.db").is_file()
    assert not (project / "scripts" / "gallery.db").exists()
