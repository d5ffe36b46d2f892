"""The migrations build exactly the schema the models declare, and take it all back down.

Two databases are compared: one made by ``create_tables(ALL_MODELS)``, one by running
every migration. They must agree on tables, columns (type, nullability, default),
primary keys, indexes, foreign keys with their ON DELETE rules and CHECK constraints;
the migrations add only the counter triggers on top.
"""

import re

import pytest

from db.engines import open_database
from db.models import ALL_MODELS, bind_models
from db.runner import Runner
from tests.conftest import MIGRATIONS_DIR

HISTORY_TABLE = "migrations"
TABLES = [model._meta.table_name for model in ALL_MODELS]

ON_DELETE = {
    ("images", "uploader_id"): ("users", "RESTRICT"),
    ("albums", "cover_image_id"): ("images", "SET NULL"),
    ("albums", "created_by"): ("users", "RESTRICT"),
    ("image_tags", "image_id"): ("images", "CASCADE"),
    ("image_tags", "tag_id"): ("tags", "CASCADE"),
    ("album_images", "album_id"): ("albums", "CASCADE"),
    ("album_images", "image_id"): ("images", "CASCADE"),
    ("user_likes", "user_id"): ("users", "CASCADE"),
    ("user_likes", "image_id"): ("images", "CASCADE"),
    ("ai_generation_meta", "image_id"): ("images", "CASCADE"),
}

TRIGGERS = {
    "image_tags_after_insert": "image_tags",
    "image_tags_after_delete": "image_tags",
    "image_tags_after_update": "image_tags",
    "album_images_after_insert": "album_images",
    "album_images_after_delete": "album_images",
    "album_images_after_update": "album_images",
    "images_after_insert": "images",
    "images_after_delete": "images",
    "images_after_update": "images",
}


# --- Reading a schema ---------------------------------------------------------------------


def app_tables(database):
    return sorted(t for t in database.get_tables() if t != HISTORY_TABLE)


def columns(database, table):
    return [
        (c.name, c.data_type, c.null, c.primary_key, c.default) for c in database.get_columns(table)
    ]


def indexes(database, table):
    return sorted(
        (i.name, tuple(i.columns), i.unique)
        for i in database.get_indexes(table)
        if not i.name.startswith("sqlite_autoindex_")
    )


def foreign_keys(database, table):
    return sorted(
        (fk.column, fk.dest_table, fk.dest_column, fk.on_delete, fk.on_update)
        for fk in database.get_foreign_keys(table)
    )


def checks(database, table):
    """Return the table's CHECK expressions, as written in its CREATE TABLE."""
    (sql,) = database.execute_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    found = []
    for match in re.finditer(r"CHECK \(", sql):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            end += 1
        found.append(sql[match.end() : end - 1])
    return sorted(found)


def schema(database):
    """Everything about the CloneGallery tables, as comparable data."""
    return {
        table: {
            "columns": columns(database, table),
            "primary_key": database.get_primary_keys(table),
            "indexes": indexes(database, table),
            "foreign_keys": foreign_keys(database, table),
            "checks": checks(database, table),
        }
        for table in app_tables(database)
    }


def triggers(database):
    return dict(
        database.execute_sql("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'")
    )


# --- Two databases ------------------------------------------------------------------------


@pytest.fixture
def model_db(tmp_path):
    """A database built from the models with create_tables()."""
    database = open_database(f"sqlite:///{tmp_path / 'from_models.db'}")
    bind_models(database)
    database.create_tables(ALL_MODELS)
    yield database
    database.close()


@pytest.fixture
def runner(fresh_db):
    return Runner(fresh_db, MIGRATIONS_DIR)


@pytest.fixture
def migrated(fresh_db, runner):
    """A database built by running every migration."""
    runner.migrate()
    return fresh_db


# --- The migrations build the models' schema ----------------------------------------------


def test_the_migrations_create_every_table_of_the_models(migrated, model_db):
    assert app_tables(migrated) == app_tables(model_db) == sorted(TABLES)


@pytest.mark.parametrize("table", TABLES)
def test_each_table_has_the_models_columns_types_nullability_and_defaults(
    migrated, model_db, table
):
    assert columns(migrated, table) == columns(model_db, table)


@pytest.mark.parametrize("table", TABLES)
def test_each_table_has_the_models_primary_key(migrated, model_db, table):
    assert migrated.get_primary_keys(table) == model_db.get_primary_keys(table)


@pytest.mark.parametrize("table", TABLES)
def test_each_table_has_the_models_indexes(migrated, model_db, table):
    assert indexes(migrated, table) == indexes(model_db, table)


@pytest.mark.parametrize("table", TABLES)
def test_each_table_has_the_models_foreign_keys(migrated, model_db, table):
    assert foreign_keys(migrated, table) == foreign_keys(model_db, table)


@pytest.mark.parametrize("table", TABLES)
def test_each_table_has_the_models_check_constraints(migrated, model_db, table):
    assert checks(migrated, table) == checks(model_db, table)


def test_the_whole_schemas_are_equal(migrated, model_db):
    assert schema(migrated) == schema(model_db)


def test_foreign_keys_delete_as_documented(migrated):
    found = {
        (table, fk.column): (fk.dest_table, fk.on_delete)
        for table in TABLES
        for fk in migrated.get_foreign_keys(table)
    }

    assert found == ON_DELETE


def test_every_foreign_key_is_indexed_by_the_first_columns_of_some_index(migrated):
    for table, column in ON_DELETE:
        leading = {i.columns[0] for i in migrated.get_indexes(table)}
        leading.add(migrated.get_primary_keys(table)[0])
        assert column in leading, f"{table}.{column} has no index"


def test_the_counter_triggers_are_the_only_addition_to_the_models_schema(migrated, model_db):
    assert triggers(model_db) == {}
    assert triggers(migrated) == TRIGGERS


def test_no_migration_imports_the_application_models():
    for path in sorted(MIGRATIONS_DIR.glob("[0-9]*.py")):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import)\s+db\b", source, re.MULTILINE), path.name


# --- And back down ------------------------------------------------------------------------


def test_rolling_everything_back_leaves_only_the_history_table(runner, migrated):
    reverted = runner.rollback(to="000")

    assert reverted == ["003_add_triggers", "002_add_indexes", "001_initial_schema"]
    assert migrated.get_tables() == [HISTORY_TABLE]
    assert triggers(migrated) == {}


def test_rolling_back_003_drops_only_the_triggers(runner, migrated, model_db):
    assert runner.rollback() == ["003_add_triggers"]

    assert triggers(migrated) == {}
    assert schema(migrated) == schema(model_db)


def test_rolling_back_002_leaves_only_the_unique_keys_indexed(runner, migrated):
    assert runner.rollback(steps=2) == ["003_add_triggers", "002_add_indexes"]

    remaining = [name for table in TABLES for name, _, _ in indexes(migrated, table)]
    assert sorted(remaining) == ["tags_name", "users_email"]


def test_up_down_up_rebuilds_the_identical_schema(runner, migrated):
    before = (schema(migrated), triggers(migrated))

    runner.rollback(to="000")
    runner.migrate()

    assert (schema(migrated), triggers(migrated)) == before
