"""db.new-migration --auto: the migration from a drifted database back to the models.

Every drift is made for real, by SQL, on each engine (the ``engine`` fixtures of
conftest.py), in a database migrated from a copy of the project's migrations; the task
runs as a subprocess, and db.migrate, db.check and db.rollback judge what it wrote.
Columns the models add are tested through ``migration_text`` with a model given.
"""

import subprocess
import sys
from pathlib import Path

import peewee as pw
import pytest

from db.autogen import migration_text
from db.check import check_database
from db.engines import open_database
from db.errors import CannotGenerate
from db.models import ALL_MODELS, NOT_BLANK, BaseModel, Image, Tag, checked, counter, timestamp
from db.runner import Runner
from tests.conftest import MIGRATIONS_DIR, NEXT_VERSION, one_error_line, run_invoke

IN_STEP = "nothing to generate: the database is in step with the models"
IN_STEP_LINE = "in step with the models and migrations\n"


@pytest.fixture
def drifted_db(engine_db, project_migrations):
    """A migrated database of the engine under test, open for SQL by hand."""
    Runner(engine_db, project_migrations).migrate()
    return engine_db


@pytest.fixture
def cli(engine_url, project_migrations):
    """Run an invoke task on the database under test and the copied migrations."""

    def run(*args):
        return run_invoke(*args, url=engine_url, migrations_dir=project_migrations)

    run.url = engine_url
    return run


def drop_index(database, table, columns):
    name = next(i.name for i in database.get_indexes(table) if i.columns == columns)
    on_table = f" ON {table}" if isinstance(database, pw.MySQLDatabase) else ""
    database.execute_sql(f"DROP INDEX {name}{on_table}")


def run_ruff(*args):
    ruff = Path(sys.executable).parent / "ruff"
    config = ("--config", MIGRATIONS_DIR.parent / "pyproject.toml")
    return subprocess.run([str(ruff), *map(str, (*args, *config))], capture_output=True, text=True)


def make_drift(database):
    """A column added by hand and an index dropped by hand."""
    database.execute_sql("ALTER TABLE images ADD COLUMN karma INTEGER")
    drop_index(database, "tags", ["trending"])


def check_lines(cli):
    result = cli("db.check")
    return result.returncode, result.stdout


def test_auto_catches_up_and_its_down_brings_the_drift_back(cli, drifted_db, project_migrations):
    make_drift(drifted_db)
    drifted_db.close()

    result = cli("db.new-migration", "catch up", "--auto")

    assert result.returncode == 0, result.stderr
    written = project_migrations / f"{NEXT_VERSION}_catch_up.py"
    assert result.stdout.strip() == f"created {written}"
    text = written.read_text()
    imports = [line for line in text.splitlines() if line.startswith(("import", "from"))]
    assert imports == ["import peewee as pw"]  # never db.models: migrations are frozen
    assert 'migrator.drop_column("images", "karma")' in text
    assert run_ruff("format", "--check", written).returncode == 0  # lint-clean as written
    assert run_ruff("check", written).returncode == 0
    assert cli("db.migrate").returncode == 0
    assert check_lines(cli)[0] == 0

    assert cli("db.rollback", "--steps", "1").returncode == 0
    code, listed = check_lines(cli)
    assert code == 3  # not in step
    assert "images.karma: column not in the models" in listed
    assert "index tags(trending) missing" in listed


def test_in_step_writes_nothing(cli, drifted_db, project_migrations):
    drifted_db.close()
    before = sorted(project_migrations.iterdir())

    result = cli("db.new-migration", "catch up", "--auto")

    assert (result.returncode, result.stdout.strip()) == (0, IN_STEP)
    assert sorted(project_migrations.iterdir()) == before


def test_a_missing_table_is_created_from_its_model_and_dropped_by_down(
    engine, cli, drifted_db, project_migrations
):
    drifted_db.execute_sql("DROP TABLE user_likes")  # no trigger, nothing points at it
    drifted_db.close()

    result = cli("db.new-migration", "catch up", "--auto")

    assert result.returncode == 0, result.stderr
    written = project_migrations / f"{NEXT_VERSION}_catch_up.py"
    text = written.read_text()
    assert "class UserLikes(Frozen):" in text
    assert "class Images(Frozen):" in text  # a stub: the key its foreign key points at
    assert run_ruff("format", "--check", written).returncode == 0
    assert run_ruff("check", written).returncode == 0
    assert cli("db.migrate").returncode == 0
    # In step with the models (keys, ON DELETE, defaults, indexes). The index 006 built
    # on the table is not the models' (MySQL has none): the new migration does not make
    # it again, and db.check says it is gone.
    if engine == "mysql":
        assert check_lines(cli) == (0, IN_STEP_LINE)
    else:
        assert check_lines(cli) == (3, "index user_likes_user_newest on user_likes: missing\n")

    assert cli("db.rollback", "--steps", "1").returncode == 0
    assert check_lines(cli) == (
        3,
        f"table user_likes: missing\nmigration {NEXT_VERSION}_catch_up: pending\n",
    )


LEGACY_TABLES = (
    "CREATE TABLE legacy_shelves (id INTEGER NOT NULL PRIMARY KEY, label VARCHAR(40) NOT NULL)",
    "CREATE TABLE legacy_notes (id INTEGER NOT NULL PRIMARY KEY, "
    "shelf_id INTEGER NOT NULL REFERENCES legacy_shelves (id), "
    "body TEXT NOT NULL, stars INTEGER DEFAULT 3)",
    "CREATE INDEX legacy_notes_stars ON legacy_notes (stars)",
)


def table_shape(database, table):
    """What down must build again: columns, nullability, defaults, indexes, keys."""
    columns = [(c.name, c.null, c.default) for c in database.get_columns(table)]
    indexes = sorted((tuple(i.columns), i.unique) for i in database.get_indexes(table))
    keys = [(k.column, k.dest_table, k.dest_column) for k in database.get_foreign_keys(table)]
    return columns, indexes, keys


def test_tables_not_in_the_models_are_dropped_and_down_builds_them_again(
    cli, drifted_db, project_migrations
):
    for statement in LEGACY_TABLES:
        drifted_db.execute_sql(statement)
    before = [table_shape(drifted_db, t) for t in ("legacy_shelves", "legacy_notes")]
    drifted_db.close()

    result = cli("db.new-migration", "catch up", "--auto")

    assert result.returncode == 0, result.stderr
    written = project_migrations / f"{NEXT_VERSION}_catch_up.py"
    assert run_ruff("format", "--check", written).returncode == 0
    assert cli("db.migrate").returncode == 0  # the notes go before the shelves they point at
    assert check_lines(cli) == (0, IN_STEP_LINE)

    assert cli("db.rollback", "--steps", "1").returncode == 0
    code, listed = check_lines(cli)
    assert code == 3  # not in step
    assert listed.splitlines() == [
        "table legacy_notes: not in the models",
        "table legacy_shelves: not in the models",
        f"migration {NEXT_VERSION}_catch_up: pending",
    ]
    database = open_database(cli.url, create=False)
    try:
        after = [table_shape(database, t) for t in ("legacy_shelves", "legacy_notes")]
    finally:
        database.close()
    assert after == before


class Comment(BaseModel):
    """A model the database has no table for yet."""

    image = pw.ForeignKeyField(Image, column_name="image_id", on_delete="CASCADE")
    body = checked(pw.TextField(), NOT_BLANK)
    posted_at = timestamp()

    class Meta:
        table_name = "comments"
        indexes = ((("image", "posted_at"), False),)


def test_a_new_model_gets_its_table_keys_checks_and_indexes(drifted_db, project_migrations):
    models = (*ALL_MODELS, Comment)

    text = migration_text(drifted_db, project_migrations, "grow", models)

    assert 'pw.Check("LENGTH(TRIM(body)) > 0")' in text
    assert apply_text(drifted_db, project_migrations, text) == [f"{NEXT_VERSION}_grow"]
    assert check_database(drifted_db, project_migrations, models) == []

    Runner(drifted_db, project_migrations).rollback(steps=1)
    (project_migrations / f"{NEXT_VERSION}_grow.py").unlink()
    assert check_database(drifted_db, project_migrations) == []


def test_auto_and_sql_together_are_refused(cli, project_migrations):
    result = cli("db.new-migration", "catch up", "--auto", "--sql")

    one_error_line(result, 2, "--auto", "--sql")
    assert not list(project_migrations.glob(f"{NEXT_VERSION}*"))


def test_a_pending_migration_is_refused(cli, drifted_db, write_migration):
    drifted_db.close()
    write_migration(f"{NEXT_VERSION}_later.sql", "-- migrate:up\n-- migrate:down\n")

    one_error_line(
        cli("db.new-migration", "catch up", "--auto"), None, f"{NEXT_VERSION}_later", "db.migrate"
    )


def tags_with(**extra):
    """A copy of the Tag model with the extra fields (models that grew a column)."""
    fields = {f.name: f.clone() for f in Tag._meta.sorted_fields} | extra
    meta = type("Meta", (), {"table_name": "tags"})
    model = type("GrownTag", (BaseModel,), {**fields, "Meta": meta})
    return tuple(model if m is Tag else m for m in ALL_MODELS)


def apply_text(database, migrations_dir, text):
    (migrations_dir / f"{NEXT_VERSION}_grow.py").write_text(text, encoding="utf-8")
    return Runner(database, migrations_dir).migrate()


def test_a_column_the_models_add_is_added_with_its_literal_field(drifted_db, project_migrations):
    drifted_db.execute_sql("INSERT INTO tags (name) VALUES ('dawn')")  # a table with rows
    models = tags_with(
        colour=pw.CharField(max_length=7, default="grey", index=True),
        score=counter(),  # NOT NULL, a server default and a CHECK
        note=pw.TextField(null=True),
    )

    text = migration_text(drifted_db, project_migrations, "grow", models)

    grey = """pw.CharField(max_length=7, default="grey", constraints=[pw.SQL("DEFAULT 'grey'")])"""
    assert grey in text
    assert 'pw.Check("score >= 0")' in text
    assert "pw.TextField(null=True)" in text
    assert "allow_not_null=True" in text
    assert apply_text(drifted_db, project_migrations, text) == [f"{NEXT_VERSION}_grow"]
    assert check_database(drifted_db, project_migrations, models) == []
    row = drifted_db.execute_sql("SELECT colour, score FROM tags").fetchone()
    assert tuple(row) == ("grey", 0)

    Runner(drifted_db, project_migrations).rollback(steps=1)
    (project_migrations / f"{NEXT_VERSION}_grow.py").unlink()
    assert check_database(drifted_db, project_migrations) == []


def test_a_not_null_column_without_a_default_is_refused(drifted_db, project_migrations):
    models = tags_with(weight=pw.IntegerField())

    with pytest.raises(CannotGenerate, match=r"tags\.weight is NOT NULL without a default"):
        migration_text(drifted_db, project_migrations, "grow", models)
