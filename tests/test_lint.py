"""db.lint and db.migrate --strict: operations unsafe on a large live table, found in the
SQL pending migrations would run (db/lint.py). Each rule has a migration that triggers it
and one that does not, on its engine's real server (PostgreSQL: the real Squawk)."""

import shutil

import pytest

from db import commands
from db.config import Settings
from db.engines import open_database
from db.runner import Runner
from tests import servers
from tests.conftest import (
    LATEST_VERSION,
    MIGRATIONS_DIR,
    NEXT_VERSION,
    ok,
    one_error_line,
    run_invoke,
    sqlite_url,
)

CHANGE = f"{NEXT_VERSION}_change"  # the migration a test adds after the project's
AFTER_NEXT = f"{int(NEXT_VERSION) + 1:03d}"
PROJECT_MIGRATIONS = int(LATEST_VERSION)  # numbered 001 to the newest, none skipped
# The project's migration a --strict test leaves pending before its own: 006, lint-clean
# on every engine (online builds; acknowledged on SQLite). 005 is not on SQLite: its
# tags_name_lower is an unacknowledged sqlite-create-index.
CLEAN_PENDING = "006"

KARMA = '''"""Give users karma."""

import peewee as pw


def up(migrator, db):
    migrator.migrate(migrator.add_column("users", "karma", pw.IntegerField(default=0)))
'''

# (engine, rule, a migration that triggers it, one like it that does not); the
# database has the project's migrations applied, so users and images are old tables.
RULES = [
    ("sqlite", "sqlite-create-index", "CREATE INDEX users_name ON users (name);",
     "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\n"
     "CREATE INDEX notes_body ON notes (body);"),
    ("sqlite", "sqlite-table-rebuild", KARMA,
     KARMA.replace("default=0", "default=0, null=True")),
    ("sqlite", "update-without-where", "UPDATE users SET views = 0;",
     "UPDATE users SET views = 0 WHERE id = 'u1';"),
    ("mysql", "mysql-index-without-inplace", "CREATE INDEX users_name ON users (name);",
     "ALTER TABLE users ADD INDEX users_name (name), ALGORITHM=INPLACE, LOCK=NONE;"),
    ("mysql", "mysql-column-type-change",
     "ALTER TABLE users MODIFY name VARCHAR(150) NOT NULL;",
     "ALTER TABLE users ADD COLUMN karma INTEGER NULL;"),
    ("mysql", "mysql-column-not-last", "ALTER TABLE users ADD COLUMN karma INTEGER AFTER id;",
     "ALTER TABLE users ADD COLUMN karma INTEGER;"),
    ("mysql", "mysql-drop-column", "ALTER TABLE users DROP COLUMN avatar;",
     "ALTER TABLE images DROP INDEX images_privacy;"),
    ("mysql", "mysql-optimize", "OPTIMIZE TABLE users;", "ANALYZE TABLE users;"),
    ("mysql", "update-without-where", "UPDATE users SET views = 0;",
     "UPDATE users SET views = 0 WHERE id = 'u1';"),
    ("postgres", "require-concurrent-index-creation",
     "CREATE INDEX users_name ON users (name);",
     "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY users_name ON users (name);"),
    ("postgres", "ban-concurrent-index-creation-in-transaction",
     "CREATE INDEX CONCURRENTLY users_name ON users (name);",
     "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY users_name ON users (name);"),
    ("postgres", "changing-column-type", "ALTER TABLE users ALTER COLUMN name TYPE TEXT;",
     "ALTER TABLE users ADD COLUMN nickname TEXT;"),
    ("postgres", "adding-not-nullable-field", KARMA,
     KARMA.replace("default=0", "default=0, null=True")),
    ("postgres", "update-without-where", "UPDATE users SET views = 0;",
     "UPDATE users SET views = 0 WHERE id = 'u1';"),
]  # fmt: skip


@pytest.fixture(scope="module")
def migrated_url(tmp_path_factory):
    """Return ``url(engine)``: a database of that engine with the project's migrations
    applied, one per engine for the module (linting changes nothing); dropped after."""
    made = {}

    def url(engine):
        if engine not in made:
            if engine == "sqlite":
                made[engine] = sqlite_url(tmp_path_factory.mktemp("lint") / "gallery.db")
            else:
                servers.require_server(engine)
                made[engine] = servers.new_database_url(engine)
            database = open_database(made[engine])
            try:
                Runner(database, MIGRATIONS_DIR).migrate()
            finally:
                database.close()
        return made[engine]

    yield url
    for engine, made_url in made.items():
        if engine != "sqlite":
            servers.drop_database(made_url)


def with_migration(folder, text, name=None):
    """Return a copy of the project's migrations in ``folder`` plus ``text`` after them."""
    folder.mkdir()
    for path in MIGRATIONS_DIR.glob("[0-9]*"):
        shutil.copy(path, folder / path.name)
    kind = "py" if text.lstrip().startswith('"""') else "sql"
    (folder / f"{name or CHANGE}.{kind}").write_text(text, encoding="utf-8")
    return folder


def lint(url, folder, **options):
    return commands.lint(Settings(url=url, migrations_dir=folder), **options)


@pytest.mark.engine
@pytest.mark.parametrize(
    ("engine_name", "rule", "unsafe", "safe"), RULES, ids=[f"{r[0]}-{r[1]}" for r in RULES]
)
def test_each_rule_finds_its_operation_and_not_the_safe_one(
    migrated_url, tmp_path, engine_name, rule, unsafe, safe
):
    url = migrated_url(engine_name)

    found = lint(url, with_migration(tmp_path / "unsafe", unsafe))
    passed = lint(url, with_migration(tmp_path / "safe", safe))

    assert rule in {finding.rule for finding in found.unacknowledged}, found.findings
    assert all(finding.migration.startswith(CHANGE) for finding in found.findings)
    assert rule not in {finding.rule for finding in passed.findings}, passed.findings


def test_the_project_migrations_are_clean_on_a_fresh_database(engine, engine_db, engine_url):
    result = run_invoke("db.lint", url=engine_url)

    names = sorted(path.stem for path in MIGRATIONS_DIR.glob("[0-9]*"))
    assert ok(result).stdout.splitlines() == [
        f"checked {len(names)} migration(s) on {engine_db_engine_name(engine)}: "
        + ", ".join(names),
        "no unsafe operation found",
    ]


def engine_db_engine_name(engine):
    return {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MySQL"}[engine]


def test_operations_on_a_table_an_earlier_pending_migration_creates_are_not_reported(
    engine, engine_db, engine_url, project_migrations, write_migration
):
    write_migration(
        f"{NEXT_VERSION}_notes.sql",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(200));\n"
        "UPDATE notes SET body = 'x';",
    )
    write_migration(f"{AFTER_NEXT}_notes_index.sql", "CREATE INDEX notes_body ON notes (body);")

    result = lint(engine_url, project_migrations)

    assert result.findings == []
    assert result.migrations[-2:] == [f"{NEXT_VERSION}_notes", f"{AFTER_NEXT}_notes_index"]


def test_an_sql_finding_names_the_file_line_rule_and_alternative_and_exits_1(db_url, tmp_path):
    Runner(open_database(db_url), MIGRATIONS_DIR).migrate()
    folder = with_migration(
        tmp_path / "migrations", "-- reset views\n-- migrate:up\n\nUPDATE users SET views = 0;\n"
    )

    result = run_invoke("db.lint", url=db_url, migrations_dir=folder)

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"checked 1 migration(s) on SQLite: {CHANGE}"
    assert lines[1].startswith(f"{CHANGE}.sql line 4: update-without-where: writes every row")
    assert "; instead: backfill in batches" in lines[1]
    assert lines[-1] == "1 unacknowledged finding(s), 0 acknowledged"
    assert result.stderr == ""


def test_a_python_finding_names_the_statement_and_the_line_that_sent_it(db_url, tmp_path):
    Runner(open_database(db_url), MIGRATIONS_DIR).migrate()
    folder = with_migration(tmp_path / "migrations", KARMA)

    result = run_invoke("db.lint", url=db_url, migrations_dir=folder)

    assert result.returncode == 1
    assert f'{CHANGE}.py line 7 (UPDATE "users" SET "karma" = 0): update-without-where' in (
        result.stdout
    )
    assert f'{CHANGE}.py line 7 (CREATE TABLE "users__tmp__"' in result.stdout


def test_an_acknowledgement_with_a_reason_passes_and_is_listed(db_url, tmp_path):
    Runner(open_database(db_url), MIGRATIONS_DIR).migrate()
    folder = with_migration(
        tmp_path / "migrations",
        "-- lint: allow sqlite-create-index: users holds a few hundred rows\n"
        "CREATE INDEX users_name ON users (name);\n",
    )

    result = ok(run_invoke("db.lint", url=db_url, migrations_dir=folder))

    assert "sqlite-create-index" in result.stdout
    assert "[acknowledged: users holds a few hundred rows]" in result.stdout
    assert result.stdout.splitlines()[-1] == "0 unacknowledged finding(s), 1 acknowledged"


def test_an_acknowledgement_without_a_reason_is_itself_a_finding(db_url, tmp_path):
    Runner(open_database(db_url), MIGRATIONS_DIR).migrate()
    folder = with_migration(
        tmp_path / "migrations",
        '"""Karma."""\n# lint: allow update-without-where\n' + KARMA.split('"""', 2)[2],
    )

    result = run_invoke("db.lint", url=db_url, migrations_dir=folder)

    assert result.returncode == 1
    assert f"{CHANGE}.py line 2 (# lint: allow update-without-where): " in result.stdout
    assert "lint-allow-without-reason: acknowledges update-without-where without" in (result.stdout)
    assert "update-without-where: writes every row" in result.stdout  # still unacknowledged


def test_named_versions_are_linted_alone_and_others_are_refused_in_one_line(
    db_url, project_migrations, write_migration
):
    Runner(open_database(db_url), MIGRATIONS_DIR).migrate(to="002")
    write_migration(f"{NEXT_VERSION}_views.sql", "UPDATE users SET views = 0;")
    folder = project_migrations

    only_003 = run_invoke("db.lint", "--version", "003", url=db_url, migrations_dir=folder)
    applied = run_invoke("db.lint", "--version", "002", url=db_url, migrations_dir=folder)
    unknown = run_invoke("db.lint", "--version", "009", url=db_url, migrations_dir=folder)

    assert (
        ok(only_003).stdout.splitlines()[0] == "checked 1 migration(s) on SQLite: 003_add_triggers"
    )
    one_error_line(applied, 2, "002", "applied, not pending")
    one_error_line(unknown, 2, "009", "no migration has that version")


def test_strict_migrate_refuses_a_migration_with_findings_and_applies_nothing(
    engine, engine_url, project_migrations, write_migration
):
    database = open_database(engine_url)
    before = f"{int(CLEAN_PENDING) - 1:03d}"
    Runner(database, MIGRATIONS_DIR).migrate(to=before)
    database.close()
    write_migration(f"{NEXT_VERSION}_views.sql", "UPDATE users SET views = 0;")

    result = run_invoke("db.migrate", "--strict", url=engine_url, migrations_dir=project_migrations)

    line = one_error_line(result, 1, "--strict", "1 unacknowledged", "nothing applied")
    assert f"{NEXT_VERSION}_views.sql line 1: update-without-where" in result.stdout, line
    database = open_database(engine_url, create=False)
    try:
        versions = [v for (v,) in database.execute_sql("SELECT version FROM migrations")]
    finally:
        database.close()
    assert max(versions) == before  # not even the clean one before it ran


def test_strict_migrate_of_a_server_database_that_does_not_exist_yet_lints_nothing_and_applies(
    engine, engine_url
):
    if engine == "sqlite":
        pytest.skip("a missing SQLite file is linted as an empty database")

    result = ok(run_invoke("db.migrate", "--strict", url=engine_url))

    assert "does not exist yet, so every table is new: nothing to lint" in result.stdout
    assert f"applied {PROJECT_MIGRATIONS} migrations" in result.stdout


def test_strict_migrate_applies_migrations_without_findings(db_url):
    result = ok(run_invoke("db.migrate", "--strict", url=db_url))

    assert f"applied {PROJECT_MIGRATIONS} migrations" in result.stdout


@pytest.mark.engine
def test_squawk_rules_about_style_and_timeouts_the_runner_sets_are_left_out(migrated_url, tmp_path):
    url = migrated_url("postgres")
    # Squawk alone: prefer-bigint-over-int, prefer-robust-stmts, require-lock-timeout,
    # require-statement-timeout.
    folder = with_migration(tmp_path / "migrations", "ALTER TABLE users ADD COLUMN karma INTEGER;")

    assert lint(url, folder).findings == []
