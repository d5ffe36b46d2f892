"""The migrations build exactly the schema the models declare, and take it all back down.

Two databases of the engine under test are compared: one made by
``create_tables(ALL_MODELS)``, one by running every migration. They must agree on tables,
columns (type, length, nullability, default), primary keys, indexes, foreign keys with
their ON DELETE rules and CHECK constraints; the migrations add only the counter triggers
on top (and, on PostgreSQL, the functions they run, and the row-level security of 004,
which these snapshots do not read: tests/test_row_level_security.py covers it), 005's
derived search objects (db.search: tables, autocomplete index, the triggers keeping
them) and 006's partial and covering indexes, which the models cannot declare: the
comparisons with the models look at ``models_part`` of a snapshot. Both are
read once per engine into snapshots, as those tests only look; the rollback tests migrate
a database of their own.
Every test runs on each engine (the ``engine`` fixtures of conftest.py).
"""

import re
import uuid
from contextlib import contextmanager
from typing import NamedTuple

import peewee
import pytest

from db.check import CREATED
from db.engines import open_database
from db.loader import discover, load_module
from db.models import ALL_MODELS, bind_models
from db.runner import Runner
from db.search import DERIVED_INDEXES, is_derived, is_derived_trigger
from tests import servers
from tests.conftest import MIGRATIONS_DIR, sqlite_url

HISTORY_TABLE = "migrations"
TABLES = [model._meta.table_name for model in ALL_MODELS]
MIGRATIONS = sorted(migration.name for migration in discover(MIGRATIONS_DIR))

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
# MySQL fires no trigger for rows removed by ON DELETE CASCADE: one more uncounts the
# links of an image before it goes.
ENGINE_TRIGGERS = {"mysql": {"images_before_delete": "images"}}


def expected_triggers(engine):
    return {**TRIGGERS, **ENGINE_TRIGGERS.get(engine, {})}


def expected_trigger_functions(engine):
    """PostgreSQL runs a function per trigger, named as the trigger; the others none."""
    return sorted(TRIGGERS) if engine == "postgres" else []


def indexes_beyond_the_models():
    """Return the names of the indexes the migrations make that the models cannot
    declare: 005's autocomplete index, and those a migration's DIALECTS create (006)."""
    names = set(DERIVED_INDEXES)
    for migration in discover(MIGRATIONS_DIR):
        dialects = (
            getattr(load_module(migration), "DIALECTS", None) if migration.kind == "py" else None
        )
        for statements in (dialects or {}).values():
            names |= {
                name
                for name, create, _ in statements()
                if "INDEX" in (CREATED.match(create) or [""])[0].upper()
            }
    return frozenset(names)


BEYOND_MODELS = indexes_beyond_the_models()


# --- Reading a schema ---------------------------------------------------------------------


def engine_of(database):
    """Return the name conftest gives the database's engine: sqlite, postgres or mysql."""
    if isinstance(database, peewee.PostgresqlDatabase):
        return "postgres"
    if isinstance(database, peewee.MySQLDatabase):
        return "mysql"
    return "sqlite"


# The SQL naming the schema a server connection works in.
CURRENT_SCHEMA = {"postgres": "current_schema()", "mysql": "DATABASE()"}


def app_tables(database):
    return sorted(t for t in database.get_tables() if t != HISTORY_TABLE)


def models_part(snapshot):
    """Return the part of ``snapshot`` the models declare: without 005's derived search
    objects and the indexes the models cannot declare (BEYOND_MODELS)."""
    tables = {
        table: {
            **described,
            "indexes": [i for i in described["indexes"] if i[0] not in BEYOND_MODELS],
        }
        for table, described in snapshot.tables.items()
        if not is_derived(table)
    }
    triggers = {n: t for n, t in snapshot.triggers.items() if not is_derived_trigger(n)}
    functions = [n for n in snapshot.trigger_functions if not is_derived_trigger(n)]
    return Snapshot(tables, triggers, functions)


def columns(database, table):
    lengths = max_lengths(database, table)
    return [
        (c.name, c.data_type, lengths.get(c.name), c.null, c.primary_key, c.default)
        for c in database.get_columns(table)
    ]


def max_lengths(database, table):
    """Return {column: max length} where peewee's data_type leaves the length out."""
    engine = engine_of(database)
    if engine == "sqlite":
        return {}  # SQLite keeps the declared type whole, e.g. VARCHAR(64)
    rows = database.execute_sql(
        "SELECT column_name, character_maximum_length FROM information_schema.columns "
        f"WHERE table_schema = {CURRENT_SCHEMA[engine]} AND table_name = %s",
        (table,),
    )
    return dict(rows)


def indexes(database, table):
    """Return the table's indexes but its primary key's own (see get_primary_keys)."""
    primary_key = database.get_primary_keys(table)
    return sorted(
        (i.name, tuple(i.columns), i.unique)
        for i in database.get_indexes(table)
        if not (i.unique and list(i.columns) == primary_key)
    )


def foreign_keys(database, table):
    return sorted(
        (fk.column, fk.dest_table, fk.dest_column, fk.on_delete, fk.on_update)
        for fk in database.get_foreign_keys(table)
    )


def checks(database, table):
    """Return the table's CHECK expressions, as the database shows them."""
    sql = " ".join(check_clauses(database, table))
    found = []
    for match in re.finditer(r"CHECK \(", sql):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            end += 1
        found.append(sql[match.end() : end - 1])
    return sorted(found)


def check_clauses(database, table):
    """Return texts holding each CHECK (...) of the table."""
    engine = engine_of(database)
    if engine == "postgres":
        rows = database.execute_sql(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'c'",
            (table,),
        )
        return [definition for (definition,) in rows]
    if engine == "mysql":
        return [database.execute_sql(f"SHOW CREATE TABLE {table}").fetchone()[1]]
    (sql,) = database.execute_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return [sql]


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
    """Return {trigger name: its table}."""
    engine = engine_of(database)
    if engine == "sqlite":
        sql = "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'"
    else:
        sql = (
            "SELECT DISTINCT trigger_name, event_object_table FROM information_schema.triggers "
            f"WHERE trigger_schema = {CURRENT_SCHEMA[engine]}"
        )
    return dict(database.execute_sql(sql))


def trigger_functions(database):
    """Return the names of the functions triggers can run (PostgreSQL has such functions)."""
    if engine_of(database) != "postgres":
        return []
    rows = database.execute_sql(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = current_schema() AND p.prorettype = 'trigger'::regtype"
    )
    return sorted(name for (name,) in rows)


class Snapshot(NamedTuple):
    """What a database holds, as comparable data."""

    tables: dict  # table -> its columns, primary key, indexes, foreign keys, checks
    triggers: dict  # trigger -> its table
    trigger_functions: list  # the functions PostgreSQL's triggers run


def snapshot(database):
    return Snapshot(schema(database), triggers(database), trigger_functions(database))


# --- Two databases ------------------------------------------------------------------------


class Built(NamedTuple):
    migrated: Snapshot  # a database built by running every migration
    models: Snapshot  # a database built from the models with create_tables()


@contextmanager
def new_database(engine, folder):
    """Open a new, empty database of the engine; drop it afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:8]}.db"
    url = sqlite_url(folder / name) if engine == "sqlite" else servers.new_database_url(engine)
    database = open_database(url)
    try:
        yield database
    finally:
        database.close()
        if engine != "sqlite":
            servers.drop_database(url)


def build(engine, folder):
    """Build both databases of the engine and return their snapshots."""
    with new_database(engine, folder) as by_migrations, new_database(engine, folder) as by_models:
        Runner(by_migrations, MIGRATIONS_DIR).migrate()
        bind_models(by_models)
        by_models.create_tables(ALL_MODELS)
        return Built(snapshot(by_migrations), snapshot(by_models))


@pytest.fixture(scope="module")
def built_per_engine():
    return {}


@pytest.fixture
def built(engine, built_per_engine, tmp_path_factory):
    """Both databases of the engine under test, as snapshots (built on first use)."""
    if engine not in built_per_engine:
        built_per_engine[engine] = build(engine, tmp_path_factory.mktemp("schemas"))
    return built_per_engine[engine]


@pytest.fixture
def runner(engine_db):
    return Runner(engine_db, MIGRATIONS_DIR)


@pytest.fixture
def migrated(engine_db, runner):
    """A database of the engine under test built by running every migration, to change."""
    runner.migrate()
    return engine_db


# --- The migrations build the models' schema ----------------------------------------------


def test_the_migrations_create_every_table_of_the_models(built):
    migrated = models_part(built.migrated)

    assert sorted(migrated.tables) == sorted(built.models.tables) == sorted(TABLES)


def same_in_both(built, table, aspect):
    return models_part(built.migrated).tables[table][aspect] == built.models.tables[table][aspect]


@pytest.mark.parametrize("table", TABLES)
def test_each_table_has_the_models_columns_types_nullability_and_defaults(built, table):
    assert same_in_both(built, table, "columns")


@pytest.mark.parametrize("table", TABLES)
def test_each_table_has_the_models_primary_key(built, table):
    assert same_in_both(built, table, "primary_key")


@pytest.mark.parametrize("table", TABLES)
def test_each_table_has_the_models_indexes(built, table):
    assert same_in_both(built, table, "indexes")


@pytest.mark.parametrize("table", TABLES)
def test_each_table_has_the_models_foreign_keys(built, table):
    assert same_in_both(built, table, "foreign_keys")


@pytest.mark.parametrize("table", TABLES)
def test_each_table_has_the_models_check_constraints(built, table):
    assert same_in_both(built, table, "checks")


def test_the_whole_schemas_are_equal(built):
    assert models_part(built.migrated).tables == built.models.tables


def test_foreign_keys_delete_as_documented(built):
    found = {
        (table, column): (dest_table, on_delete)
        for table, described in models_part(built.migrated).tables.items()
        for column, dest_table, _, on_delete, _ in described["foreign_keys"]
    }

    assert found == ON_DELETE


def test_every_foreign_key_is_indexed_by_the_first_columns_of_some_index(built):
    for table, column in ON_DELETE:
        described = built.migrated.tables[table]
        leading = {columns[0] for _, columns, _ in described["indexes"]}
        leading.add(described["primary_key"][0])
        assert column in leading, f"{table}.{column} has no index"


def test_the_counter_triggers_are_the_only_addition_to_the_models_schema(engine, built):
    migrated = models_part(built.migrated)

    assert (built.models.triggers, built.models.trigger_functions) == ({}, [])
    assert migrated.triggers == expected_triggers(engine)
    assert migrated.trigger_functions == expected_trigger_functions(engine)


def test_the_search_tables_and_the_triggers_keeping_them_are_what_the_migrations_add_beyond(
    engine, built
):
    added_tables = built.migrated.tables.keys() - built.models.tables.keys()
    added_triggers = built.migrated.triggers.keys() - expected_triggers(engine).keys()

    assert "image_search" in added_tables and all(is_derived(t) for t in added_tables)
    assert added_triggers and all(is_derived_trigger(t) for t in added_triggers)
    named = {
        name for described in built.migrated.tables.values() for name, *_ in described["indexes"]
    }
    assert {"images_public_newest", "user_likes_user_newest"} & named


def test_no_migration_imports_the_application_models():
    for path in sorted(MIGRATIONS_DIR.glob("[0-9]*.py")):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import)\s+db\b", source, re.MULTILINE), path.name


# --- And back down ------------------------------------------------------------------------


def test_rolling_everything_back_leaves_only_the_history_table(runner, migrated):
    reverted = runner.rollback(to="000")

    assert reverted == MIGRATIONS[::-1]
    assert migrated.get_tables() == [HISTORY_TABLE]
    assert triggers(migrated) == {}
    assert trigger_functions(migrated) == []


def test_rolling_back_to_003_leaves_the_models_tables_and_the_counter_triggers(
    runner, migrated, built
):
    reverted = runner.rollback(to="003")

    assert reverted == [name for name in MIGRATIONS if name > "004"][::-1]
    assert snapshot(migrated) == models_part(built.migrated)


def test_rolling_back_003_drops_only_the_triggers(runner, migrated, built):
    assert runner.rollback(to="002")[-1] == "003_add_triggers"

    assert snapshot(migrated) == built.models


def test_rolling_back_002_leaves_only_the_unique_keys_indexed(engine, runner, migrated):
    assert runner.rollback(to="001")[-3:] == [
        "004_row_level_security",
        "003_add_triggers",
        "002_add_indexes",
    ]

    remaining = [name for table in TABLES for name, _, _ in indexes(migrated, table)]
    # MySQL backs each foreign key that leads no index with one, named after the
    # column (see 002).
    foreign_key_indexes = (
        ["cover_image_id", "created_by", "image_id", "image_id", "tag_id", "uploader_id"]
        if engine == "mysql"
        else []
    )
    assert sorted(remaining) == sorted(["tags_name", "users_email", *foreign_key_indexes])


def test_up_down_up_rebuilds_the_identical_schema(runner, migrated):
    before = snapshot(migrated)

    runner.rollback(to="000")
    runner.migrate()

    assert snapshot(migrated) == before
