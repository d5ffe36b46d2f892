"""db.transfer: the gallery copied to another database, on any engine, and proved equal.

Tests between two engines take both ``engine`` (the source's) and ``target_engine``, so
they run once per direction: SQLite, PostgreSQL and MySQL to each of the three. Tests
with only ``target_engine`` copy an SQLite gallery. Refusals and failures go through the
real ``invoke`` command line, as a user meets them: one ``error:`` line, an exit code, and
the source as it was.
"""

import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest

from db import commands
from db.config import Settings, mask_url
from db.engines import database_exists, open_database
from db.errors import ConfigError, TransferFailed
from db.history import TransferMarker
from db.models import ALL_MODELS, Analytics, Image, Tag, User
from db.populate import GalleryPlan, populate
from db.runner import Runner
from db.seeders import Seeder
from db.transfer import COPIED
from tests import servers
from tests.conftest import (
    MIGRATIONS_DIR,
    PROJECT_ROOT,
    ctrl_c_reaches_python,
    one_error_line,
    run_invoke,
    sqlite_url,
)
from tests.factories import models_on
from tests.snapshots import checksum, content

PLAN = GalleryPlan(users=30, images=300, seed=5)
# Large enough that a copy in batches of 20 rows takes a while to interrupt.
LARGER_PLAN = GalleryPlan(users=100, images=2_000, seed=6)
SEEDED_IMAGE = "img-misty-fjord-sunrise"  # an image of the sample gallery (seeders/)
# Each trigger-kept counter, and the count it must equal.
COUNTERS = {
    "tags.count": (
        "SELECT id, count FROM tags",
        "SELECT tag_id, COUNT(*) FROM image_tags GROUP BY tag_id",
    ),
    "albums.image_count": (
        "SELECT id, image_count FROM albums",
        "SELECT album_id, COUNT(*) FROM album_images GROUP BY album_id",
    ),
    "users.uploads": (
        "SELECT id, uploads FROM users",
        "SELECT uploader_id, COUNT(*) FROM images GROUP BY uploader_id",
    ),
}


# -- helpers -----------------------------------------------------------------------------


def gallery_at(url, plan=PLAN):
    """Migrate, seed and populate a new database at ``url``; return the URL."""
    database = open_database(url)
    Runner(database, MIGRATIONS_DIR).migrate()
    Seeder(database, PROJECT_ROOT / "seeders").seed()
    populate(database, plan)
    database.close()
    return url


def settings_for(url):
    return Settings(url=url, migrations_dir=MIGRATIONS_DIR, seeders_dir=PROJECT_ROOT / "seeders")


def transfer(source_url, target_url, **options):
    """Transfer as ``invoke db.transfer`` does, in this process."""
    return commands.transfer(settings_for(source_url), target_url, **options)


def cli_transfer(source_url, *args):
    """Run ``invoke db.transfer ARGS`` with ``source_url`` configured."""
    return run_invoke("db.transfer", *args, url=source_url)


def succeeded(result):
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    return result.stdout


def start_transfer(source_url, *args):
    """Start ``invoke db.transfer ARGS`` as a subprocess whose output can be read as it comes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env["DATABASE_URL"] = source_url
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT),
         "db.transfer", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=ctrl_c_reaches_python,
    )  # fmt: skip


def wait_until_copying(process):
    """Read the process's output until it reports its first rows copied."""
    for line in process.stdout:
        if line.startswith(f"{COPIED}:"):
            return
    pytest.fail(f"the transfer ended before copying anything: {process.stderr.read()}")


def incomplete_mark(url):
    """Return the target's incomplete-transfer mark, or None."""
    database = open_database(url, create=False)
    try:
        return TransferMarker(database).read()
    finally:
        database.close()


def counters_are_true(url):
    """Assert every trigger-kept counter of the database equals the rows it counts."""
    database = open_database(url, create=False)
    try:
        for name, (counter, truth) in COUNTERS.items():
            counted = {key: value for key, value in database.execute_sql(counter) if value}
            assert counted == dict(database.execute_sql(truth).fetchall()), name
    finally:
        database.close()


def sqlite_execute(url, sql, params=()):
    """Change an SQLite database behind the toolkit's back."""
    with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
        connection.execute(sql, params)
        connection.commit()


def row_counts(url):
    """Return {table: rows} of the tables a transfer copies."""
    return {table: len(rows) for table, rows in content(url).items() if table != "migrations"}


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def source(engine_url):
    """A populated, seeded gallery on the source engine under test."""
    return gallery_at(engine_url)


@pytest.fixture
def sqlite_source(tmp_path):
    """A populated, seeded SQLite gallery."""
    return gallery_at(sqlite_url(tmp_path / "source.db"))


@pytest.fixture
def larger_sqlite_source(tmp_path):
    """An SQLite gallery large enough to interrupt while it is being copied."""
    return gallery_at(sqlite_url(tmp_path / "source.db"), LARGER_PLAN)


@pytest.fixture
def broken_target(sqlite_source, target_url):
    """A target left marked incomplete by a transfer that failed: its source's tags.count
    was wrong, and the target's triggers counted the truth."""
    sqlite_execute(sqlite_source, "UPDATE tags SET count = count + 5 WHERE id = 1")
    with pytest.raises(TransferFailed):
        transfer(sqlite_source, target_url)
    return target_url


# -- what arrives ------------------------------------------------------------------------


def test_a_populated_gallery_arrives_identical_in_every_direction(source, target_url):
    result = transfer(source, target_url)

    assert checksum(target_url) == checksum(source)
    assert result.rows == row_counts(source)
    counters_are_true(target_url)
    assert incomplete_mark(target_url) is None


def found_by_search(url, text):
    """Return the ids of the public images a search for ``text`` finds in ``url``'s gallery."""
    with models_on(url):
        return sorted(image.id for image in Image.search(text, None))


def test_a_search_on_the_target_finds_what_it_finds_on_the_source(source, target_url):
    with models_on(source):
        words = [image.title.split()[0] for image in Image.select().order_by(Image.id).limit(3)]

    transfer(source, target_url)

    with models_on(target_url):  # a search row per image, written by the target's triggers
        assert Image.select().count() == len(searched_rows(target_url))
    for text in ("misty fjord", *words):
        assert found_by_search(target_url, text) == found_by_search(source, text) != [], text


def searched_rows(url):
    database = open_database(url, create=False)
    try:
        return database.execute_sql("SELECT image_id FROM image_search").fetchall()
    finally:
        database.close()


def test_the_counters_are_counted_by_the_target_and_a_wrong_one_is_caught(
    sqlite_source, target_url
):
    sqlite_execute(sqlite_source, "UPDATE tags SET count = count + 5 WHERE id = 1")

    with pytest.raises(TransferFailed, match=r"table tags holds other values.*counted again"):
        transfer(sqlite_source, target_url)

    counters_are_true(target_url)
    assert incomplete_mark(target_url).source == sqlite_source


def test_new_rows_get_fresh_ids_after_a_transfer(sqlite_source, target_url):
    transfer(sqlite_source, target_url)
    database = open_database(target_url, create=False)
    with database.bind_ctx(ALL_MODELS):
        largest_tag = Tag.select(Tag.id).order_by(Tag.id.desc()).first().id
        largest_metric = Analytics.select(Analytics.id).order_by(Analytics.id.desc()).first().id

        tag = Tag.create(name="after-the-move")
        metric = Analytics.create(metric="moved", value=1.0)
        user = User.create(email="new@example.com", name="New Comer")
        image = Image.create(
            uploader=user, title="First", url="https://cdn.example.com/first.png",
            width=10, height=10, size=100, format="PNG",
        )  # fmt: skip
        assert User.get_by_id(user.id).uploads == 1
    database.close()

    assert tag.id == largest_tag + 1
    assert metric.id == largest_metric + 1
    assert image.id


def test_rows_written_to_the_source_during_a_transfer_are_not_half_copied(source, tmp_path):
    before = checksum(source)
    target_url = sqlite_url(tmp_path / "target.db")
    writes = []

    def write_to_the_source_once(stage, done, total):
        if not writes:
            writer = open_database(source, create=False)
            writer.execute_sql("INSERT INTO tags (name) VALUES ('written-meanwhile')")
            (image_id,) = writer.execute_sql("SELECT MIN(id) FROM images").fetchone()
            (tag_id,) = writer.execute_sql(
                "SELECT id FROM tags WHERE name = 'written-meanwhile'"
            ).fetchone()
            link = f"INSERT INTO image_tags (image_id, tag_id) VALUES ({writer.param}, {tag_id})"
            writer.execute_sql(link, (image_id,))
            writer.close()
            writes.append(stage)

    transfer(source, target_url, batch=50, on_progress=write_to_the_source_once)

    assert writes == [COPIED]
    assert checksum(target_url) == before
    assert checksum(source) != before


def test_date_times_keep_their_fraction_of_a_second_except_on_mysql(
    sqlite_source, target_url, target_engine
):
    sqlite_execute(
        sqlite_source,
        "UPDATE images SET uploaded_at = '2024-05-01 10:00:00.654321' WHERE id = ?",
        (SEEDED_IMAGE,),
    )

    transfer(sqlite_source, target_url)

    database = open_database(target_url, create=False)
    (uploaded_at,) = database.execute_sql(
        f"SELECT uploaded_at FROM images WHERE id = '{SEEDED_IMAGE}'"
    ).fetchone()
    database.close()
    kept = "2024-05-01 10:00:00" if target_engine == "mysql" else "2024-05-01 10:00:00.654321"
    assert str(uploaded_at) == kept


def test_text_keys_compare_equal_under_a_target_collation_that_orders_them_otherwise(
    sqlite_source,
):
    servers.require_server("postgres")
    target_url = servers.new_database_url("postgres")
    maintenance = open_database(f"{servers.SERVERS['postgres']}/postgres", create=False)
    maintenance.connection().autocommit = True
    try:
        maintenance.execute_sql(
            f'CREATE DATABASE "{target_url.rsplit("/", 1)[1]}" TEMPLATE template0 '
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    except Exception as exc:  # an older server, or one built without ICU
        pytest.skip(f"no ICU collation on this PostgreSQL server: {exc}")
    finally:
        maintenance.close()
    # Binary order puts "Zoe" before "adam"; en-US puts it after.
    for user_id in ("Zoe-1", "adam-1", "a_b", "a-b", "ab"):
        sqlite_execute(
            sqlite_source,
            "INSERT INTO users (id, email, name) VALUES (?, ?, ?)",
            (user_id, f"{user_id}@example.com", user_id),
        )
    try:
        transfer(sqlite_source, target_url)

        assert checksum(target_url) == checksum(sqlite_source)
    finally:
        servers.drop_database(target_url)


# -- refusals: nothing is written --------------------------------------------------------


def test_a_target_that_holds_data_is_refused_and_left_as_it_was_until_force(
    sqlite_source, target_url
):
    gallery_at(target_url, GalleryPlan(users=3, images=20, seed=9))
    before = checksum(target_url)

    refused = cli_transfer(sqlite_source, "--to", target_url)

    one_error_line(refused, 2, f"the target {mask_url(target_url)} is not empty", "--force")
    assert checksum(target_url) == before
    succeeded(cli_transfer(sqlite_source, "--to", target_url, "--force"))
    assert checksum(target_url) == checksum(sqlite_source)


def aliases(engine, url, tmp_path):
    """Return other URLs that reach the same database as ``url``."""
    if engine == "sqlite":
        path = url.removeprefix("sqlite:///")
        link = tmp_path / "link.db"
        link.symlink_to(path)
        return [url, sqlite_url(link), url.replace(str(tmp_path), f"{tmp_path}/./")]
    return [url, url.replace("127.0.0.1", "localhost")]


def test_the_source_itself_is_refused_as_the_target_under_any_url(source, engine, tmp_path):
    before = checksum(source)

    for alias in aliases(engine, source, tmp_path):
        with pytest.raises(ConfigError, match="is the database being transferred"):
            transfer(source, alias, force=True)

    one_error_line(cli_transfer(source, "--to", source, "--force"), 2, "is the database being")
    assert checksum(source) == before


@pytest.mark.parametrize(
    ("to", "exit_code", "named"),
    [
        ("foo://x", 2, ["'foo'", "foo://x"]),
        ("sqlite:///{tmp}/no/such/folder/target.db", 2, ["{tmp}/no/such/folder", "does not exist"]),
        ("postgresql://bob:s3cret@127.0.0.1:1/x", 1, ["postgresql://bob:***@127.0.0.1:1/x"]),
    ],
    ids=["unsupported-scheme", "missing-sqlite-folder", "unreachable-server"],
)
def test_a_bad_target_url_is_one_error_line_and_the_source_is_untouched(
    sqlite_source, tmp_path, to, exit_code, named
):
    before = checksum(sqlite_source)
    to = to.format(tmp=tmp_path)

    result = cli_transfer(sqlite_source, "--to", to)

    one_error_line(result, exit_code, *(name.format(tmp=tmp_path) for name in named))
    assert "s3cret" not in result.stdout + result.stderr
    assert checksum(sqlite_source) == before
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ("0", "--batch must be a whole number >= 1, not 0"),
        ("-5", "--batch must be a whole number >= 1, not -5"),
        ("abc", "--batch must be a whole number, not 'abc'"),
    ],
)
def test_a_bad_batch_size_is_refused_naming_it(sqlite_source, tmp_path, batch, message):
    target = tmp_path / "target.db"

    result = cli_transfer(sqlite_source, "--to", sqlite_url(target), "--batch", batch)

    one_error_line(result, 2, message)
    assert not target.exists()


def test_a_source_not_fully_migrated_is_refused(tmp_path):
    source = sqlite_url(tmp_path / "source.db")
    database = open_database(source)
    Runner(database, MIGRATIONS_DIR).migrate(to="002")
    database.close()
    target = tmp_path / "target.db"

    result = cli_transfer(source, "--to", sqlite_url(target))

    one_error_line(result, 1, "003_add_triggers (pending)", "run invoke db.migrate first")
    assert not target.exists()


def test_a_source_that_does_not_exist_is_refused(tmp_path):
    source = sqlite_url(tmp_path / "missing.db")

    result = cli_transfer(source, "--to", sqlite_url(tmp_path / "target.db"))

    one_error_line(result, 2, source, "nothing to transfer")
    assert not database_exists(source)


# -- a failed transfer is never taken for a good copy ------------------------------------


def test_a_row_the_target_refuses_stops_the_transfer_and_the_target_stays_marked(
    sqlite_source, target_url, target_engine
):
    if target_engine == "sqlite":
        pytest.skip("SQLite keeps a text of any length, so it refuses nothing here")
    # SQLite does not enforce VARCHAR(200); PostgreSQL and MySQL refuse the row.
    sqlite_execute(
        sqlite_source, "UPDATE images SET title = ? WHERE id = ?", ("x" * 300, SEEDED_IMAGE)
    )
    target = mask_url(target_url)

    failed = cli_transfer(sqlite_source, "--to", target_url)

    one_error_line(failed, 1, target, "copying table images", "marked incomplete", "--force")
    assert incomplete_mark(target_url).source == sqlite_source
    for task in ("db.migrate", "db.seed", "db.rollback", "db.populate"):
        one_error_line(
            run_invoke(task, url=target_url), 1,
            f"{target} is an incomplete transfer from {sqlite_source}",
            "invoke db.transfer --force", "invoke db.reset",
        )  # fmt: skip
    sqlite_execute(sqlite_source, "UPDATE images SET title = 'Fjord' WHERE id = ?", (SEEDED_IMAGE,))
    succeeded(cli_transfer(sqlite_source, "--to", target_url, "--force"))
    assert checksum(target_url) == checksum(sqlite_source)
    succeeded(run_invoke("db.status", "--check", url=target_url))


def test_status_shows_an_incomplete_transfer_and_its_check_fails(broken_target, sqlite_source):
    shown = run_invoke("db.status", url=broken_target)
    checked = run_invoke("db.status", "--check", "--json", url=broken_target)

    assert f"INCOMPLETE TRANSFER from {sqlite_source}" in succeeded(shown)
    assert checked.returncode == 3
    assert '"source": "' + sqlite_source in checked.stdout


@pytest.mark.parametrize("task", ["db.stats", "db.backup", "db.check"])
def test_the_inspecting_tasks_refuse_an_incomplete_transfer_too(broken_target, sqlite_source, task):
    one_error_line(
        run_invoke(task, url=broken_target), 1,
        f"{mask_url(broken_target)} is an incomplete transfer from {sqlite_source}",
    )  # fmt: skip


@pytest.mark.parametrize("options", [[], ["--data-only"]], ids=["drop", "data-only"])
def test_reset_clears_an_incomplete_transfer(broken_target, options):
    succeeded(run_invoke("db.reset", "--yes", *options, url=broken_target))

    assert incomplete_mark(broken_target) is None
    succeeded(run_invoke("db.setup", url=broken_target))
    succeeded(run_invoke("db.status", "--check", url=broken_target))


@pytest.mark.slow
def test_a_transfer_killed_while_copying_leaves_the_target_marked_and_force_finishes_it(
    larger_sqlite_source, target_url
):
    process = start_transfer(larger_sqlite_source, "--to", target_url, "--batch", "20")
    wait_until_copying(process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)

    assert process.returncode == -signal.SIGKILL
    assert incomplete_mark(target_url).source == larger_sqlite_source
    one_error_line(run_invoke("db.migrate", url=target_url), 1, "incomplete transfer")
    succeeded(cli_transfer(larger_sqlite_source, "--to", target_url, "--force"))
    assert checksum(target_url) == checksum(larger_sqlite_source)
    assert incomplete_mark(target_url) is None


@pytest.mark.slow
def test_ctrl_c_during_a_transfer_says_the_target_is_left_marked(larger_sqlite_source, tmp_path):
    target_url = sqlite_url(tmp_path / "target.db")
    process = start_transfer(larger_sqlite_source, "--to", target_url, "--batch", "20")
    wait_until_copying(process)
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=60)

    assert process.returncode == 130, errors
    assert errors.startswith("error: interrupted while copying table ")
    assert errors.rstrip().endswith(
        f"{target_url} is left marked incomplete "
        "(run invoke db.transfer --force again, or invoke db.reset on it)"
    )
    assert incomplete_mark(target_url) is not None


# -- what it says ------------------------------------------------------------------------


def test_it_reports_progress_then_the_rows_of_each_table_and_that_checksums_match(
    sqlite_source, target_url
):
    output = succeeded(cli_transfer(sqlite_source, "--to", target_url))

    lines = output.splitlines()
    assert any(line.startswith("rows copied: ") and line.endswith("(100%)") for line in lines)
    assert any(line.startswith("rows checked: ") and line.endswith("(100%)") for line in lines)
    counts = row_counts(sqlite_source)
    for table, rows in counts.items():
        assert f"  {table:<20} {rows:>12,}" in lines
    total = sum(counts.values())
    assert lines[-1].startswith(f"transferred {total:,} rows to {mask_url(target_url)} in ")
    assert lines[-1].endswith(" rows/s); checksums match")


def test_a_password_in_the_target_url_is_never_shown(sqlite_source):
    servers.require_server("postgres")
    plain = servers.new_database_url("postgres")
    with_password = plain.replace("postgres@", "postgres:s3cret@")  # trust: any password
    try:
        output = succeeded(cli_transfer(sqlite_source, "--to", with_password))
        refused = cli_transfer(sqlite_source, "--to", with_password)
    finally:
        servers.drop_database(plain)

    assert "postgres:***@" in output
    one_error_line(refused, 2, mask_url(with_password), "--force")
    assert "s3cret" not in output + refused.stdout + refused.stderr


def test_a_transfer_killed_before_its_mark_has_a_row_still_counts_as_incomplete(sqlite_source):
    # The mark is the table itself: a process killed between creating it and writing its
    # row leaves it empty, and the target must still be refused.
    database = open_database(sqlite_source, create=False)
    try:
        TransferMarker(database).ensure_table()  # and no row
    finally:
        database.close()
    target = mask_url(sqlite_source)

    one_error_line(
        run_invoke("db.migrate", url=sqlite_source), 1,
        f"{target} is an incomplete transfer from an unknown source",
    )  # fmt: skip
    succeeded(run_invoke("db.reset", "--yes", "--data-only", url=sqlite_source))
    succeeded(run_invoke("db.status", "--check", url=sqlite_source))
