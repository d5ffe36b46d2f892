"""Migrations on a live database: steps outside a transaction, lock and statement timeouts,
retries, and who a waiting migration was blocked by."""

import subprocess
import sys
import textwrap

import pytest

from db.errors import MigrationFailed, SourceFileError
from db.history import History
from db.runner import APPLIED, FAILED, Runner
from db.timeouts import MigrationTimeouts
from tests.conftest import PROJECT_ROOT, ok, one_error_line, run_invoke

CREATE_A = "CREATE TABLE a (id INTEGER PRIMARY KEY, n INTEGER);\n"

# A second session that takes a lock on table ``a`` and keeps it: on a server it reads
# the table inside an open transaction (PostgreSQL: ACCESS SHARE; MariaDB: a shared
# metadata lock), which an ALTER TABLE must wait for; on SQLite it takes the write lock.
BLOCKER = textwrap.dedent(
    """
    import sys, time
    from db.engines import engine_for, open_database
    url, seconds, writes = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "write"
    database = open_database(url)
    engine = engine_for(database)
    if engine.key == "postgres":
        database.execute_sql("SET application_name = 'cg-blocker'")
    if engine.key == "sqlite":
        database.execute_sql("BEGIN IMMEDIATE")
    else:
        database.execute_sql("BEGIN")
    database.execute_sql("SELECT COUNT(*) FROM a").fetchone()
    if writes:
        database.execute_sql("INSERT INTO a (id, n) VALUES (-1, 0)")
    print("holding", flush=True)
    time.sleep(seconds)
    database.execute_sql("COMMIT")
    """
)


@pytest.fixture
def table_a(engine_db):
    """A live database: table ``a``, and the history table of earlier migrations."""
    engine_db.execute_sql(CREATE_A)
    History(engine_db).ensure_table()
    return engine_db


@pytest.fixture
def blocker(engine_url):
    """Start a session holding a lock on ``a`` for ``seconds``: ``blocker(seconds)``;
    ``blocker(seconds, "write")`` also writes a row of ``a`` in its open transaction."""
    started = []

    def start(seconds, mode="read"):
        process = subprocess.Popen(
            [sys.executable, "-c", BLOCKER, engine_url, str(seconds), mode],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout.readline().strip() == "holding"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def only(engine, *engines):
    """Skip the test on engines other than ``engines``."""
    if engine not in engines:
        pytest.skip(f"about {' and '.join(engines)} only")


def runner_on(database, migrations_dir, retries=0, lock="5s", statement="off"):
    timeouts = MigrationTimeouts(lock=lock, statement=statement, retries=retries)
    events = []
    runner = Runner(
        database,
        migrations_dir,
        on_event=lambda event, migration, ms: events.append((event, migration.name)),
        timeouts=timeouts,
    )
    return runner, events


def columns(database, table):
    return [column.name for column in database.get_columns(table)]


# -- steps outside a transaction --------------------------------------------------------


def test_an_sql_step_marked_transaction_false_builds_an_index_concurrently(
    engine, table_a, write_migration, migrations_dir
):
    only(engine, "postgres")
    write_migration(
        "001_index_n.sql",
        "-- migrate:up transaction:false\n"
        "CREATE INDEX CONCURRENTLY a_n ON a (n);\n"
        "-- migrate:down transaction:false\n"
        "DROP INDEX CONCURRENTLY a_n;\n",
    )
    runner, _ = runner_on(table_a, migrations_dir)

    assert runner.migrate() == ["001_index_n"]
    assert sorted(index.name for index in table_a.get_indexes("a")) == ["a_n", "a_pkey"]
    assert runner.rollback() == ["001_index_n"]
    assert [index.name for index in table_a.get_indexes("a")] == ["a_pkey"]


def test_a_python_migration_with_atomic_false_runs_outside_a_transaction(
    engine, table_a, write_migration, migrations_dir
):
    only(engine, "postgres")
    write_migration(
        "001_index_n.py",
        "atomic = False\n\n\n"
        "def up(migrator, db):\n"
        "    db.execute_sql('CREATE INDEX CONCURRENTLY a_n ON a (n)')\n",
    )
    runner, _ = runner_on(table_a, migrations_dir)

    runner.migrate()

    assert runner.status()[0].state == APPLIED
    assert "a_n" in [index.name for index in table_a.get_indexes("a")]


def test_a_concurrent_index_in_a_transaction_is_refused_and_rolled_back(
    engine, table_a, write_migration, migrations_dir
):
    only(engine, "postgres")
    write_migration("001_index_n.sql", "CREATE INDEX CONCURRENTLY a_n ON a (n);\n")
    runner, _ = runner_on(table_a, migrations_dir)

    with pytest.raises(
        MigrationFailed, match=r"cannot run inside a transaction block.*rolled back"
    ):
        runner.migrate()
    assert runner.history.applied() == {}


def test_a_step_outside_a_transaction_that_fails_part_way_is_recorded_as_failed(
    engine_db, write_migration, migrations_dir
):
    write_migration(
        "001_half.sql",
        "-- migrate:up transaction:false\n"
        "CREATE TABLE half (id INTEGER PRIMARY KEY);\n"
        "INSERT INTO nowhere VALUES (1);\n"
        "-- migrate:down\n"
        "DROP TABLE half;\n",
    )
    runner, _ = runner_on(engine_db, migrations_dir)

    with pytest.raises(
        MigrationFailed, match=r"line 3: .*it ran outside a transaction.*db\.repair"
    ):
        runner.migrate()

    assert "half" in engine_db.get_tables()  # its first statement committed as it ran
    assert runner.status()[0].state == FAILED
    assert runner.rollback() == ["001_half"]  # its down step cleans up
    assert "half" not in engine_db.get_tables()
    assert runner.history.applied() == {}


def test_a_marker_option_that_is_not_known_is_refused_naming_the_file_and_line(
    engine_db, write_migration, migrations_dir
):
    write_migration("001_x.sql", "-- note\n-- migrate:up transactions:off\nSELECT 1;\n")
    runner, _ = runner_on(engine_db, migrations_dir)

    with pytest.raises(SourceFileError, match=r"001_x\.sql, line 2: unknown marker option"):
        runner.migrate()


def test_a_timeout_that_is_not_a_duration_is_refused_naming_the_file(
    engine_db, write_migration, migrations_dir
):
    write_migration("001_x.py", "lock_timeout = 'soon'\n\n\ndef up(migrator, db):\n    pass\n")
    runner, _ = runner_on(engine_db, migrations_dir)

    with pytest.raises(SourceFileError, match=r"001_x\.py: lock_timeout 'soon' is not a duration"):
        runner.migrate()


# -- a failed concurrent build ------------------------------------------------------------


def test_an_index_a_failed_concurrent_build_left_invalid_is_reported_by_status_and_check(
    engine, table_a, engine_url, write_migration, migrations_dir
):
    only(engine, "postgres")
    table_a.execute_sql("INSERT INTO a (id, n) VALUES (1, 7), (2, 7)")
    write_migration(
        "001_unique_n.sql",
        "-- migrate:up transaction:false\nCREATE UNIQUE INDEX CONCURRENTLY a_n ON a (n);\n",
    )

    failed = run_invoke("db.migrate", url=engine_url, migrations_dir=migrations_dir)
    one_error_line(failed, 1, "001_unique_n.sql", "could not create unique index", "db.repair")

    status = run_invoke("db.status", "--check", url=engine_url, migrations_dir=migrations_dir)
    assert status.returncode == 3, status.stdout + status.stderr
    assert "INVALID INDEX a_n on a" in status.stdout
    assert "DROP INDEX CONCURRENTLY a_n" in status.stdout
    check = run_invoke("db.check", url=engine_url, migrations_dir=migrations_dir)
    assert check.returncode == 3
    assert "INVALID INDEX a_n on a" in check.stdout


# -- lock timeouts ------------------------------------------------------------------------

ADD_COLUMN = "-- migrate:up lock_timeout:1s\nALTER TABLE a ADD COLUMN extra INTEGER;\n"


def test_a_migration_that_cannot_get_its_lock_gives_up_retries_and_changes_nothing(
    engine, table_a, blocker, write_migration, migrations_dir
):
    write_migration("001_add_extra.sql", ADD_COLUMN)
    runner, events = runner_on(table_a, migrations_dir, retries=1)
    blocker(30)

    with pytest.raises(MigrationFailed) as failure:
        runner.migrate()

    message = str(failure.value)
    assert "001_add_extra.sql failed" in message
    assert "no lock within lock_timeout 1s, 2 tries" in message
    assert "nothing of it ran" in message or "rolled back" in message
    assert ("retrying", "001_add_extra") in events
    assert columns(table_a, "a") == ["id", "n"]
    assert runner.history.applied() == {}


def test_a_lock_timeout_names_the_postgres_session_that_blocked_it(
    engine, table_a, blocker, write_migration, migrations_dir
):
    only(engine, "postgres")
    write_migration("001_add_extra.sql", ADD_COLUMN)
    runner, _ = runner_on(table_a, migrations_dir)
    held = blocker(30)
    (pid,) = table_a.execute_sql(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'cg-blocker'"
    ).fetchone()

    with pytest.raises(MigrationFailed, match=rf"blocked by pid {pid} \(application 'cg-blocker'"):
        runner.migrate()
    assert held.poll() is None  # the blocker was waited for, never killed


def test_a_lock_timeout_names_the_mariadb_connection_with_an_open_transaction(
    engine, table_a, blocker, write_migration, migrations_dir
):
    only(engine, "mysql")
    write_migration("001_add_extra.sql", ADD_COLUMN)
    runner, _ = runner_on(table_a, migrations_dir)
    blocker(30)

    with pytest.raises(MigrationFailed, match=r"blocked by connection \d+ \(root@"):
        runner.migrate()


def test_a_lock_released_while_the_migration_backs_off_lets_the_retry_succeed(
    table_a, blocker, write_migration, migrations_dir
):
    write_migration("001_add_extra.sql", ADD_COLUMN)
    runner, events = runner_on(table_a, migrations_dir, retries=3)
    blocker(1.5)  # gone before the second try (1 s wait, then 1 s back-off)

    assert runner.migrate() == ["001_add_extra"]
    assert ("retrying", "001_add_extra") in events
    assert "extra" in columns(table_a, "a")


def test_db_migrate_prints_each_retry_and_the_blocked_failure_as_one_line(
    engine, table_a, engine_url, blocker, write_migration, migrations_dir
):
    write_migration("001_add_extra.sql", ADD_COLUMN)
    blocker(30)

    result = run_invoke(
        "db.migrate",
        url=engine_url,
        migrations_dir=migrations_dir,
        env={"INVOKE_DB_LOCK_RETRIES": "1"},
    )

    one_error_line(result, 1, "001_add_extra.sql", "lock_timeout 1s", "2 tries")
    assert "001_add_extra waited too long for a lock; trying again in 1 s" in result.stdout


def test_a_concurrent_build_cut_short_by_its_lock_timeout_is_not_retried_over_its_invalid_index(
    engine, table_a, blocker, write_migration, migrations_dir
):
    only(engine, "postgres")
    write_migration(
        "001_index_n.sql",
        "-- migrate:up transaction:false lock_timeout:1s\n"
        "CREATE INDEX CONCURRENTLY a_n ON a (n);\n",
    )
    runner, events = runner_on(table_a, migrations_dir, retries=2)
    blocker(30, "write")  # a writer's open transaction: the build waits for it to end

    with pytest.raises(
        MigrationFailed, match=r"1 try; .*give its marker line a longer lock_timeout"
    ):
        runner.migrate()

    assert ("retrying", "001_index_n") not in events  # a retry would trip over a_n
    assert runner.status()[0].state == FAILED
    assert runner.engine.invalid_indexes(table_a) == [("a_n", "a")]


# -- statement timeouts ---------------------------------------------------------------------

SLEEPS = {"postgres": "SELECT pg_sleep(5)", "mysql": "SELECT SLEEP(5)"}


def test_a_statement_running_past_its_statement_timeout_is_stopped(
    engine, engine_db, write_migration, migrations_dir
):
    only(engine, "postgres", "mysql")
    write_migration("001_slow.sql", f"-- migrate:up statement_timeout:1s\n{SLEEPS[engine]};\n")
    runner, _ = runner_on(engine_db, migrations_dir)

    with pytest.raises(MigrationFailed, match="ran past statement_timeout 1s"):
        runner.migrate()


def test_the_session_timeouts_are_put_back_after_each_step(
    engine, table_a, write_migration, migrations_dir
):
    from db.engines import engine_for
    from db.timeouts import Limits, limited

    def current():
        queries = {
            "postgres": "SELECT current_setting('lock_timeout')",
            "mysql": "SELECT @@SESSION.lock_wait_timeout",
            "sqlite": "PRAGMA busy_timeout",
        }
        return table_a.execute_sql(queries[engine]).fetchone()[0]

    before = current()
    with limited(engine_for(table_a), table_a, Limits(lock=7, statement=0, retries=0)):
        assert current() != before
    assert current() == before


# -- settings -----------------------------------------------------------------------------


def test_a_lock_timeout_setting_that_is_not_a_duration_is_one_line_and_exit_2(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"

    result = run_invoke("db.migrate", url=url, env={"INVOKE_DB_LOCK_TIMEOUT": "a while"})

    one_error_line(result, 2, "db.lock_timeout", "a while")
    assert not (tmp_path / "x.db").exists()


def test_the_configured_lock_timeout_applies_to_steps_that_set_none(
    engine, table_a, engine_url, blocker, write_migration, migrations_dir
):
    write_migration("001_add_extra.sql", "ALTER TABLE a ADD COLUMN extra INTEGER;\n")
    blocker(30)

    result = run_invoke(
        "db.migrate",
        url=engine_url,
        migrations_dir=migrations_dir,
        env={"INVOKE_DB_LOCK_TIMEOUT": "2s", "INVOKE_DB_LOCK_RETRIES": "0"},
    )

    one_error_line(result, 1, "lock_timeout 2s", "1 try")
    ok(run_invoke("db.status", url=engine_url, migrations_dir=migrations_dir))


def test_a_lock_retries_setting_that_is_not_a_whole_number_is_one_line_and_exit_2(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"

    result = run_invoke("db.migrate", url=url, env={"INVOKE_DB_LOCK_RETRIES": "abc"})

    one_error_line(result, 2, "db.lock_retries", "'abc'")


def test_a_lock_timeout_that_is_off_waits_for_the_lock_however_long_it_takes(
    table_a, blocker, write_migration, migrations_dir
):
    write_migration("001_add_extra.sql", "ALTER TABLE a ADD COLUMN extra INTEGER;\n")
    runner, events = runner_on(table_a, migrations_dir, lock="off")
    blocker(2)

    assert runner.migrate() == ["001_add_extra"]
    assert ("retrying", "001_add_extra") not in events  # waited, never gave up
