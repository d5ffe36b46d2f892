"""db.optimize: the engine's own maintenance, under the migration lock, data untouched.

SQLite runs PRAGMA optimize, ANALYZE and VACUUM and gives back the room a big delete
left; PostgreSQL runs VACUUM ANALYZE; MySQL OPTIMIZE TABLE and ANALYZE TABLE on each
table, saying plainly what InnoDB does instead of optimizing. Each engine test runs on
every engine of the ``engine`` fixtures (conftest.py), ``invoke`` as a subprocess.
"""

from pathlib import Path

import pytest

from db.models import Image
from tests.conftest import one_error_line, run_invoke
from tests.factories import make_image, make_user
from tests.snapshots import content

STEPS = {
    "sqlite": "SQLite: ran PRAGMA optimize, ANALYZE, VACUUM",
    "postgres": "PostgreSQL: ran VACUUM ANALYZE",
    "mysql": "MySQL: ran OPTIMIZE TABLE, ANALYZE TABLE",
}
INNODB_REBUILD = "Table does not support optimize, doing recreate + analyze instead"


def gallery_data(url):
    """Return the rows of every table but SQLite's own (ANALYZE writes sqlite_stat1)."""
    return {table: rows for table, rows in content(url).items() if not table.startswith("sqlite_")}


def a_small_gallery():
    """Create a user and a few images (rows in more than one table, triggers fired)."""
    ada = make_user("Ada")
    for number in range(5):
        make_image(ada, title=f"Image {number}", caption="a caption " * 20)


def test_optimize_runs_the_engines_maintenance_and_leaves_the_data_unchanged(
    engine, engine_migrated_db, engine_url
):
    a_small_gallery()
    before = gallery_data(engine_url)
    engine_migrated_db.close()  # an idle session of ours must not hold a table lock

    result = run_invoke("db.optimize", url=engine_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith(STEPS[engine]), result.stdout
    assert gallery_data(engine_url) == before


def test_on_mysql_innodbs_answer_to_optimize_is_reported_plainly(
    engine, engine_migrated_db, engine_url
):
    if engine != "mysql":
        pytest.skip("only InnoDB rebuilds a table instead of optimizing it")
    engine_migrated_db.close()

    result = run_invoke("db.optimize", url=engine_url)

    assert result.returncode == 0, result.stderr
    assert f"images               optimize: note: {INNODB_REBUILD}" in result.stdout


def test_on_sqlite_the_room_a_big_delete_left_is_given_back(migrated_db, db_url, db_path):
    ada = make_user("Ada")
    for number in range(200):
        make_image(ada, title=f"Image {number}", caption="x" * 8000)
    Image.delete().where(Image.title != "Image 0").execute()
    migrated_db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    size_before, data_before = Path(db_path).stat().st_size, gallery_data(db_url)

    result = run_invoke("db.optimize", url=db_url)

    assert result.returncode == 0, result.stderr
    assert Path(db_path).stat().st_size < size_before / 4
    assert gallery_data(db_url) == data_before
    assert "reclaimed); free pages " in result.stdout
    assert result.stdout.rstrip().endswith(" -> 0")  # no free page left


def test_a_database_that_does_not_exist_yet_is_refused(engine, engine_url):
    result = run_invoke("db.optimize", url=engine_url)

    one_error_line(result, 2, "does not exist yet")


def test_after_optimize_the_engines_own_tables_are_not_taken_for_the_apps(
    engine, engine_url, project_migrations
):
    # ANALYZE makes sqlite_stat1 (PostgreSQL and MySQL keep their statistics elsewhere):
    # it is the engine's, so no task may report, draw or drop it as the app's.
    def run(*args):
        return run_invoke(*args, url=engine_url, migrations_dir=project_migrations)

    migrations_before = sorted(p.name for p in project_migrations.iterdir())
    assert run("db.setup").returncode == 0
    assert run("db.optimize").returncode == 0

    checked = run("db.check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "sqlite_" not in run("db.diagram").stdout
    assert "sqlite_stat" not in run("db.schema").stdout
    generated = run("db.new-migration", "catch up", "--auto")
    assert generated.returncode == 0, generated.stderr
    assert "nothing to generate" in generated.stdout
    assert sorted(p.name for p in project_migrations.iterdir()) == migrations_before
