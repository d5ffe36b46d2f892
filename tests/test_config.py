"""Where the database URL comes from, how it is shown, and how SQLite is opened."""

import pytest

from db.config import mask_url, resolve_url
from db.engines import open_database
from tests.conftest import run_invoke


@pytest.fixture
def no_database_url(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)


def test_database_url_wins_over_the_configured_url(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-env.db")

    assert resolve_url("sqlite:///from-config.db") == "sqlite:///from-env.db"


def test_the_configured_url_is_used_without_database_url(no_database_url):
    assert resolve_url("sqlite:///from-config.db") == "sqlite:///from-config.db"


def test_the_default_is_clonegallery_db_in_the_project_folder(no_database_url, tmp_path):
    assert resolve_url(None, tmp_path) == f"sqlite:///{tmp_path / 'clonegallery.db'}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/gallery", "postgresql://app:***@db:5432/gallery"),
        ("mysql://root:pa:ss@[::1]:3306/gallery", "mysql://root:***@[::1]:3306/gallery"),
        (
            "postgresql://app@db/gallery?password=s3cret&sslmode=require",
            "postgresql://app@db/gallery?password=***&sslmode=require",
        ),
        ("sqlite:///clonegallery.db", "sqlite:///clonegallery.db"),
    ],
)
def test_passwords_are_masked_wherever_the_url_carries_them(url, shown):
    assert mask_url(url) == shown


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
