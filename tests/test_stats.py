"""db.stats: rows, sizes and indexes of every table, the database's size, the latest backup."""

import json
import time

import pytest

from db import backups, commands
from db.config import Settings
from db.engines import engine_for_url
from db.models import ALL_MODELS
from db.populate import GalleryPlan, populate
from tests.conftest import MIGRATIONS_DIR, ok, one_error_line, run_invoke

PLAN = GalleryPlan(users=10, images=60, seed=4)
TOP_KEYS = {
    "format_version",
    "database",
    "engine",
    "size_bytes",
    "free_bytes",
    "wal_bytes",
    "index_usage",
    "tables",
    "latest_backup",
    "notes",
}
TABLE_KEYS = {"name", "rows", "data_bytes", "index_bytes", "derived", "indexes"}
INDEX_KEYS = {"name", "columns", "primary", "unique", "size_bytes", "uses", "unused"}


@pytest.fixture
def settings(engine_url, tmp_path):
    """Settings for the database under test, with an empty backups folder."""
    return Settings(url=engine_url, migrations_dir=MIGRATIONS_DIR, backups_dir=tmp_path / "backups")


@pytest.fixture
def populated(engine_migrated_db):
    """A migrated database holding a small generated gallery; returns the rows per table."""
    return populate(engine_migrated_db, PLAN).rows


def cli(settings, *args):
    return run_invoke(*args, url=settings.url, env={"INVOKE_DB_BACKUPS": str(settings.backups_dir)})


def tables_of(stats):
    return {table.name: table for table in stats.tables}


def primary_key_columns(model):
    return [field.column_name for field in model._meta.get_primary_keys()]


def test_every_gallery_table_is_listed_with_its_exact_row_count_and_primary_index(
    settings, populated
):
    tables = tables_of(commands.stats(settings))

    for model in ALL_MODELS:
        table = tables[model._meta.table_name]
        assert table.rows == model.select().count(), table.name
        primary = [index for index in table.indexes if index.primary]
        assert [index.columns for index in primary] == [primary_key_columns(model)], table.name
    for name, written in populated.items():
        assert tables[name].rows == written, name
    assert tables["images"].rows == PLAN.images


def test_the_search_tables_are_listed_marked_derived_with_a_row_per_image(
    settings, populated, engine
):
    tables = tables_of(commands.stats(settings))
    printed = ok(cli(settings, "db.stats")).stdout.splitlines()

    assert tables["image_search"].derived and tables["image_search"].rows == PLAN.images
    assert not any(tables[model._meta.table_name].derived for model in ALL_MODELS)
    search_line = next(line for line in printed if line.startswith("image_search "))
    assert search_line.endswith("derived")
    if engine == "sqlite":  # FTS5's virtual table and its shadow tables are derived too
        assert tables["image_search_fts"].derived and tables["image_search_fts_data"].derived
        # 005's autocomplete index is on an expression, which SQLite names no column of
        assert any(line.lstrip().startswith("tags_name_lower ((expression))") for line in printed)


def test_sizes_are_positive_numbers(settings, populated):
    stats = commands.stats(settings)

    assert stats.size_bytes > 0
    assert stats.free_bytes is None or stats.free_bytes >= 0
    if any("not available per table" in note for note in stats.notes):
        pytest.skip("this SQLite build has no dbstat: sizes are not available per table")
    for model in ALL_MODELS:
        table = tables_of(stats)[model._meta.table_name]
        if table.rows:
            assert table.data_bytes > 0, table.name
        assert table.index_bytes >= 0, table.name


def test_sqlite_reports_the_size_of_its_wal_file(settings, populated, engine):
    if engine != "sqlite":
        pytest.skip("only SQLite has a WAL file of its own")
    # The gallery was just written through the WAL, and its connection is still open.
    assert commands.stats(settings).wal_bytes > 0


def test_json_has_the_documented_keys_and_the_latest_backup_appears_after_a_backup(
    settings, populated
):
    before = cli(settings, "db.stats")
    assert before.returncode == 0, before.stderr
    assert "latest backup: no backups" in before.stdout
    assert "images" in before.stdout
    assert json.loads(cli(settings, "db.stats", "--json").stdout)["latest_backup"] is None

    backed_up = cli(settings, "db.backup")
    assert backed_up.returncode == 0, backed_up.stderr
    after = json.loads(cli(settings, "db.stats", "--json").stdout)

    assert set(after) == TOP_KEYS
    assert after["engine"] == engine_for_url(settings.url).key  # sqlite, postgres, mysql
    for table in after["tables"]:
        assert set(table) == TABLE_KEYS
        for index in table["indexes"]:
            assert set(index) == INDEX_KEYS
    assert {t["name"]: t["rows"] for t in after["tables"]}["images"] == PLAN.images
    latest = after["latest_backup"]
    assert latest["path"].startswith(str(settings.backups_dir))
    assert 0 <= latest["age_seconds"] < 300
    prefix = backups.Owner.at(settings.url).file_prefix()  # the database's name
    assert f"ago ({prefix}-" in cli(settings, "db.stats").stdout


def test_on_postgresql_a_used_index_counts_its_scans_and_an_unused_one_is_flagged(
    settings, populated, engine, engine_migrated_db
):
    if engine != "postgres":
        pytest.skip("PostgreSQL counts index scans (pg_stat_user_indexes)")
    before = index_named(commands.stats(settings), "images", "images_privacy").uses

    database = engine_migrated_db
    with database.atomic():
        database.execute_sql("SET LOCAL enable_seqscan = off")
        database.execute_sql("SELECT COUNT(*) FROM images WHERE privacy = 'private'")
    database.execute_sql("SELECT pg_stat_force_next_flush()")  # at the next idle moment

    used = wait_for(lambda: index_named(commands.stats(settings), "images", "images_privacy"))
    assert used.uses > before
    assert used.unused is False
    unused = index_named(commands.stats(settings), "analytics", "analytics_metric_recorded_at")
    assert unused.uses == 0
    assert unused.unused is True


def index_named(stats, table, name):
    return next(index for index in tables_of(stats)[table].indexes if index.name == name)


def wait_for(read_index, seconds=5):
    """Return the index once the server shows it used (statistics reach other sessions
    once the session that used it flushed them)."""
    deadline = time.monotonic() + seconds
    while True:
        index = read_index()
        if index.uses or time.monotonic() > deadline:
            return index
        time.sleep(0.1)


def test_on_mariadb_without_userstat_index_usage_is_unavailable_and_nothing_fails(
    settings, populated, engine, engine_migrated_db
):
    if engine != "mysql":
        pytest.skip("MariaDB's userstat")
    userstat = engine_migrated_db.execute_sql("SHOW GLOBAL VARIABLES LIKE 'userstat'").fetchone()
    if userstat and userstat[1] == "ON":
        pytest.skip("this server collects index statistics (userstat is on)")

    stats = commands.stats(settings)

    assert stats.index_usage is None
    assert all(index.uses is None for t in stats.tables for index in t.indexes)
    assert any("index usage is unavailable" in note for note in stats.notes)


def test_a_database_that_does_not_exist_gives_one_error_line(settings):
    result = cli(settings, "db.stats")

    one_error_line(result, 2, "does not exist yet", "db.setup")
