"""Backup and restore on every engine: db.backup, db.verify, db.backups, db.restore.

An SQLite backup is a copy of the database file (``.db``), a PostgreSQL backup a
``pg_dump`` custom-format archive (``.pgdump``), a MySQL backup a ``mariadb-dump``
script (``.sql``); ``--compress`` zstd-compresses the first and the last (``.zst``);
pg_dump's archive is compressed already. Each test runs on every engine of the
``engine`` fixtures (conftest.py) and skips, saying why, where its point does not
apply. Real files, real servers, the real client tools, ``invoke`` as a subprocess.
"""

import hashlib
import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import zstandard

from db import backups
from db.engines import engine_for_url, open_database
from db.engines.base import database_name_of, with_database
from db.errors import BackupError
from db.models import Album, AlbumImage, Analytics, Image, ImageTag, Tag, User
from db.populate import GalleryPlan, populate
from db.runner import Runner
from db.seeders import Seeder
from db.target import Target
from tests import servers
from tests.conftest import (
    LATEST_VERSION,
    MIGRATIONS_DIR,
    PROJECT_ROOT,
    ok,
    one_error_line,
    printed_path,
    run_invoke,
    sqlite_url,
)
from tests.factories import make_image, make_user, models_on
from tests.snapshots import checksum, row_counts

SUFFIX = {
    ("sqlite", False): ".db",
    ("sqlite", True): ".db.zst",
    ("postgres", False): ".pgdump",
    ("postgres", True): ".pgdump",  # pg_dump's custom format is compressed already
    ("mysql", False): ".sql",
    ("mysql", True): ".sql.zst",
}
# The database's name, then the UTC time: clonegallery-..., cgtest_1234_ab12-...
BACKUP_NAME = re.compile(r"[A-Za-z0-9_.-]+-\d{8}T\d{12}Z\.(db|pgdump|sql)(\.zst)?")
CLIENT_TOOLS = {"postgres": ("pg_dump", "pg_restore"), "mysql": ("mariadb-dump", "mariadb")}
CLIENT_PACKAGE = {"postgres": "postgresql-client", "mysql": "mariadb-client"}
# What a restore of a backup of another engine is tried with.
OTHER_ENGINE = {"sqlite": "postgres", "postgres": "sqlite", "mysql": "sqlite"}
KILLS = 10
COMPRESSION = pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def cli(engine_url, backups_dir):
    """Run ``invoke ARGS`` on the database of the engine under test, backups in backups_dir."""

    def run(*args, url=engine_url, env=None, **kwargs):
        environment = {"INVOKE_DB_BACKUPS": str(backups_dir), **(env or {})}
        return run_invoke(*args, url=url, env=environment, **kwargs)

    return run


@pytest.fixture
def engine_gallery(engine_migrated_db, engine_url):
    """The seeded sample gallery on the engine under test; returns its URL.

    Its connection is closed: a PostgreSQL restore waits until nobody uses the database.
    """
    Seeder(engine_migrated_db, PROJECT_ROOT / "seeders").seed()
    engine_migrated_db.close()
    return engine_url


@pytest.fixture
def server(engine):
    """The engine under test, when it is a server: PostgreSQL or MySQL."""
    if engine == "sqlite":
        pytest.skip("SQLite needs no client tool and no server: the point does not apply")
    return engine


@pytest.fixture
def postgres(engine):
    """The engine under test, when it is PostgreSQL."""
    if engine != "postgres":
        pytest.skip("PostgreSQL only")
    return engine


@pytest.fixture
def mysql(engine):
    """The engine under test, when it is MySQL."""
    if engine != "mysql":
        pytest.skip("MySQL only: its swap moves tables, and triggers cannot move with them")
    return engine


@pytest.fixture
def side_databases_dropped(engine_url):
    """Drop, after the test, what a killed or failed restore left beside the live database."""
    yield
    for name in side_databases(engine_url):
        servers.drop_database(with_database(engine_url, name))


def backup_of(url, folder, compress=False):
    """Back up the database of ``url`` into ``folder`` with the library; return the file."""
    database = open_database(url, create=False)
    try:
        return backups.create_backup(Target.around(database, url), folder, compress=compress).path
    finally:
        database.close()


def change_the_gallery(url):
    """Delete and insert rows, so that a restore has something to undo."""
    with models_on(url):
        Image.select().order_by(Image.id).first().delete_instance()
        Analytics.delete().execute()
        make_image(make_user("Zed"), "Written after the backup")
        Tag.create(name="after-the-backup")


def assert_the_counters_follow(url):
    """Upload an image, tag it, put it in an album: users.uploads, tags.count and
    albums.image_count follow (the triggers of migration 003)."""
    with models_on(url):
        user = User.select().order_by(User.id).first()
        tag = Tag.select().order_by(Tag.id).first()
        album = Album.select().order_by(Album.id).first()
        image = make_image(user, "Uploaded after the restore")
        ImageTag.create(image=image, tag=tag)
        AlbumImage.create(album=album, image=image, position=1_000)

        uploads = Image.select().where(Image.uploader == user).count()
        tagged = ImageTag.select().where(ImageTag.tag == tag).count()
        in_album = AlbumImage.select().where(AlbumImage.album == album).count()
        assert User.get_by_id(user.id).uploads == uploads
        assert Tag.get_by_id(tag.id).count == tagged
        assert Album.get_by_id(album.id).image_count == in_album


def side_databases(url):
    """Return the databases beside the live one (``<name>_restoring``, ``_retired``...)."""
    if url.startswith("sqlite:"):
        return []
    name = database_name_of(url)
    query = (
        "SELECT datname FROM pg_database"
        if url.startswith("postgres")
        else "SELECT schema_name FROM information_schema.schemata"
    )
    with engine_for_url(url).maintenance(url) as maintenance:
        names = [found for (found,) in maintenance.execute_sql(query).fetchall()]
    return sorted(found for found in names if found.startswith(f"{name}_"))


def rewrite_manifest(path, **changes):
    manifest_file = backups.manifest_path(path)
    manifest = json.loads(manifest_file.read_text())
    manifest.update(changes)
    manifest_file.write_text(json.dumps(manifest))


def claim_as_it_is(path):
    """Make the manifest claim the file as it is now: only reading its content can tell."""
    digest, size = backups.file_digest(path)
    rewrite_manifest(path, sha256=digest, size=size)


# --- db.backup, db.verify, db.backups -----------------------------------------------------


@COMPRESSION
def test_the_cli_writes_a_private_backup_and_manifest_that_verify_and_are_listed(
    cli, engine, engine_gallery, backups_dir, compress
):
    made = cli("db.backup", "--verify", *(["--compress"] if compress else []))

    path = printed_path(made, "backup")
    assert "verified" in made.stdout
    assert path.parent == backups_dir.resolve()
    assert BACKUP_NAME.fullmatch(path.name) and path.name.endswith(SUFFIX[engine, compress])
    assert path.name.startswith(backups.Owner.at(engine_gallery).file_prefix() + "-")
    for written in (path, backups.manifest_path(path)):
        assert stat.S_IMODE(written.stat().st_mode) == 0o600, written
    manifest = json.loads(backups.manifest_path(path).read_text())
    assert manifest["engine"] == engine
    assert manifest["schema_version"] == LATEST_VERSION
    assert manifest["row_counts"] == row_counts(engine_gallery)
    assert (manifest["sha256"], manifest["size"]) == backups.file_digest(path)
    assert manifest["compressed"] == ("zstd" if path.suffix == ".zst" else False)
    if manifest["compressed"]:
        plain = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
        assert (manifest["content_sha256"], manifest["content_size"]) == (
            hashlib.sha256(plain).hexdigest(),
            len(plain),
        )

    assert ok(cli("db.verify", str(path))).stdout.startswith(f"OK: {path}")
    (listed,) = [line for line in ok(cli("db.backups")).stdout.splitlines() if path.name in line]
    schema, verified = listed.split()[-3:-1]
    assert (schema, verified) == (LATEST_VERSION, "yes")


# --- db.restore: the round trip -----------------------------------------------------------


@COMPRESSION
def test_restore_brings_back_the_backed_up_gallery_and_its_counters_keep_counting(
    cli, engine_gallery, backups_dir, compress
):
    at_backup = checksum(engine_gallery)
    path = backup_of(engine_gallery, backups_dir, compress=compress)
    change_the_gallery(engine_gallery)
    assert checksum(engine_gallery) != at_backup

    restored = ok(cli("db.restore", str(path), "--yes"))

    assert f"restored {path} (schema {LATEST_VERSION}" in restored.stdout
    assert checksum(engine_gallery) == at_backup
    assert_the_counters_follow(engine_gallery)


def test_the_safety_backup_a_restore_takes_brings_the_replaced_data_back(
    cli, engine_gallery, backups_dir
):
    path = backup_of(engine_gallery, backups_dir)
    change_the_gallery(engine_gallery)
    replaced = checksum(engine_gallery)

    safety = printed_path(
        cli("db.restore", str(path), "--yes"), "safety backup of the replaced database"
    )
    assert checksum(engine_gallery) != replaced
    ok(cli("db.restore", str(safety), "--yes"))

    assert checksum(engine_gallery) == replaced


def test_a_backup_of_an_older_schema_restores_and_migrate_brings_it_forward(
    cli, engine_gallery, backups_dir
):
    with models_on(engine_gallery) as database:
        Runner(database, MIGRATIONS_DIR).rollback(to="002")
    old = backup_of(engine_gallery, backups_dir)
    at_002 = checksum(engine_gallery)
    with models_on(engine_gallery) as database:
        Runner(database, MIGRATIONS_DIR).migrate()

    ok(cli("db.restore", str(old), "--yes"))

    assert checksum(engine_gallery) == at_002
    assert "current version: 002" in ok(cli("db.status")).stdout
    pending = int(LATEST_VERSION) - 2  # every migration after 002
    assert f"applied {pending} migrations" in ok(cli("db.migrate")).stdout
    assert_the_counters_follow(engine_gallery)


# --- db.restore: what it refuses -----------------------------------------------------------


def missing_file(path):
    path.unlink()


def empty_file(path):
    path.write_bytes(b"")
    claim_as_it_is(path)


def random_bytes(path):
    path.write_bytes(random.Random(7).randbytes(path.stat().st_size))
    claim_as_it_is(path)


def truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def truncated_compressed(path):
    truncated(path)
    claim_as_it_is(path)


def row_count_tampered(path):
    manifest = json.loads(backups.manifest_path(path).read_text())
    rewrite_manifest(path, row_counts={**manifest["row_counts"], "users": 6})


def schema_version_edited(path):
    rewrite_manifest(path, schema_version="999")


def schema_version_not_a_number(path):
    rewrite_manifest(path, schema_version="x1", verified_at="2026-11-30T00:00:00+00:00")


@pytest.mark.parametrize(
    ("damage", "compress", "words"),
    [
        pytest.param(missing_file, False, ("no such file",), id="missing file"),
        pytest.param(empty_file, False, (), id="empty file"),
        pytest.param(random_bytes, False, (), id="random bytes"),
        pytest.param(truncated, False, ("checksum differs",), id="truncated"),
        # The file matches its manifest: only decompressing to the end can tell (on
        # PostgreSQL, which makes no .zst, pg_restore reading the cut archive).
        pytest.param(truncated_compressed, True, (), id="truncated compressed"),
        pytest.param(
            row_count_tampered, False, ("users: 5 rows, the manifest says 6",), id="row count"
        ),
        # The manifest lies: refused as newer (servers: before loading) or as not what the
        # file holds (SQLite: read from the file).
        pytest.param(schema_version_edited, False, ("999",), id="schema version edited"),
        pytest.param(
            schema_version_not_a_number, False, ("says x1",), id="schema version not a number"
        ),
    ],
)
def test_a_bad_backup_is_refused_in_one_line_and_the_live_database_is_untouched(
    cli, engine, engine_gallery, backups_dir, damage, compress, words
):
    path = backup_of(engine_gallery, backups_dir, compress=compress)
    damage(path)
    before = checksum(engine_gallery)

    line = one_error_line(cli("db.restore", str(path), "--yes"), 1, path.name, *words)

    assert "nothing restored" in line, line
    assert line.isprintable(), line  # no control characters out of a damaged file
    if damage is truncated_compressed and engine != "postgres":
        assert "truncated" in line or "stops short" in line
    assert checksum(engine_gallery) == before
    assert side_databases(engine_gallery) == []


def test_a_backup_of_a_schema_newer_than_the_code_is_refused_before_anything_is_touched(
    cli, engine, engine_gallery, backups_dir
):
    # As a database migrated by a newer release of this code would be.
    database = open_database(engine_gallery, create=False)
    try:
        database.execute_sql(
            "INSERT INTO migrations (version, name, checksum, applied_at, duration_ms) "
            "VALUES ('999', '999_from_the_future', 'x', '2026-01-01 00:00:00', 1)"
        )
    finally:
        database.close()
    path = backup_of(engine_gallery, backups_dir)
    change_the_gallery(engine_gallery)
    before = checksum(engine_gallery)

    line = one_error_line(cli("db.restore", str(path), "--yes"), 1, path.name, "newer", "999")

    assert "upgrade the code first" in line
    assert checksum(engine_gallery) == before


def test_another_applications_dump_is_not_a_clonegallery_backup(
    cli, engine_gallery, other_engine_url, backups_dir
):
    notes = open_database(other_engine_url)
    try:
        notes.execute_sql("CREATE TABLE notes (body VARCHAR(100))")
        notes.execute_sql("INSERT INTO notes (body) VALUES ('not a gallery')")
        foreign = backups.create_backup(
            Target.around(notes, other_engine_url), backups_dir / "foreign"
        ).path
    finally:
        notes.close()
    before = checksum(engine_gallery)

    line = one_error_line(cli("db.restore", str(foreign), "--yes"), 1, foreign.name)

    assert "not a CloneGallery database" in line and "nothing restored" in line
    assert checksum(engine_gallery) == before
    assert side_databases(engine_gallery) == []


@pytest.fixture
def other_engines_backup(engine, tmp_path):
    """A backup of a migrated database of another engine: (its manifest's engine, path)."""
    other = OTHER_ENGINE[engine]
    if other == "sqlite":
        url = sqlite_url(tmp_path / "elsewhere.db")
    else:
        servers.require_server(other)
        url = servers.new_database_url(other)
    try:
        database = open_database(url)
        Runner(database, MIGRATIONS_DIR).migrate()
        database.close()
        yield other, backup_of(url, tmp_path / "other")
    finally:
        if other != "sqlite":
            servers.drop_database(url)


def test_a_backup_of_another_engine_is_refused_pointing_to_db_transfer(
    cli, engine, engine_gallery, other_engines_backup
):
    other, path = other_engines_backup
    before = checksum(engine_gallery)

    line = one_error_line(cli("db.restore", str(path), "--yes"), 1, path.name, "db.transfer")

    assert f"a {other} backup cannot be restored into a {engine}" in line
    assert checksum(engine_gallery) == before


@pytest.fixture
def locked_folder(tmp_path):
    """A folder nobody may write into, root included (root ignores modes, not the
    immutable attribute); None where that cannot be arranged."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        yield None
        return
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o700)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("{tmp}/no/such/folder/b.backup", "does not exist"),
        ("{tmp}/locked/b.backup", "is not writable"),
        ("{tmp}/existing.backup", "already exists"),
    ],
    ids=["missing folder", "unwritable folder", "existing file"],
)
def test_bad_output_paths_are_refused_and_nothing_is_written(
    cli, engine_gallery, backups_dir, tmp_path, locked_folder, output, message
):
    if locked_folder is None and message == "is not writable":
        pytest.skip("running as root, where chattr +i cannot lock a folder here")
    existing = tmp_path / "existing.backup"
    existing.write_text("keep me")
    before = checksum(engine_gallery)

    result = cli("db.backup", "--output", output.format(tmp=tmp_path))

    one_error_line(result, 2, "--output", message)
    assert checksum(engine_gallery) == before
    assert existing.read_text() == "keep me"
    assert list((tmp_path / "locked").iterdir()) == []
    assert not backups_dir.exists() or list(backups_dir.iterdir()) == []


# --- secrets ---------------------------------------------------------------------------------

# Passwords as operators choose them; the second has characters that a URL must
# percent-encode and that password files escape.
PASSWORDS = {"plain": "Plain7Secret", "reserved characters": 'pa:ss"wo\\rd @/%x'}

WRAPPER = """#!/bin/sh
# Log how {name} was called, then run the real one.
{{
  printf 'argv:'; for argument in "$@"; do printf ' %s' "$argument"; done; printf '\\n'
  file="$PGPASSFILE"
  for argument in "$@"; do
    case "$argument" in --defaults-extra-file=*) file="${{argument#*=}}" ;; esac
  done
  if [ -n "$file" ]; then
    printf 'credentials: {name} %s\\n' "$(stat -c %a "$file")"
    cp "$file" "{folder}/credentials-$$"
  else
    printf 'credentials: {name} none\\n'
  fi
  env > "{folder}/environment-$$"
}} >> "{folder}/calls.log"
exec /usr/bin/{name} "$@"
"""


def wrapped_tools(folder, names):
    """Write logging wrappers of the client tools ``names`` into ``folder``; return the PATH
    that finds them first."""
    folder.mkdir()
    for name in names:
        wrapper = folder / name
        wrapper.write_text(WRAPPER.format(name=name, folder=folder))
        wrapper.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def with_user(url, user, password):
    """Return the URL with another user and password."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


@pytest.fixture(params=PASSWORDS.values(), ids=PASSWORDS.keys())
def password(request):
    return request.param


@pytest.fixture
def password_url(server, engine_url, password):
    """The URL of the test database with the password in it, percent-encoded: PostgreSQL's
    trust authentication accepts any; on MariaDB, a user made for the test with that
    password and every right on the database and its side databases (``<name>_%``)."""
    encoded = quote(password, safe="")
    if server == "postgres":
        yield with_user(engine_url, urlsplit(engine_url).username, encoded)
        return
    with servers.mysql_user(engine_url, password) as user:
        yield with_user(engine_url, user, encoded)


def test_a_password_reaches_the_client_tools_only_through_a_private_file(
    cli, server, password, password_url, backups_dir, tmp_path
):
    database = open_database(password_url)
    Runner(database, MIGRATIONS_DIR).migrate()
    Seeder(database, PROJECT_ROOT / "seeders").seed()
    database.close()
    logs = tmp_path / "wrappers"
    path_with_wrappers = wrapped_tools(logs, CLIENT_TOOLS[server])
    at_backup = checksum(password_url)

    def run(*args):
        return cli(*args, url=password_url, env={"PATH": path_with_wrappers})

    path = printed_path(run("db.backup", "--verify"), "backup")
    change_the_gallery(password_url)
    ok(run("db.restore", str(path), "--yes"))

    assert checksum(password_url) == at_backup
    calls = (logs / "calls.log").read_text().splitlines()
    used = {line.split()[1] for line in calls if line.startswith("credentials:")}
    assert used == set(CLIENT_TOOLS[server]), calls
    for line in calls:
        if line.startswith("argv:"):
            assert password not in line and quote(password, safe="") not in line, line
        else:
            assert line.endswith(" 600"), line  # every call got a private password file
    for environment in logs.glob("environment-*"):
        # Not even DATABASE_URL reaches the tools: no variable holds the password.
        variables = environment.read_text().splitlines()
        assert [v for v in variables if password in v] == []
    if server == "postgres":  # trust authentication would accept any password: read the file
        pgpass_line = "*:*:*:postgres:" + password.replace("\\", "\\\\").replace(":", "\\:")
        # The dump runs as the configured user; a load, as a temporary role of its own.
        loader = re.compile(r"\*:\*:\*:clonegallery_load_[0-9a-f]+:\S+\n")
        for credentials in logs.glob("credentials-*"):
            text = credentials.read_text()
            assert text == pgpass_line + "\n" or loader.fullmatch(text), text


def test_errors_show_the_url_with_its_password_masked(cli, password, password_url):
    missing = with_database(password_url, f"{database_name_of(password_url)}_missing")

    result = cli("db.backup", url=missing)

    line = one_error_line(result, 2, "***", "does not exist")
    assert password not in line and quote(password, safe="") not in line


# --- the client tools ---------------------------------------------------------------------


def test_a_missing_client_tool_is_named_with_the_package_that_provides_it(
    cli, server, engine_gallery, backups_dir, tmp_path
):
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    (bare / "invoke").symlink_to(Path(sys.executable).with_name("invoke"))
    before = checksum(engine_gallery)

    result = cli("db.backup", env={"PATH": str(bare)})

    one_error_line(result, 2, CLIENT_TOOLS[server][0], CLIENT_PACKAGE[server])
    assert not backups_dir.exists() or list(backups_dir.iterdir()) == []
    assert checksum(engine_gallery) == before


# --- restores and the other connections to the live database -------------------------------

HOLDER = """
import sys, time
from db.engines import open_database
database = open_database(sys.argv[1], create=False)
with database.atomic():
    database.execute_sql(f"SELECT COUNT(*) FROM {sys.argv[2]}")
    print("holding", flush=True)
    time.sleep(60)
"""


@contextmanager
def held(url, table):
    """Hold a transaction that read ``table`` of ``url`` in another process, as an app would."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, table],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_a_restore_waits_for_a_connection_in_the_way_then_says_so_and_changes_nothing(
    server, engine_gallery, backups_dir, side_databases_dropped
):
    path = backup_of(engine_gallery, backups_dir)
    change_the_gallery(engine_gallery)
    before = checksum(engine_gallery)
    with held(engine_gallery, "images"):
        manifest = backups.check_restorable(path, engine_gallery, LATEST_VERSION)
        started = time.monotonic()
        with pytest.raises(BackupError, match=r"in use|locked"):
            backups.restore_backup(engine_gallery, path, manifest, backups_dir, timeout=1)
        assert time.monotonic() - started >= 1

    assert checksum(engine_gallery) == before
    assert side_databases(engine_gallery) == []
    assert_the_counters_follow(engine_gallery)


def trigger_names(url):
    with models_on(url) as database:
        cursor = database.execute_sql(
            "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = %s",
            (database_name_of(url),),
        )
        return sorted(name for (name,) in cursor.fetchall())


def waiting_renames(url):
    """Return how many RENAME TABLE statements on the database the MySQL server runs."""
    with models_on(url) as database:
        cursor = database.execute_sql(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE %s",
            (f"RENAME TABLE %`{database_name_of(url)}`%",),
        )
        return cursor.fetchone()[0]


def wait_until(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{condition.__name__} not met in {timeout} s"
        time.sleep(0.05)


def test_a_mysql_restore_killed_while_it_waits_to_swap_gets_its_triggers_back_at_the_next_command(
    mysql, engine_gallery, backups_dir, side_databases_dropped
):
    path = backup_of(engine_gallery, backups_dir)
    at_backup = checksum(engine_gallery)
    change_the_gallery(engine_gallery)
    replaced, triggers = checksum(engine_gallery), trigger_names(engine_gallery)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env.update(DATABASE_URL=engine_gallery, INVOKE_DB_BACKUPS=str(backups_dir))
    command = [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT),
               "db.restore", str(path), "--yes"]  # fmt: skip

    with held(engine_gallery, "users"):  # a table without triggers: the swap itself waits
        restore = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: waiting_renames(engine_gallery) > 0)
        os.killpg(restore.pid, signal.SIGKILL)
        restore.wait()
    wait_until(lambda: waiting_renames(engine_gallery) == 0)  # the server finishes its part
    # The next command to open the database finishes the interrupted swap.
    assert run_invoke("db.status", url=engine_gallery).returncode == 0

    assert checksum(engine_gallery) in (replaced, at_backup)
    assert trigger_names(engine_gallery) == triggers
    assert_the_counters_follow(engine_gallery)


# --- consistency under writes ---------------------------------------------------------------

WRITER = """
import sys
from db.engines import open_database
database = open_database(sys.argv[1], create=False)
number = 0
while True:
    number += 1
    database.execute_sql(
        "INSERT INTO analytics (metric, value, recorded_at) VALUES ('writer', %s, '2026-01-01')",
        (number,),
    )
    if number == 1:
        print("started", flush=True)
"""


def writer_values(url):
    with models_on(url):
        query = Analytics.select(Analytics.value).where(Analytics.metric == "writer")
        return sorted(row.value for row in query)


def wait_for_writer_rows(url, at_least, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(writer_values(url)) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"the writer did not insert {at_least} rows in {timeout} s")


def test_a_backup_taken_while_a_writer_inserts_restores_a_prefix_of_its_rows(
    server, engine_gallery, backups_dir
):
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, engine_gallery],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "started"
        wait_for_writer_rows(engine_gallery, at_least=20)
        path = backup_of(engine_gallery, backups_dir)
        time.sleep(0.2)
    finally:
        writer.kill()
        writer.wait()
    written = len(writer_values(engine_gallery))

    assert backups.verify_backup(path, engine_gallery) == []
    manifest = backups.check_restorable(path, engine_gallery, LATEST_VERSION)
    backups.restore_backup(engine_gallery, path, manifest, backups_dir)

    values = writer_values(engine_gallery)
    assert values == [float(number) for number in range(1, len(values) + 1)]
    assert 20 <= len(values) < written  # the writer went on during the backup
    assert row_counts(engine_gallery) == manifest["row_counts"]


# --- crash safety ----------------------------------------------------------------------------


def copy_postgres_database(source_url, target_url):
    """Make the database of ``target_url`` an exact copy of ``source_url``'s."""
    engine = engine_for_url(source_url)
    engine.drop(target_url)
    with engine.maintenance(source_url) as maintenance:
        maintenance.connection().autocommit = True
        maintenance.execute_sql(
            f'CREATE DATABASE "{database_name_of(target_url)}" '
            f'TEMPLATE "{database_name_of(source_url)}"'
        )


@pytest.mark.slow
def test_a_restore_killed_at_any_moment_leaves_the_old_or_the_new_database(
    postgres,
    engine_migrated_db,
    engine_url,
    other_engine_url,
    backups_dir,
    tmp_path,
    side_databases_dropped,
):
    populate(engine_migrated_db, GalleryPlan(users=50, images=1_000, seed=8))
    new = checksum(engine_migrated_db)
    path = backups.create_backup(Target.around(engine_migrated_db, engine_url), backups_dir).path
    populate(engine_migrated_db, GalleryPlan(users=10, images=100, seed=9))
    old = checksum(engine_migrated_db)
    engine_migrated_db.close()
    pristine = other_engine_url
    copy_postgres_database(engine_url, pristine)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env.update(DATABASE_URL=engine_url, INVOKE_DB_BACKUPS=str(tmp_path / "safety"))
    command = [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT),
               "db.restore", str(path), "--yes"]  # fmt: skip

    started = time.monotonic()
    ok(subprocess.run(command, env=env, capture_output=True, text=True))
    duration = time.monotonic() - started

    rng, seen = random.Random(11), set()
    for attempt in range(KILLS):
        copy_postgres_database(pristine, engine_url)
        # A session of its own, so that the kill takes the pg_dump or pg_restore it
        # runs along, as a crash would.
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(1.5 * duration * (attempt + rng.random()) / KILLS)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

        state = checksum(engine_url)
        assert state in (old, new), f"kill {attempt}: neither the old nor the new database"
        seen.add("new" if state == new else "old")
    assert seen == {"old", "new"}, seen

    copy_postgres_database(pristine, engine_url)
    ok(subprocess.run(command, env=env, capture_output=True, text=True))
    assert checksum(engine_url) == new
    assert side_databases(engine_url) == []
