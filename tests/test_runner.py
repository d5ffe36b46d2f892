"""The migration runner: plan, apply, roll back, refuse, and never leave half a migration."""

import sqlite3
import threading
import time

import pytest

from db.commands import PYTHON_TEMPLATE, SQL_TEMPLATE
from db.engines import engine_for, open_database
from db.errors import (
    ConfigError,
    DriftError,
    FailedMigrationError,
    HistoryTableError,
    IrreversibleMigration,
    LockTimeout,
    MigrationFailed,
    OutOfOrderError,
    UnknownVersion,
)
from db.models import ImageTag, Tag, User, UserLike, bind_models
from db.runner import APPLIED, CHANGED, FAILED, MISSING, PENDING, Runner
from tests.conftest import LATEST_VERSION, MIGRATIONS_DIR, NEXT_VERSION
from tests.factories import make_image, make_user

CREATE_A = (
    "-- migrate:up\nCREATE TABLE a (id INTEGER PRIMARY KEY);\n-- migrate:down\nDROP TABLE a;\n"
)
CREATE_B = (
    "-- migrate:up\nCREATE TABLE b (id INTEGER PRIMARY KEY);\n-- migrate:down\nDROP TABLE b;\n"
)
CREATE_C = (
    "-- migrate:up\nCREATE TABLE c (id INTEGER PRIMARY KEY);\n-- migrate:down\nDROP TABLE c;\n"
)


def tables(database):
    return sorted(database.get_tables())


def schema(database):
    """Tables, their columns and indexes, for before/after comparisons on any engine."""
    return {
        table: (
            [column.name for column in database.get_columns(table)],
            sorted(index.name for index in database.get_indexes(table)),
        )
        for table in database.get_tables()
    }


@pytest.fixture
def database(engine_db):
    """An empty database of the engine under test."""
    return engine_db


@pytest.fixture
def runner(database, migrations_dir):
    return Runner(database, migrations_dir)


@pytest.fixture
def transactional(runner):
    """Skip on engines whose DDL commits as it goes (see the failed-state tests)."""
    if not runner.engine.transactional_ddl:
        pytest.skip(f"{runner.engine.name} commits DDL as it goes: see test_failed_*")


@pytest.fixture
def sqlite_runner(fresh_db, migrations_dir):
    return Runner(fresh_db, migrations_dir)


@pytest.fixture
def abc(write_migration):
    write_migration("001_create_a.sql", CREATE_A)
    write_migration("002_create_b.sql", CREATE_B)
    write_migration("003_create_c.sql", CREATE_C)


def test_migrate_applies_pending_migrations_in_order_and_records_them(runner, database, abc):
    assert runner.migrate() == ["001_create_a", "002_create_b", "003_create_c"]

    assert tables(database) == ["a", "b", "c", "migrations"]
    history = runner.history.applied()
    assert list(history) == ["001", "002", "003"]
    assert all(len(row.checksum) == 64 and row.duration_ms >= 0 for row in history.values())
    assert runner.current_version() == "003"


def test_a_second_migrate_has_nothing_to_do(runner, abc):
    runner.migrate()

    assert runner.migrate() == []


def test_migrate_to_stops_after_that_version(runner, database, abc):
    assert runner.migrate(to="002") == ["001_create_a", "002_create_b"]
    assert [m.state for m in runner.status()] == [APPLIED, APPLIED, PENDING]


def test_migrate_to_an_unknown_version_is_refused_before_anything_runs(runner, database, abc):
    with pytest.raises(UnknownVersion, match="--to 9: no migration has that version"):
        runner.migrate(to="9")

    assert tables(database) == []


def test_dry_run_returns_the_plan_and_changes_nothing(runner, database, abc):
    assert runner.migrate(dry_run=True) == ["001_create_a", "002_create_b", "003_create_c"]

    assert tables(database) == []


def test_a_step_that_runs_no_sql_is_applied_and_reverted_but_says_so(
    database, migrations_dir, write_migration
):
    write_migration("001_create_a.sql", CREATE_A)
    write_migration("002_unedited.py", PYTHON_TEMPLATE.format(title="unedited"))
    write_migration("003_unedited.sql", SQL_TEMPLATE.format(title="unedited"))
    events = []
    runner = Runner(database, migrations_dir, on_event=lambda *event: events.append(event[:2]))

    runner.migrate()
    runner.rollback(steps=3)

    done = [(event, migration.name) for event, migration in events if not event.endswith("ing")]
    assert done == [
        ("applied", "001_create_a"),
        ("applied-empty", "002_unedited"),
        ("applied-empty", "003_unedited"),
        ("reverted-empty", "003_unedited"),
        ("reverted-empty", "002_unedited"),
        ("reverted", "001_create_a"),
    ]
    assert tables(database) == ["migrations"]


def test_rollback_reverts_the_last_migration_by_default(runner, database, abc):
    runner.migrate()

    assert runner.rollback() == ["003_create_c"]
    assert tables(database) == ["a", "b", "migrations"]


def test_rollback_to_a_version_keeps_it_and_reverts_the_later_ones(runner, database, abc):
    runner.migrate()

    assert runner.rollback(to="001") == ["003_create_c", "002_create_b"]
    assert runner.current_version() == "001"


def test_rollback_to_zero_reverts_everything(runner, database, abc):
    runner.migrate()

    assert runner.rollback(to="0") == ["003_create_c", "002_create_b", "001_create_a"]
    assert tables(database) == ["migrations"]


@pytest.mark.parametrize(
    ("steps", "reverted", "left"),
    [(1, ["003_create_c"], ["a", "b"]), (2, ["003_create_c", "002_create_b"], ["a"])],
)
def test_rollback_steps_reverts_that_many(runner, database, abc, steps, reverted, left):
    runner.migrate()

    assert runner.rollback(steps=steps) == reverted
    assert tables(database) == [*left, "migrations"]  # what is left, not only what is said
    assert list(runner.history.applied()) == ["001", "002", "003"][: 3 - steps]


def test_rollback_options_are_checked(runner, abc):
    runner.migrate()

    with pytest.raises(ConfigError, match="either --to or --steps"):
        runner.rollback(to="1", steps=1)
    with pytest.raises(ConfigError, match="--steps must be 1 or more"):
        runner.rollback(steps=0)
    with pytest.raises(UnknownVersion, match="--to 7: not an applied migration"):
        runner.rollback(to="7")


def test_up_then_down_then_up_round_trips_to_the_same_schema(runner, database, abc):
    runner.migrate()
    migrated = schema(database)
    runner.rollback(to="0")
    runner.migrate()

    assert schema(database) == migrated


def test_a_failing_sql_migration_leaves_nothing_behind(
    runner, database, write_migration, transactional
):
    write_migration("001_create_a.sql", CREATE_A)
    write_migration(
        "002_broken.sql",
        "CREATE TABLE half (id INTEGER);\n"
        "INSERT INTO a (id) VALUES (1);\n"
        "INSERT INTO nowhere VALUES (1);\n",
    )

    with pytest.raises(MigrationFailed, match=r"002_broken\.sql failed: line 3: .*nowhere"):
        runner.migrate()

    assert tables(database) == ["a", "migrations"]
    assert database.execute_sql("SELECT COUNT(*) FROM a").fetchone() == (0,)
    assert list(runner.history.applied()) == ["001"]


def test_a_failing_python_migration_is_rolled_back_and_its_line_named(
    runner, database, write_migration, transactional
):
    write_migration("001_create_a.sql", CREATE_A)
    write_migration(
        "002_half.py",
        "import peewee as pw\n"
        "\n"
        "def up(migrator, db):\n"
        "    db.execute_sql('CREATE TABLE half (id INTEGER)')\n"
        "    migrator.migrate(migrator.add_column('a', 'n', pw.IntegerField(default=0)))\n"
        "    raise RuntimeError('boom')\n",
    )

    with pytest.raises(MigrationFailed, match=r"002_half\.py failed: line 6: RuntimeError: boom"):
        runner.migrate()

    assert tables(database) == ["a", "migrations"]
    assert [c.name for c in database.get_columns("a")] == ["id"]
    assert list(runner.history.applied()) == ["001"]


def test_an_edited_applied_migration_stops_migrate_and_rollback(
    runner, migrations_dir, abc, write_migration
):
    runner.migrate(to="002")
    write_migration("002_create_b.sql", CREATE_B.replace("id INTEGER", "id BIGINT"))

    assert [m.state for m in runner.status()] == [APPLIED, CHANGED, PENDING]
    with pytest.raises(DriftError, match="002_create_b was changed after it was applied"):
        runner.migrate()
    with pytest.raises(DriftError, match="002_create_b was changed"):
        runner.rollback()


def test_a_deleted_applied_migration_stops_migrate_and_rollback(runner, migrations_dir, abc):
    runner.migrate(to="002")
    (migrations_dir / "001_create_a.sql").unlink()

    assert [m.state for m in runner.status()] == [MISSING, APPLIED, PENDING]
    with pytest.raises(DriftError, match="001_create_a is applied but its file is gone"):
        runner.migrate()
    with pytest.raises(DriftError, match="001_create_a is applied but its file is gone"):
        runner.rollback()


def test_line_ending_changes_are_not_drift(runner, migrations_dir, abc):
    runner.migrate()
    path = migrations_dir / "002_create_b.sql"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))

    assert {m.state for m in runner.status()} == {APPLIED}
    assert runner.rollback() == ["003_create_c"]


def test_a_pending_migration_below_an_applied_one_needs_a_flag(runner, database, write_migration):
    write_migration("001_create_a.sql", CREATE_A)
    write_migration("003_create_c.sql", CREATE_C)
    runner.migrate()
    write_migration("002_create_b.sql", CREATE_B)

    with pytest.raises(
        OutOfOrderError, match=r"002_create_b\.sql: pending, but numbered below 003"
    ):
        runner.migrate()
    assert "b" not in tables(database)

    assert runner.migrate(allow_out_of_order=True) == ["002_create_b"]


def test_rollback_of_a_migration_without_down_is_refused_before_anything_runs(
    runner, database, write_migration
):
    write_migration("001_create_a.sql", CREATE_A)
    write_migration("002_up_only.sql", "CREATE TABLE up_only (id INTEGER);")
    runner.migrate()

    with pytest.raises(IrreversibleMigration, match=r"002_up_only\.sql: has no down step"):
        runner.rollback(steps=2)
    assert tables(database) == ["a", "migrations", "up_only"]


def test_a_migration_that_breaks_a_foreign_key_is_refused(sqlite_runner, fresh_db, write_migration):
    write_migration(
        "001_parent_child.sql",
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);\n"
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id));\n",
    )
    write_migration("002_orphan.sql", "INSERT INTO child (id, parent_id) VALUES (1, 42);")

    with pytest.raises(
        MigrationFailed, match=r"002_orphan\.sql failed: 1 row\(s\) break a foreign key"
    ):
        sqlite_runner.migrate()
    assert fresh_db.execute_sql("SELECT COUNT(*) FROM child").fetchone() == (0,)


TABLE_WITH_CHILD_AND_TRIGGER = """
CREATE TABLE photo (id INTEGER PRIMARY KEY, width INTEGER, likes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE vote (id INTEGER PRIMARY KEY,
                   photo_id INTEGER NOT NULL REFERENCES photo (id) ON DELETE CASCADE);
CREATE TABLE log (what TEXT);
CREATE TRIGGER photo_logged AFTER INSERT ON photo BEGIN INSERT INTO log VALUES ('photo'); END;
CREATE TRIGGER vote_counted AFTER INSERT ON vote BEGIN
    UPDATE photo SET likes = likes + 1 WHERE id = NEW.photo_id;
END;
INSERT INTO photo (id, width) VALUES (1, 640);
INSERT INTO vote (photo_id) VALUES (1);
"""

REBUILD_PHOTO = """import peewee as pw

def up(migrator, db):
    migrator.migrate(migrator.alter_column_type('photo', 'width', pw.BigIntegerField(null=True)))

def down(migrator, db):
    migrator.migrate(migrator.alter_column_type('photo', 'width', pw.IntegerField(null=True)))
"""


def test_a_table_rebuild_keeps_the_rows_that_reference_it(sqlite_runner, fresh_db, write_migration):
    # SQLite's DROP TABLE inside a rebuild would cascade-delete `vote` rows if
    # foreign keys were enforced during the migration.
    write_migration("001_photos.sql", TABLE_WITH_CHILD_AND_TRIGGER)
    write_migration("002_widen.py", REBUILD_PHOTO)

    sqlite_runner.migrate()

    assert fresh_db.execute_sql("SELECT COUNT(*) FROM vote").fetchone() == (1,)
    assert fresh_db.pragma("foreign_keys") == 1


def test_a_table_rebuild_keeps_the_tables_triggers(sqlite_runner, fresh_db, write_migration):
    write_migration("001_photos.sql", TABLE_WITH_CHILD_AND_TRIGGER)
    write_migration("002_widen.py", REBUILD_PHOTO)
    sqlite_runner.migrate()

    fresh_db.execute_sql("INSERT INTO photo (id, width) VALUES (2, 800)")
    fresh_db.execute_sql("INSERT INTO vote (photo_id) VALUES (2)")

    triggers = [
        r[0]
        for r in fresh_db.execute_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
        )
    ]
    assert triggers == ["photo_logged", "vote_counted"]
    assert fresh_db.execute_sql("SELECT COUNT(*) FROM log").fetchone() == (2,)
    assert fresh_db.execute_sql("SELECT likes FROM photo WHERE id = 2").fetchone() == (1,)


def test_a_table_rebuild_that_fails_later_is_rolled_back_whole(
    sqlite_runner, fresh_db, write_migration
):
    write_migration("001_photos.sql", TABLE_WITH_CHILD_AND_TRIGGER)
    write_migration(
        "002_widen_then_fail.py",
        REBUILD_PHOTO.replace(
            "BigIntegerField(null=True)))\n",
            "BigIntegerField(null=True)))\n    db.execute_sql('SELECT * FROM nowhere')\n",
            1,
        ),
    )
    before = schema(fresh_db)
    sqlite_runner.migrate(to="001")
    before = schema(fresh_db)

    with pytest.raises(MigrationFailed, match="no such table: nowhere"):
        sqlite_runner.migrate()

    assert schema(fresh_db) == before
    assert fresh_db.execute_sql("SELECT COUNT(*) FROM vote").fetchone() == (1,)


def test_migrate_waits_for_a_busy_database_instead_of_failing(
    sqlite_runner, fresh_db, db_path, abc
):
    # Another connection holds the write lock for a moment; a deferred BEGIN
    # would fail at once with "database is locked", an IMMEDIATE one waits.
    fresh_db.execute_sql("CREATE TABLE busy (id INTEGER)")
    holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO busy VALUES (1)")
    releaser = threading.Timer(1.0, holder.execute, ("COMMIT",))
    releaser.start()
    started = time.monotonic()
    try:
        applied = sqlite_runner.migrate()
    finally:
        releaser.join()
        holder.close()

    assert applied == ["001_create_a", "002_create_b", "003_create_c"]
    assert time.monotonic() - started >= 0.5


ALTER_IMAGE_TITLE = """import peewee as pw

def up(migrator, db):
    migrator.migrate(migrator.alter_column_type("images", "title", pw.TextField()))

def down(migrator, db):
    migrator.migrate(migrator.alter_column_type("images", "title", pw.CharField(max_length=200)))
"""


def test_rebuilding_the_images_table_keeps_its_links_likes_and_count_triggers(
    fresh_db, migrations_dir, write_migration
):
    # The real schema: images is referenced with ON DELETE CASCADE by four
    # tables and carries the triggers that keep users.uploads.
    for path in MIGRATIONS_DIR.glob("[0-9]*.py"):
        write_migration(path.name, path.read_text())
    runner = Runner(fresh_db, migrations_dir)
    runner.migrate()
    bind_models(fresh_db)
    ada = make_user()
    image = make_image(ada)
    ImageTag.create(image=image, tag=Tag.create(name="sunrise"))
    UserLike.create(user=ada, image=image)
    triggers_before = schema_objects(fresh_db, "trigger")

    # Numbered after the project's newest, so it is the one migration rollback reverts.
    write_migration(f"{NEXT_VERSION}_longer_titles.py", ALTER_IMAGE_TITLE)
    runner.migrate()
    make_image(ada, title="Dusk")

    assert ImageTag.select().count() == 1
    assert UserLike.select().count() == 1
    assert schema_objects(fresh_db, "trigger") == triggers_before
    assert User.get_by_id(ada.id).uploads == 2
    assert title_type(fresh_db) == "TEXT"
    assert runner.rollback() == [f"{NEXT_VERSION}_longer_titles"]
    # Only the test's migration is reverted: the title as before, and the rebuild back
    # keeps the links, likes and every trigger (005's search triggers on images too).
    assert title_type(fresh_db) == "VARCHAR(200)"
    assert ImageTag.select().count() == 1
    assert UserLike.select().count() == 1
    assert schema_objects(fresh_db, "trigger") == triggers_before
    assert runner.current_version() == LATEST_VERSION


def title_type(database):
    return next(c.data_type for c in database.get_columns("images") if c.name == "title")


def schema_objects(database, kind):
    return database.execute_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = ? ORDER BY name", (kind,)
    ).fetchall()


@pytest.fixture
def non_transactional(runner):
    """Only on engines whose DDL commits as it goes (MySQL/MariaDB)."""
    if runner.engine.transactional_ddl:
        pytest.skip(f"{runner.engine.name} rolls a failed migration back whole")


HALF_APPLIED = (
    "-- migrate:up\n"
    "CREATE TABLE half (id INTEGER PRIMARY KEY);\n"
    "INSERT INTO nowhere VALUES (1);\n"
    "-- migrate:down\n"
    "DROP TABLE IF EXISTS half;\n"
)


def test_failed_migration_is_recorded_and_shown_with_its_error(
    runner, database, write_migration, non_transactional
):
    write_migration("001_create_a.sql", CREATE_A)
    write_migration("002_half.sql", HALF_APPLIED)

    with pytest.raises(MigrationFailed, match=r"002_half\.sql failed: line 3: .*part of it may be"):
        runner.migrate()

    assert "half" in tables(database)  # the DDL before the error stayed: MySQL committed it
    assert [(m.state, m.error is not None) for m in runner.status()] == [
        (APPLIED, False),
        (FAILED, True),
    ]
    assert runner.current_version() == "001"  # the last one applied whole


def test_failed_migration_stops_migrate_until_repaired(
    runner, database, write_migration, non_transactional
):
    write_migration("001_create_a.sql", CREATE_A)
    write_migration("002_half.sql", HALF_APPLIED)
    with pytest.raises(MigrationFailed):
        runner.migrate()

    with pytest.raises(FailedMigrationError, match="002_half failed on an earlier run"):
        runner.migrate()

    database.execute_sql("DROP TABLE half")  # the operator fixes the database by hand
    write_migration("002_half.sql", HALF_APPLIED.replace("INSERT INTO nowhere VALUES (1);\n", ""))
    assert runner.repair() == ["002_half"]
    assert runner.migrate() == ["002_half"]
    assert {m.state for m in runner.status()} == {APPLIED}


def test_failed_migration_can_be_rolled_back_with_its_down(
    runner, database, write_migration, non_transactional
):
    write_migration("001_create_a.sql", CREATE_A)
    write_migration("002_half.sql", HALF_APPLIED)
    with pytest.raises(MigrationFailed):
        runner.migrate()

    assert runner.rollback() == ["002_half"]

    assert "half" not in tables(database)
    assert [m.state for m in runner.status()] == [APPLIED, PENDING]


def test_repair_with_nothing_failed_does_nothing(runner, abc):
    runner.migrate()

    assert runner.repair() == []
    assert {m.state for m in runner.status()} == {APPLIED}


def test_a_postgres_migration_lock_held_elsewhere_times_out_with_a_clear_line(
    engine, engine_url, engine_db
):
    if engine != "postgres":
        pytest.skip("PostgreSQL's advisory lock; SQLite locks a file, MySQL waits in GET_LOCK")
    holder = open_database(engine_url)
    try:
        with engine_for(holder).migration_lock(holder):
            started = time.monotonic()
            waiting = engine_for(engine_db).migration_lock(engine_db, timeout=0.3)
            held_elsewhere = r"has held the migration lock .* than 0.3 s"
            with pytest.raises(LockTimeout, match=held_elsewhere), waiting:
                pass
            assert time.monotonic() - started >= 0.3
    finally:
        holder.close()


def test_an_older_history_table_without_the_error_column_is_upgraded(runner, database, abc):
    # As the first release made it: the next migrate adds the column, the rows stay.
    database.execute_sql(
        "CREATE TABLE migrations (version VARCHAR(32) PRIMARY KEY, name VARCHAR(255), "
        "checksum VARCHAR(64), applied_at TIMESTAMP, duration_ms INTEGER)"
    )

    assert runner.migrate() == ["001_create_a", "002_create_b", "003_create_c"]

    assert "error" in {column.name for column in database.get_columns("migrations")}
    assert list(runner.history.applied()) == ["001", "002", "003"]


def test_a_foreign_migrations_table_is_refused_even_with_an_error_column(runner, database, abc):
    # The seed's scripts kept (version, description): not this toolkit's history, whatever
    # optional column it happens to have.
    database.execute_sql(
        "CREATE TABLE migrations (version VARCHAR(32) PRIMARY KEY, description TEXT, error TEXT)"
    )

    with pytest.raises(HistoryTableError, match="lacks applied_at, checksum, duration_ms, name"):
        runner.migrate()

    assert tables(database) == ["migrations"]


SLOW_MIGRATION = """import time


def up(migrator, db):
    time.sleep(0.2)
    db.execute_sql("CREATE TABLE slow (id INTEGER PRIMARY KEY)")


def down(migrator, db):
    db.execute_sql("DROP TABLE slow")
"""


def test_a_migrations_duration_is_recorded_in_milliseconds(runner, write_migration):
    # It sleeps 0.2 s: seconds would record 0, microseconds 200,000.
    write_migration("001_slow.py", SLOW_MIGRATION)

    runner.migrate()

    recorded = runner.history.applied()["001"].duration_ms
    assert 150 <= recorded <= 5000
    assert [m.duration_ms for m in runner.status()] == [recorded]


# --- what mutation testing found loose (nox -s mutation) ----------------------------------


def test_a_database_with_nothing_applied_has_no_current_version(runner, abc):
    assert runner.current_version() is None


def test_the_current_version_is_the_highest_number_not_the_last_in_text_order(
    runner, write_migration
):
    write_migration("999_create_a.sql", CREATE_A)
    write_migration("1000_create_b.sql", CREATE_B)

    runner.migrate()

    assert runner.current_version() == "1000"


def test_migrate_to_accepts_a_migrations_full_name(runner, abc):
    assert runner.migrate(to="002_create_b") == ["001_create_a", "002_create_b"]


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (
            lambda runner: runner.migrate(to="9"),
            "--to 9: no migration has that version (known: 001, 002, 003)",
        ),
        (
            lambda runner: runner.migrate(to="abc"),
            "--to abc: a version is a number such as 002",
        ),
        (
            lambda runner: runner.rollback(to="7"),
            "--to 7: not an applied migration (applied: 001, 002; 0 rolls back all)",
        ),
        (
            lambda runner: runner.rollback(to="1", steps=1),
            "give either --to or --steps, not both",
        ),
    ],
    ids=["unknown version", "not a number", "not applied", "both"],
)
def test_a_refused_target_is_one_sentence_that_lists_the_choices(runner, abc, action, message):
    runner.migrate(to="002")

    with pytest.raises((UnknownVersion, ConfigError)) as refused:
        action(runner)

    assert str(refused.value) == message
    assert list(runner.history.applied()) == ["001", "002"]


def test_with_no_migrations_the_refusals_say_none(runner, migrations_dir):
    with pytest.raises(UnknownVersion, match=r"\(known: none\)$"):
        runner.migrate(to="1")
    with pytest.raises(UnknownVersion, match=r"\(applied: none; 0 rolls back all\)$"):
        runner.rollback(to="1")


def test_the_refusals_to_run_say_how_to_go_on(runner, database, write_migration):
    write_migration("001_create_a.sql", CREATE_A)
    write_migration("002_up_only.sql", "CREATE TABLE up_only (id INTEGER);")
    write_migration("004_create_c.sql", CREATE_C)
    runner.migrate()
    write_migration("003_create_b.sql", CREATE_B)

    with pytest.raises(OutOfOrderError, match=r"renumber it, or run with --allow-out-of-order$"):
        runner.migrate()
    with pytest.raises(
        IrreversibleMigration, match=r"\(add a down\(\) function or a '-- migrate:down' section\)$"
    ):
        runner.rollback(steps=2)
    assert tables(database) == ["a", "c", "migrations", "up_only"]


def test_repair_forgets_a_run_recorded_as_failed(runner, migrations_dir, abc):
    from db.loader import discover

    runner.migrate(to="002")
    runner.history.record_applied(discover(migrations_dir)[1], 3, error="boom")

    assert runner.repair() == ["002_create_b"]

    assert list(runner.history.applied()) == ["001"]


def test_progress_names_each_migration_before_and_after_with_its_duration(runner, abc):
    events = []
    runner.on_event = lambda event, migration, duration_ms: events.append(
        (event, migration.name, duration_ms)
    )

    runner.migrate(to="001")

    recorded = runner.history.applied()["001"].duration_ms
    assert events == [("applying", "001_create_a", None), ("applied", "001_create_a", recorded)]


def test_status_lists_every_version_in_number_order_with_its_record(runner, migrations_dir):
    from db.loader import discover
    from db.runner import MigrationStatus

    for name, text in [("999_a", CREATE_A), ("1000_b", CREATE_B), ("1001_c", CREATE_C)]:
        (migrations_dir / f"{name}.sql").write_text(text)
    runner.migrate(to="999")
    runner.history.record_applied(discover(migrations_dir)[2], 7, error="boom")
    applied = runner.history.applied()

    assert runner.status() == [
        MigrationStatus("999", "999_a", APPLIED, applied["999"].applied_at,
                        applied["999"].duration_ms),
        MigrationStatus("1000", "1000_b", PENDING),
        MigrationStatus("1001", "1001_c", FAILED, applied["1001"].applied_at, 7, "boom"),
    ]  # fmt: skip
    with pytest.raises(FailedMigrationError) as refused:
        runner.migrate()
    assert str(refused.value) == (
        "migration 1001_c failed on an earlier run and may be half-applied (boom); fix the "
        "database, then run invoke db.rollback (runs its down) or invoke db.repair (forgets "
        "the failed run)"
    )


def test_a_changed_migration_is_refused_saying_where_the_change_belongs(
    runner, write_migration, abc
):
    runner.migrate()
    write_migration("002_create_b.sql", CREATE_B + "-- an edit\n")

    with pytest.raises(DriftError) as refused:
        runner.migrate()

    assert str(refused.value) == (
        "migration 002_create_b was changed after it was applied (checksum differs); restore "
        "the applied version and put the change in a new migration"
    )
