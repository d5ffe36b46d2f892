"""db.check: the live database against the models and the migration files against the history.

Every drift is made for real, through SQL or by editing a migration file, on each engine
(the ``engine`` fixtures of conftest.py); the library is tested through
``check_database`` and the task as a subprocess.
"""

import json

import peewee as pw
import pytest

from db.check import Difference, _comparable_default, check_database, type_family
from db.engines import open_database
from db.models import ALL_MODELS, BaseModel, Tag, server_default
from db.runner import Runner
from tests.conftest import MIGRATIONS_DIR, NEXT_VERSION, one_error_line, run_invoke

IN_STEP = "in step with the models and migrations"


@pytest.fixture
def checked_db(engine_db, project_migrations):
    """A database of the engine under test migrated from ``project_migrations``."""
    Runner(engine_db, project_migrations).migrate()
    return engine_db


def details(database, migrations_dir):
    return [difference.detail for difference in check_database(database, migrations_dir)]


def test_a_freshly_migrated_database_is_in_step(checked_db, project_migrations):
    assert check_database(checked_db, project_migrations) == []


def test_the_tables_litestream_keeps_in_a_replicated_database_are_not_the_apps(
    checked_db, project_migrations
):
    checked_db.execute_sql("CREATE TABLE _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER)")
    checked_db.execute_sql("CREATE TABLE _litestream_lock (id INTEGER)")

    assert check_database(checked_db, project_migrations) == []


def test_a_dropped_index_is_missing(checked_db, project_migrations):
    index = next(i.name for i in checked_db.get_indexes("images") if i.columns == ["privacy"])
    on_table = " ON images" if type(checked_db).__name__.startswith("MySQL") else ""
    checked_db.execute_sql(f"DROP INDEX {index}{on_table}")

    assert details(checked_db, project_migrations) == ["index images(privacy) missing"]


def test_a_column_added_by_hand_is_not_in_the_models(checked_db, project_migrations):
    checked_db.execute_sql("ALTER TABLE images ADD COLUMN karma INTEGER")

    assert check_database(checked_db, project_migrations) == [
        Difference("column", "images", "images.karma: column not in the models")
    ]


def test_a_dropped_table_is_missing(checked_db, project_migrations):
    # user_likes has no trigger and nothing points at it.
    checked_db.execute_sql("DROP TABLE user_likes")

    assert details(checked_db, project_migrations) == ["table user_likes: missing"]


def test_a_dropped_trigger_is_missing(checked_db, project_migrations):
    on_table = " ON image_tags" if type(checked_db).__name__.startswith("Postgres") else ""
    checked_db.execute_sql(f"DROP TRIGGER image_tags_after_insert{on_table}")

    assert details(checked_db, project_migrations) == [
        "trigger image_tags_after_insert on image_tags: missing"
    ]


def test_an_edited_applied_migration_is_changed(checked_db, project_migrations):
    path = project_migrations / "002_add_indexes.py"
    path.write_text(path.read_text() + "\n# edited after it was applied\n")

    assert details(checked_db, project_migrations) == [
        "migration 002_add_indexes: changed after it was applied"
    ]


def test_an_index_006_made_that_is_gone_is_named_and_005s_search_objects_are_not_reported(
    engine, checked_db, project_migrations
):
    on_table = "" if engine in ("sqlite", "postgres") else " ON images"
    checked_db.execute_sql(f"DROP INDEX images_public_newest{on_table}")

    assert details(checked_db, project_migrations) == [
        "index images_public_newest on images: missing"
    ]


def test_a_pending_migration_is_listed(checked_db, project_migrations, write_migration):
    write_migration(
        f"{NEXT_VERSION}_add_karma.py",
        "def up(migrator, db):\n    pass\n\n\ndef down(migrator, db):\n    pass\n",
    )

    assert details(checked_db, project_migrations) == [
        f"migration {NEXT_VERSION}_add_karma: pending"
    ]


def test_types_compare_by_family():
    assert type_family("character varying") == type_family("VARCHAR(64)") == "text"
    assert type_family("tinyint") == type_family("BOOLEAN") == "boolean"
    assert type_family("bigint") == type_family("INTEGER") == "integer"
    assert type_family("timestamp without time zone") == type_family("DATETIME") == "datetime"
    assert type_family("double precision") == type_family("REAL") == "real"


# --- The task ------------------------------------------------------------------------------


def test_task_says_in_step_and_exits_0(engine_url, checked_db, project_migrations):
    result = run_invoke("db.check", url=engine_url, migrations_dir=project_migrations)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == IN_STEP


def test_task_prints_a_line_per_difference_and_exits_3_not_in_step(
    engine_url, checked_db, project_migrations, write_migration
):
    checked_db.execute_sql("ALTER TABLE tags ADD COLUMN colour TEXT")
    write_migration(f"{NEXT_VERSION}_x.sql", "-- x\n\n-- migrate:up\n\n-- migrate:down\n")

    result = run_invoke("db.check", url=engine_url, migrations_dir=project_migrations)

    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines() == [
        "tags.colour: column not in the models",
        f"migration {NEXT_VERSION}_x: pending",
    ]


def test_task_json_shape(engine_url, checked_db, project_migrations):
    checked_db.execute_sql("DROP TABLE user_likes")

    result = run_invoke("db.check", "--json", url=engine_url, migrations_dir=project_migrations)

    assert result.returncode == 3, result.stderr
    assert json.loads(result.stdout) == {
        "format_version": 1,
        "in_step": False,
        "differences": [
            {"kind": "table", "table": "user_likes", "detail": "table user_likes: missing"}
        ],
    }


def test_task_json_in_step(engine_url, checked_db, project_migrations):
    result = run_invoke("db.check", "--json", url=engine_url, migrations_dir=project_migrations)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"format_version": 1, "in_step": True, "differences": []}


def test_task_refuses_a_database_that_does_not_exist(tmp_path):
    url = f"sqlite:///{tmp_path / 'none.db'}"

    result = run_invoke("db.check", url=url)

    one_error_line(result, 2, "does not exist yet")
    assert not (tmp_path / "none.db").exists()


def test_a_column_made_nullable_by_hand_is_caught(tmp_path):
    # SQLite cannot ALTER a column; a table written by hand shows the same drift.
    database = open_database(f"sqlite:///{tmp_path / 'c.db'}")
    Runner(database, MIGRATIONS_DIR).migrate()
    database.execute_sql("DROP TABLE analytics")
    database.execute_sql(
        "CREATE TABLE analytics (id INTEGER NOT NULL PRIMARY KEY, metric VARCHAR(100), "
        "value REAL NOT NULL, category VARCHAR(50), unit VARCHAR(20), "
        "recorded_at TEXT NOT NULL)"
    )
    database.execute_sql("CREATE INDEX analytics_mr ON analytics (metric, recorded_at)")

    assert sorted(details(database, MIGRATIONS_DIR)) == [
        "analytics.metric: CHECK constraint missing",  # the hand-written table has none
        "analytics.metric: NOT NULL in the models, nullable in the database",
        "analytics.recorded_at: DEFAULT CURRENT_TIMESTAMP in the models, no DEFAULT in the "
        "database",
        "analytics.recorded_at: datetime in the models, text in the database",
    ]
    database.close()


def test_a_dropped_foreign_key_is_missing(engine, checked_db, project_migrations):
    if engine == "sqlite":
        pytest.skip("SQLite cannot drop a foreign key without rebuilding its table")
    key = next(k for k in checked_db.get_foreign_keys("image_tags") if k.column == "tag_id")
    drop = "DROP FOREIGN KEY" if engine == "mysql" else "DROP CONSTRAINT"
    checked_db.execute_sql(f"ALTER TABLE image_tags {drop} {key.name}")

    assert details(checked_db, project_migrations) == [
        "foreign key image_tags.tag_id -> tags.id missing"
    ]


def test_a_dropped_check_constraint_is_missing(engine, checked_db, project_migrations):
    if engine == "sqlite":
        pytest.skip("SQLite cannot drop a CHECK constraint without rebuilding its table")
    if engine == "postgres":
        (name,) = checked_db.execute_sql(
            "SELECT conname FROM pg_constraint WHERE contype = 'c' "
            "AND conrelid = 'images'::regclass AND pg_get_constraintdef(oid) LIKE '%%privacy%%'"
        ).fetchone()
        checked_db.execute_sql(f'ALTER TABLE images DROP CONSTRAINT "{name}"')
    else:
        # MariaDB keeps a column's CHECK with the column: redefine the column without it.
        column_type, default = checked_db.execute_sql(
            "SELECT column_type, column_default FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = 'images' "
            "AND column_name = 'privacy'"
        ).fetchone()
        checked_db.execute_sql(
            f"ALTER TABLE images MODIFY privacy {column_type} NOT NULL DEFAULT {default}"
        )

    assert details(checked_db, project_migrations) == ["images.privacy: CHECK constraint missing"]


def test_a_default_changed_by_hand_is_caught(engine, checked_db, project_migrations):
    if engine == "sqlite":
        pytest.skip("SQLite cannot change a column's default without rebuilding its table")
    checked_db.execute_sql("ALTER TABLE users ALTER COLUMN role SET DEFAULT 'editor'")

    assert details(checked_db, project_migrations) == [
        "users.role: DEFAULT 'visitor' in the models, DEFAULT 'editor' in the database"
    ]


def test_a_default_the_models_changed_is_caught(checked_db, project_migrations):
    fields = {f.name: f.clone() for f in Tag._meta.sorted_fields}
    # Migration 001 gives trending DEFAULT FALSE.
    fields["trending"] = pw.BooleanField(
        default=True, index=True, constraints=[server_default("TRUE")]
    )
    meta = type("Meta", (), {"table_name": "tags"})
    tags = type("TrendingTag", (BaseModel,), {**fields, "Meta": meta})
    models = tuple(tags if model is Tag else model for model in ALL_MODELS)

    (difference,) = check_database(checked_db, project_migrations, models)

    assert difference.kind == "default"
    assert difference.detail.startswith("tags.trending: DEFAULT TRUE in the models, DEFAULT ")


def test_defaults_compare_across_the_engines_renderings():
    assert _comparable_default("'public'::character varying") == "'public'"  # PostgreSQL
    assert _comparable_default("current_timestamp()") == "current_timestamp"  # MariaDB
    assert _comparable_default("FALSE") == _comparable_default("0")  # MySQL booleans
    assert _comparable_default("'public'") != _comparable_default("'private'")
