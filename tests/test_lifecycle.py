"""The whole lifecycle from the command line: setup, seed, status, reset, populate.

Every test runs ``invoke`` as a subprocess on each engine (``engine_url``), except the
confirmation typed on a terminal, which is the same code on every engine and runs on
SQLite only.
"""

import json
import os
import pty
import signal
import subprocess
import sys

import pytest

from db.config import database_name
from db.engines import database_exists
from db.models import Image
from tests.conftest import (
    MIGRATIONS_DIR,
    PROJECT_ROOT,
    ctrl_c_reaches_python,
    ok,
    one_error_line,
    run_invoke,
)
from tests.factories import models_on
from tests.snapshots import checksum, content, schema

SAMPLE_COUNTS = {"users": 5, "tags": 20, "images": 8, "albums": 6, "analytics": 15}
MIGRATIONS = len(list(MIGRATIONS_DIR.glob("[0-9]*")))
SEEDED_IMAGE = "img-misty-fjord-sunrise"  # an image of the sample gallery (seeders/)


def row_counts(url):
    return {table: len(rows) for table, rows in content(url).items()}


@pytest.fixture
def cli(engine_url):
    """Run ``invoke ARGS`` on the database of the engine under test."""

    def run(*args, **kwargs):
        return run_invoke(*args, url=engine_url, **kwargs)

    return run


@pytest.fixture
def set_up(cli, engine_url):
    """The URL of a database after `invoke db.setup`."""
    ok(cli("db.setup"))
    return engine_url


def test_setup_on_a_fresh_checkout_gives_the_full_sample_gallery(cli, engine_url):
    result = ok(cli("db.setup"))

    assert f"set up: applied {MIGRATIONS} migration(s), ran 6 seeder(s)" in result.stdout
    counts = row_counts(engine_url)
    assert {table: counts[table] for table in SAMPLE_COUNTS} == SAMPLE_COUNTS
    assert counts["image_tags"] > 0 and counts["album_images"] > 0


def test_a_second_setup_changes_nothing_and_says_so(cli, set_up):
    before = checksum(set_up)

    result = ok(cli("db.setup"))

    assert "already set up" in result.stdout
    assert checksum(set_up) == before


def test_status_lists_the_seeders_and_their_state(cli, set_up):
    report = json.loads(ok(cli("db.status", "--json")).stdout)

    assert [s["name"] for s in report["seeders"]] == [
        "001_users", "002_tags", "003_images", "004_image_tags", "005_albums", "006_analytics",
    ]  # fmt: skip
    assert {s["state"] for s in report["seeders"]} == {"applied"}
    assert "001_users" in ok(cli("db.status")).stdout


def test_seed_force_twice_leaves_identical_contents(cli, set_up):
    ok(cli("db.seed", "--force"))
    once = content(set_up)
    ok(cli("db.seed", "--force"))

    assert content(set_up) == once


def test_seeding_an_unmigrated_database_says_to_migrate_first(cli, engine_url):
    one_error_line(cli("db.seed"), 1, "run invoke db.migrate first")
    assert not database_exists(engine_url)


def test_reset_without_a_terminal_or_yes_refuses_and_changes_nothing(cli, set_up):
    before = checksum(set_up)

    for args in ((), ("--data-only",)):
        one_error_line(cli("db.reset", *args), 2, "--yes", database_name(set_up))

    assert checksum(set_up) == before


def test_reset_yes_then_setup_gives_the_same_data_again(cli, set_up):
    before = content(set_up)

    assert "dropped" in ok(cli("db.reset", "--yes")).stdout
    assert schema(set_up) == {}
    ok(cli("db.setup"))

    assert content(set_up) == before


def test_reset_data_only_keeps_schema_and_history_and_seed_restores_the_data(cli, set_up):
    before_schema, before = schema(set_up), content(set_up)

    ok(cli("db.reset", "--data-only", "--yes"))
    emptied = row_counts(set_up)
    assert emptied["migrations"] == MIGRATIONS
    assert all(count == 0 for table, count in emptied.items() if table != "migrations")
    assert search_rows(set_up) == 0 and found_by_search(set_up, "misty fjord") == []
    assert schema(set_up) == before_schema

    ok(cli("db.seed"))
    assert content(set_up) == before
    assert found_by_search(set_up, "misty fjord") == [SEEDED_IMAGE]


def search_rows(url):
    """Return the rows of the search table the triggers keep (content() leaves it out)."""
    with models_on(url) as database:
        return database.execute_sql("SELECT COUNT(*) FROM image_search").fetchone()[0]


def found_by_search(url, text):
    with models_on(url):
        return [image.id for image in Image.search(text, None)]


def run_on_a_terminal(args, answer, db_url):
    """Run invoke with a pseudo-terminal as stdin and type ``answer``; return (code, output)."""
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env["DATABASE_URL"] = db_url
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT), *args],
        stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    os.close(terminal)
    os.write(controller, answer.encode() + b"\n")
    output, _ = process.communicate(timeout=60)
    os.close(controller)
    return process.returncode, output.decode()


@pytest.mark.parametrize("how", [[], ["--data-only"]], ids=["drop", "data-only"])
def test_a_reset_sqlite_file_gives_back_the_room_its_rows_took(db_url, db_path, how):
    ok(run_invoke("db.setup", url=db_url))
    ok(run_invoke("db.populate", "--images", "3000", url=db_url))
    populated = db_path.stat().st_size

    ok(run_invoke("db.reset", "--yes", *how, url=db_url))

    assert db_path.stat().st_size < populated / 5, (populated, db_path.stat().st_size)


def test_reset_on_a_terminal_asks_for_the_database_name(db_url):
    ok(run_invoke("db.setup", url=db_url))
    before = checksum(db_url)

    code, output = run_on_a_terminal(["db.reset"], "yes", db_url)
    assert code == 1
    assert "Type the database name (clonegallery.db)" in output
    assert "cancelled" in output
    assert checksum(db_url) == before

    code, output = run_on_a_terminal(["db.reset"], "clonegallery.db", db_url)
    assert code == 0, output
    assert schema(db_url) == {}


def test_populate_fills_a_migrated_database_and_prints_plain_progress(cli, set_up):
    result = ok(cli("db.populate", "--images", "300", "--users", "20", "--seed", "5"))

    assert "images: 300/300 (100%)" in result.stdout
    assert "populated" in result.stdout
    assert row_counts(set_up)["images"] == 308


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("--images", "-5"), ("--images", "-5")),
        (("--images", "abc"), ("--images", "abc")),
        (("--users", "0"), ("--users",)),
        (("--seed", "x"), ("--seed",)),
    ],
)
def test_populate_refuses_bad_option_values(cli, set_up, args, names):
    before = checksum(set_up)

    one_error_line(cli("db.populate", *args), 2, *names)

    assert checksum(set_up) == before


def test_populate_on_an_unmigrated_database_says_to_migrate_first(cli):
    one_error_line(cli("db.populate", "--images", "10"), 1, "run invoke db.migrate first")


def test_rolling_back_every_migration_forgets_the_seeds_so_setup_seeds_again(cli, set_up):
    before = content(set_up)

    ok(cli("db.rollback", "--to", "0"))
    assert "seeders" not in content(set_up)
    ok(cli("db.setup"))

    assert content(set_up) == before


def test_an_interrupted_populate_leaves_the_database_as_it_was(set_up):
    before = checksum(set_up)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env["DATABASE_URL"] = set_up
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT),
         "db.populate", "--images", "1000000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=ctrl_c_reaches_python,
    )  # fmt: skip
    for line in process.stdout:  # wait until rows are being written
        if line.startswith("images: 10,000/"):
            break
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=60)

    assert process.returncode == 130, errors
    assert errors.strip() == "error: interrupted; the step in progress was rolled back"
    assert checksum(set_up) == before
