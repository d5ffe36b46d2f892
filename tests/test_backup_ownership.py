"""Backups belong to their database: many databases share one backups folder, and each
sees, prunes and reports only its own (issue 11, defect 1).

Two databases of the engine under test share a folder (on SQLite: two files of the same
name in different folders), or an SQLite file and a server database do. Each manifest
names its database (engine, host, port, name, and an id kept in the database itself),
so a renamed SQLite file still finds its backups, db.reset keeps the id, db.transfer
does not copy it, and a restore of another database's backup keeps the restored
database's own. Real files, real servers, ``invoke`` as a subprocess.
"""

import json
import re
import shutil
from pathlib import Path

import pytest

from db import backups, commands
from db.config import Settings
from db.engines import open_database
from db.engines.base import database_name_of, quoted
from db.models import Tag, bind_models
from db.runner import Runner
from db.seeders import Seeder
from tests import servers
from tests.conftest import (
    MIGRATIONS_DIR,
    PROJECT_ROOT,
    ok,
    one_error_line,
    run_invoke,
    sqlite_url,
)
from tests.snapshots import checksum, content

# A backup's file name as db.backups prints it: <database name>-<UTC time><suffix>.
IDENTITY_TABLE = "database_identity"
LISTED_FILE = re.compile(r"\S+-\d{8}T\d{12}Z\.(?:db|pgdump|sql)(?:\.zst)?")


# --- fixtures and helpers -----------------------------------------------------------------


def seeded(url, extra_tag=None):
    """Migrate and seed the database of ``url`` (created); add a tag to tell it apart."""
    database = open_database(url)
    try:
        Runner(database, MIGRATIONS_DIR).migrate()
        bind_models(database)
        Seeder(database, PROJECT_ROOT / "seeders").seed()
        if extra_tag:
            Tag.create(name=extra_tag)
    finally:
        database.close()
    return url


@pytest.fixture
def pair(engine, engine_url, other_engine_url, tmp_path):
    """Two seeded databases of the engine under test, (A, B): on SQLite two files both
    called clonegallery.db, in different folders; on a server two databases."""
    if engine == "sqlite":
        first, second = (tmp_path / side / "clonegallery.db" for side in ("a", "b"))
        first.parent.mkdir()
        second.parent.mkdir()
        engine_url, other_engine_url = sqlite_url(first), sqlite_url(second)
    return seeded(engine_url, "only-in-a"), seeded(other_engine_url, "only-in-b")


@pytest.fixture
def server_url(engine):
    """A database of the server engine under test, which does not exist yet."""
    if engine == "sqlite":
        pytest.skip("an SQLite file beside a server database: the engine must be a server")
    url = servers.new_database_url(engine)
    yield url
    servers.drop_database(url)


def cli(url, folder, *args, **kwargs):
    """Run ``invoke ARGS`` on the database of ``url``, backups in ``folder``."""
    return run_invoke(*args, url=url, env={"INVOKE_DB_BACKUPS": str(folder)}, **kwargs)


def backup_of(url, folder):
    """Back up the database of ``url`` into ``folder`` (in-process, not verified: what is
    tested here is whose it is); return the file."""
    settings = Settings(url, MIGRATIONS_DIR, backups_dir=folder)
    return commands.backup(settings).backup.path


def listed(result):
    """Return the backup file names a db.backups run printed."""
    return set(LISTED_FILE.findall(ok(result).stdout))


def own_backups(url, folder):
    """Return the names of the backups db.backups lists for ``url`` (the listing itself is
    tested through the CLI once; elsewhere it is read in-process, for speed)."""
    settings = Settings(url, MIGRATIONS_DIR, backups_dir=folder)
    return names(*(info.path for info in commands.list_backups(settings).backups))


def listed_lines(result):
    """Return {file name: its line} of a db.backups run."""
    return {
        found.group(0): line
        for line in ok(result).stdout.splitlines()
        if (found := LISTED_FILE.search(line))
    }


def names(*paths):
    return {Path(path).name for path in paths}


def database_id(url):
    """Return the id kept in the database (read with SQL: what is there, not what the
    code says), or None when it has none."""
    database = open_database(url, create=False)
    try:
        if IDENTITY_TABLE not in database.get_tables():
            return None
        rows = database.execute_sql(f"SELECT id FROM {quoted(database, IDENTITY_TABLE)}")
        ids = [row[0] for row in rows.fetchall()]
        assert len(ids) <= 1, ids  # one id names the database
        return ids[0] if ids else None
    finally:
        database.close()


def where(url):
    """What names a database in a message or a listing: an SQLite file's absolute path,
    a server database's name."""
    if url.startswith("sqlite"):
        return str(Path(database_name_of(url)).resolve())
    return database_name_of(url)


def without_identity(url):
    """The database's content, its identity left out (a restore keeps the replaced one)."""
    return {t: rows for t, rows in content(url).items() if t != IDENTITY_TABLE}


# --- retention, listing, stats: each database its own -------------------------------------


def test_keep_on_one_database_never_prunes_another_databases_backups(pair, backups_dir):
    first, second = pair
    theirs = backup_of(second, backups_dir)
    old = backup_of(first, backups_dir)

    made = ok(cli(first, backups_dir, "db.backup", "--keep", "1"))

    assert theirs.exists() and backups.manifest_path(theirs).exists()
    assert not old.exists() and not backups.manifest_path(old).exists()
    assert f"pruned: {old}" in made.stdout and str(theirs) not in made.stdout
    assert len(list(backups_dir.glob("*.json"))) == 2


def test_db_backups_lists_the_databases_own_and_all_lists_every_one_saying_whose(pair, backups_dir):
    first, second = pair
    mine, theirs = backup_of(first, backups_dir), backup_of(second, backups_dir)

    assert listed(cli(first, backups_dir, "db.backups")) == names(mine)
    assert listed(cli(second, backups_dir, "db.backups")) == names(theirs)
    every = listed_lines(cli(first, backups_dir, "db.backups", "--all"))
    assert set(every) == names(mine, theirs)
    assert where(first) in every[mine.name] and where(second) not in every[mine.name]
    assert where(second) in every[theirs.name] and where(first) not in every[theirs.name]


def test_db_stats_reports_the_configured_databases_latest_backup(pair, backups_dir):
    first, second = pair
    mine = backup_of(first, backups_dir)
    backup_of(second, backups_dir)  # newer, and another database's

    stats = json.loads(ok(cli(first, backups_dir, "db.stats", "--json")).stdout)

    assert Path(stats["latest_backup"]["path"]).name == mine.name


def test_the_manifest_names_its_database_and_the_file_starts_with_its_name(
    engine, pair, backups_dir
):
    first, _ = pair
    made = ok(cli(first, backups_dir, "db.backup"))

    (path,) = [p for p in backups_dir.iterdir() if not p.name.endswith(".json")]
    assert str(path) in made.stdout
    recorded = json.loads(backups.manifest_path(path).read_text())["database"]
    assert recorded["engine"] == engine
    assert recorded["name"] == where(first)
    assert recorded["id"] == database_id(first) is not None
    if engine == "sqlite":
        assert (recorded["host"], recorded["port"]) == (None, None)
        assert path.name.startswith("clonegallery-")
    else:
        server = servers.SERVERS[engine]
        assert f"{recorded['host']}:{recorded['port']}" in server
        assert path.name.startswith(f"{database_name_of(first)}-")


def test_an_sqlite_file_and_a_server_database_share_a_folder(
    engine, gallery, server_url, backups_dir
):
    sqlite_backup = backup_of(sqlite_url(gallery), backups_dir)
    seeded(server_url)

    older = backup_of(server_url, backups_dir)
    newest = ok(cli(server_url, backups_dir, "db.backup", "--keep", "1"))

    assert sqlite_backup.exists() and backups.manifest_path(sqlite_backup).exists()
    assert f"pruned: {older}" in newest.stdout and not older.exists()
    (server_backup,) = [
        p
        for p in backups_dir.glob(f"{database_name_of(server_url)}-*")
        if not p.name.endswith(".json")
    ]
    assert str(server_backup) in newest.stdout
    assert own_backups(server_url, backups_dir) == names(server_backup)
    assert own_backups(sqlite_url(gallery), backups_dir) == names(sqlite_backup)
    stats = json.loads(ok(cli(server_url, backups_dir, "db.stats", "--json")).stdout)
    assert Path(stats["latest_backup"]["path"]).name == server_backup.name


# --- the id follows the database, not its place -------------------------------------------


def test_a_renamed_sqlite_file_still_finds_its_backups_by_its_id(engine, pair, backups_dir):
    if engine != "sqlite":
        pytest.skip("renaming a file: SQLite only")
    first, second = pair
    mine, theirs = backup_of(first, backups_dir), backup_of(second, backups_dir)
    live = Path(database_name_of(first))
    renamed = live.with_name("renamed.db")
    live.rename(renamed)
    moved = sqlite_url(renamed)

    assert own_backups(moved, backups_dir) == names(mine)
    newest = ok(cli(moved, backups_dir, "db.backup", "--keep", "1"))
    assert f"pruned: {mine}" in newest.stdout
    assert theirs.exists() and not mine.exists()
    assert len(own_backups(moved, backups_dir)) == 1


@pytest.mark.parametrize("how", [[], ["--data-only"]], ids=["drop", "data-only"])
def test_db_reset_keeps_the_databases_id_and_so_its_backups(pair, backups_dir, how):
    first, second = pair
    before_reset = backup_of(first, backups_dir)
    theirs = backup_of(second, backups_dir)
    known_as = database_id(first)

    ok(cli(first, backups_dir, "db.reset", "--yes", *how))
    seeded(first)
    after_reset = Path(ok(cli(first, backups_dir, "db.backup")).stdout.split()[1])

    assert database_id(first) == known_as
    assert own_backups(first, backups_dir) == names(before_reset, after_reset)
    assert own_backups(second, backups_dir) == names(theirs)


def test_db_transfer_does_not_copy_the_id(engine, engine_url, other_engine_url, backups_dir):
    source = seeded(engine_url)
    sources = backup_of(source, backups_dir)

    ok(cli(source, backups_dir, "db.transfer", "--to", other_engine_url))
    copy = Path(ok(cli(other_engine_url, backups_dir, "db.backup")).stdout.split()[1])

    assert own_backups(other_engine_url, backups_dir) == names(copy)
    assert own_backups(source, backups_dir) == names(sources)
    assert database_id(other_engine_url) not in (None, database_id(source))


# --- restoring another database's backup --------------------------------------------------


def test_restoring_another_databases_backup_without_a_terminal_is_refused_naming_both(
    pair, backups_dir
):
    first, second = pair
    theirs = backup_of(second, backups_dir)
    before = checksum(first)

    refused = cli(first, backups_dir, "db.restore", str(theirs))

    line = one_error_line(refused, 2, "another database", where(second), "--yes")
    assert Path(where(first)).name in line
    assert checksum(first) == before
    assert list(backups_dir.glob("*.json")) == [backups.manifest_path(theirs)]


def test_restoring_another_databases_backup_with_yes_keeps_the_restored_databases_id(
    pair, backups_dir
):
    first, second = pair
    mine, theirs = backup_of(first, backups_dir), backup_of(second, backups_dir)
    known_as = database_id(first)

    restored = ok(cli(first, backups_dir, "db.restore", str(theirs), "--yes"))

    assert without_identity(first) == without_identity(second)  # B's rows, in A
    safety = re.search(r"safety backup of the replaced database: (\S+)", restored.stdout)
    assert safety, restored.stdout
    assert own_backups(first, backups_dir) == names(mine, safety.group(1))
    assert own_backups(second, backups_dir) == names(theirs)
    assert database_id(first) == known_as != database_id(second)
    # Retention on A still never touches B's backup.
    ok(cli(first, backups_dir, "db.backup", "--keep", "1"))
    assert theirs.exists() and not mine.exists()


def test_a_backup_taken_without_its_database_restores_into_a_new_one_with_the_same_id(
    engine, engine_url, other_engine_url, backups_dir, tmp_path
):
    # Disaster recovery: the database is gone; restoring its own backup to where it was
    # makes the new database its owner again (its old backups stay its own).
    if engine != "sqlite":
        pytest.skip("a file deleted and restored in place: SQLite stands for every engine here")
    source = seeded(engine_url)
    mine = backup_of(source, backups_dir)
    known_as = database_id(source)
    live = Path(database_name_of(source))
    shutil.move(live, tmp_path / "lost.db")

    ok(cli(source, backups_dir, "db.restore", str(mine), "--yes"))

    assert database_id(source) == known_as
    assert own_backups(source, backups_dir) == names(mine)


def test_a_read_only_account_backs_up_and_its_backups_are_known_by_place(
    engine, engine_url, backups_dir
):
    # A backup account often may only read: giving the database its id is then left to
    # one that may write, and its backups are matched by engine, host, port and name.
    if engine != "postgres":
        pytest.skip("PostgreSQL stands for the servers: a role that may only read")
    seeded(engine_url)
    role = f"cg_reader_{database_name_of(engine_url)[-8:]}"
    admin = open_database(engine_url, create=False)
    try:
        admin.execute_sql(f"CREATE ROLE {role} LOGIN BYPASSRLS")  # pg_dump reads every row
        admin.execute_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        admin.execute_sql(f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
        reader_url = engine_url.replace("://postgres@", f"://{role}@", 1)
        assert reader_url != engine_url

        made = cli(reader_url, backups_dir, "db.backup")

        assert ok(made).stdout.startswith("backup: ")
        assert database_id(engine_url) is None
        assert len(listed(cli(engine_url, backups_dir, "db.backups"))) == 1
    finally:
        admin.execute_sql(f"DROP OWNED BY {role}")
        admin.execute_sql(f"DROP ROLE {role}")
        admin.close()


# --- the Owner value on its own (db/backups/owner.py) ---------------------------------------

ID_A = "f3c1e2a4-0000-4000-8000-00000000000a"
ID_B = "f3c1e2a4-0000-4000-8000-00000000000b"


@pytest.mark.parametrize(
    ("url", "owner"),
    [
        (
            "postgresql://app:s3cret@db.internal:5433/gallery",
            backups.Owner("postgres", "db.internal", 5433, "gallery", None),
        ),
        (
            "postgres://app@db.internal/gallery",
            backups.Owner("postgres", "db.internal", None, "gallery", None),
        ),
        (
            "mysql://root@127.0.0.1:3306/photos",
            backups.Owner("mysql", "127.0.0.1", 3306, "photos", None),
        ),
    ],
)
def test_a_server_database_is_its_engine_host_port_and_name(url, owner):
    assert backups.Owner.at(url) == owner


def test_an_sqlite_database_is_its_files_absolute_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()

    at_home = backups.Owner.at("sqlite:///~/data/../gallery.db", ID_A)

    assert at_home == backups.Owner("sqlite", None, None, str(tmp_path / "gallery.db"), ID_A)


def test_a_manifests_owner_reads_back_as_it_was_written():
    owner = backups.Owner("postgres", "db", 5432, "gallery", ID_A)

    assert backups.Owner.from_manifest({"database": owner.as_manifest()}) == owner
    assert owner.as_manifest() == {
        "engine": "postgres", "host": "db", "port": 5432, "name": "gallery", "id": ID_A,
    }  # fmt: skip


@pytest.mark.parametrize(
    "manifest",
    [
        None,
        {},
        {"database": "gallery"},
        {"database": {"engine": "sqlite"}},
        {"database": {"name": 7}},
    ],
)
def test_a_manifest_that_names_no_database_has_no_owner(manifest):
    assert backups.Owner.from_manifest(manifest) is None
    assert not backups.Owner("sqlite", None, None, "/srv/gallery.db", None).owns(manifest)


def test_odd_fields_of_a_manifests_owner_are_read_as_unknown():
    recorded = {"engine": 5, "host": "db", "port": "5432", "name": "gallery", "id": 12}

    owner = backups.Owner.from_manifest({"database": recorded})

    assert owner == backups.Owner("5", "db", None, "gallery", None)


@pytest.mark.parametrize(
    ("mine", "theirs", "same"),
    [
        (("db", 5432, "gallery", ID_A), ("db", 5432, "gallery", ID_A), True),
        (("db", 5432, "gallery", ID_A), ("elsewhere", 6543, "renamed", ID_A), True),  # moved
        (("db", 5432, "gallery", ID_A), ("db", 5432, "gallery", ID_B), False),  # recreated
        (("db", 5432, "gallery", ID_A), ("db", 5432, "gallery", None), True),  # older backup
        (("db", 5432, "gallery", None), ("db", 5432, "gallery", ID_B), True),  # no id yet
        (("db", 5432, "gallery", None), ("other", 5432, "gallery", None), False),
        (("db", 5432, "gallery", None), ("db", 5433, "gallery", None), False),
        (("db", 5432, "gallery", None), ("db", 5432, "photos", None), False),
    ],
)
def test_a_backup_is_a_databases_own_by_id_else_by_place(mine, theirs, same):
    owner = backups.Owner("postgres", *mine)
    other = backups.Owner("postgres", *theirs)

    assert owner.owns({"database": other.as_manifest()}) is same
    assert backups.Owner("mysql", *mine).owns({"database": other.as_manifest()}) is (
        same and mine[3] is not None and theirs[3] is not None
    )


@pytest.mark.parametrize(
    ("owner", "short_name", "prefix", "described"),
    [
        (
            backups.Owner("sqlite", None, None, "/srv/data/gallery.db", None),
            "gallery.db",
            "gallery",
            "sqlite /srv/data/gallery.db",
        ),
        (
            backups.Owner("postgres", "db.internal", 5432, "my gallery/2026", None),
            "my gallery/2026",
            "my_gallery_2026",
            "postgres my gallery/2026 on db.internal:5432",
        ),
        (
            backups.Owner("mysql", None, None, "..gallery..", None),
            "..gallery..",
            "gallery",
            "mysql ..gallery.. on localhost",
        ),
        (backups.Owner("mysql", "db", None, "///", None), "///", "database", "mysql /// on db"),
    ],
)
def test_a_database_is_named_for_people_and_for_file_names(owner, short_name, prefix, described):
    assert owner.short_name == short_name
    assert owner.file_prefix() == prefix
    assert owner.describe() == described


def test_a_pooled_or_identified_server_url_is_the_same_database():
    pooled = backups.Owner.at("postgresql+pool://app@db.internal:5433/gallery", ID_A)

    assert pooled == backups.Owner("postgres", "db.internal", 5433, "gallery", ID_A)
    assert backups.Owner.at("mysql+pool://root@db/photos").engine == "mysql"


def test_a_file_prefix_keeps_the_names_own_letters():
    assert backups.Owner("mysql", "db", None, "Xrays_X", None).file_prefix() == "Xrays_X"
