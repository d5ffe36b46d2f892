"""Backups (SQLite): consistent online snapshots with a manifest, verified before trusted."""

import json
import os
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from contextlib import closing

import pytest

from db import backups
from db.backups.sqlite import pinned_snapshot
from db.engines import engine_for
from db.errors import BackupError, ConfigError
from db.target import Target
from tests.conftest import LATEST_VERSION, PROJECT_ROOT, one_error_line, run_invoke, sqlite_url
from tests.snapshots import checksum


@pytest.fixture
def cli(db_url, backups_dir):
    def run(*args, **kwargs):
        env = {"INVOKE_DB_BACKUPS": str(backups_dir), **kwargs.pop("env", {})}
        return run_invoke(*args, url=db_url, env=env, **kwargs)

    return run


def test_a_backup_is_a_private_sqlite_database_with_a_manifest(migrated_db, gallery, backups_dir):
    info = backups.create_backup(
        Target.around(migrated_db, sqlite_url(migrated_db.database)), backups_dir
    )

    assert info.path.parent == backups_dir
    assert info.path.name.startswith("clonegallery-") and info.path.suffix == ".db"
    for path in (info.path, backups.manifest_path(info.path)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with closing(sqlite3.connect(info.path)) as connection:
        assert connection.execute("SELECT COUNT(*) FROM images").fetchone() == (8,)
    manifest = json.loads(backups.manifest_path(info.path).read_text())
    assert manifest["engine"] == "sqlite"
    assert manifest["schema_version"] == LATEST_VERSION
    assert manifest["row_counts"]["users"] == 5
    assert (manifest["sha256"], manifest["size"]) == backups.file_digest(info.path)
    assert manifest["tool"] == "clonegallery-db" and manifest["created_at"]


def test_a_fresh_backup_verifies(migrated_db, gallery, backups_dir):
    info = backups.create_backup(
        Target.around(migrated_db, sqlite_url(migrated_db.database)), backups_dir
    )

    assert backups.verify_backup(info.path) == []


def test_the_cli_backs_up_verifies_and_lists(cli, gallery, backups_dir):
    made = cli("db.backup", "--verify")
    assert made.returncode == 0, made.stderr
    assert "verified" in made.stdout
    path = next(backups_dir.glob("*.db"))

    assert cli("db.verify", str(path)).stdout.startswith(f"OK: {path}")
    listing = cli("db.backups").stdout
    assert path.name in listing and LATEST_VERSION in listing and "yes" in listing


def corrupt(path, how):
    data = path.read_bytes()
    if how == "appended":
        path.write_bytes(data + b"\0")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "random bytes":
        path.write_bytes(os.urandom(len(data)))
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["appended", "truncated", "random bytes", "empty"])
def test_a_damaged_backup_fails_verification(migrated_db, gallery, backups_dir, cli, how):
    info = backups.create_backup(
        Target.around(migrated_db, sqlite_url(migrated_db.database)), backups_dir
    )
    corrupt(info.path, how)

    assert backups.verify_backup(info.path)
    one_error_line(cli("db.verify", str(info.path)), 1, str(info.path))


def test_a_tampered_manifest_fails_verification(migrated_db, gallery, backups_dir):
    info = backups.create_backup(
        Target.around(migrated_db, sqlite_url(migrated_db.database)), backups_dir
    )
    manifest = json.loads(backups.manifest_path(info.path).read_text())
    manifest["row_counts"]["images"] = 9
    backups.manifest_path(info.path).write_text(json.dumps(manifest))

    assert backups.verify_backup(info.path) == [f"{info.path}: images: 8 rows, the manifest says 9"]


def test_another_applications_database_is_not_a_clonegallery_backup(foreign_backup):
    foreign = foreign_backup

    (problem,) = backups.verify_backup(foreign)
    assert "not a CloneGallery database" in problem


def test_a_missing_file_or_manifest_is_named(tmp_path, cli, gallery):
    one_error_line(cli("db.verify", str(tmp_path / "nope.db")), 1, "nope.db", "no such file")
    (tmp_path / "lonely.db").write_bytes(b"")
    one_error_line(cli("db.verify", str(tmp_path / "lonely.db")), 1, "no readable manifest")


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("{tmp}/no/such/folder/b.db", "does not exist"),
        ("{live}", "is the live database itself"),
        ("{existing}", "already exists"),
    ],
)
def test_bad_output_paths_are_refused_and_change_nothing(cli, gallery, tmp_path, output, message):
    existing = tmp_path / "existing.db"
    existing.write_text("keep me")
    before = checksum(sqlite_url(gallery))
    output = output.format(tmp=tmp_path, live=gallery, existing=existing)

    one_error_line(cli("db.backup", "--output", output), 2, message)

    assert checksum(sqlite_url(gallery)) == before
    assert existing.read_text() == "keep me"


def test_keep_prunes_only_this_tools_oldest_backups(cli, gallery, backups_dir):
    backups_dir.mkdir()
    (backups_dir / "hand-made.db").write_text("not ours")
    for _ in range(3):
        assert cli("db.backup").returncode == 0

    result = cli("db.backup", "--keep", "2")

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("pruned: ") == 2
    ours = [info for info in backups.list_backups(backups_dir) if info.manifest]
    assert len(ours) == 2 and ours[0].verified
    assert (backups_dir / "hand-made.db").exists()


def test_pruning_never_deletes_the_newest_verified_backup(migrated_db, gallery, backups_dir):
    oldest = backups.mark_verified(
        backups.create_backup(
            Target.around(migrated_db, sqlite_url(migrated_db.database)), backups_dir
        )
    )
    middle = backups.create_backup(
        Target.around(migrated_db, sqlite_url(migrated_db.database)), backups_dir
    )
    newest = backups.create_backup(
        Target.around(migrated_db, sqlite_url(migrated_db.database)), backups_dir
    )

    owner = backups.Owner.known(migrated_db, sqlite_url(migrated_db.database))
    deleted = backups.prune_backups(backups_dir, owner, backups.Retention(last=1))

    assert deleted == [middle.path]
    assert oldest.path.exists() and newest.path.exists()


WRITER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
number = 0
while True:
    number += 1
    connection.execute(
        "INSERT INTO analytics (metric, value, recorded_at) VALUES ('writer', ?, '2026-01-01')",
        (number,),
    )
    if number == 1:
        print("started", flush=True)
"""


def wait_for_writer_rows(path, at_least, timeout=30):
    deadline = time.monotonic() + timeout
    with closing(sqlite3.connect(path, timeout=30)) as connection:
        while time.monotonic() < deadline:
            query = "SELECT COUNT(*) FROM analytics WHERE metric = 'writer'"
            if connection.execute(query).fetchone()[0] >= at_least:
                return
            time.sleep(0.05)
    raise AssertionError(f"the writer did not insert {at_least} rows in {timeout} s")


def test_a_backup_taken_while_a_writer_inserts_is_consistent(migrated_db, gallery, backups_dir):
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(gallery)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "started"
        wait_for_writer_rows(gallery, at_least=20)
        info = backups.create_backup(
            Target.around(migrated_db, sqlite_url(migrated_db.database)), backups_dir
        )
        time.sleep(0.2)
    finally:
        writer.kill()
        writer.wait()

    assert backups.verify_backup(info.path) == []
    with closing(sqlite3.connect(info.path)) as connection:
        values = [v for (v,) in connection.execute(
            "SELECT value FROM analytics WHERE metric = 'writer' ORDER BY value")]  # fmt: skip
    assert values == [float(n) for n in range(1, len(values) + 1)]
    assert len(values) >= 20


def limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_disk_that_fills_up_leaves_no_backup_behind(gallery, backups_dir, db_url):
    backups_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env.update(DATABASE_URL=db_url, INVOKE_DB_BACKUPS=str(backups_dir))
    before = checksum(db_url)

    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT), "db.backup"],
        capture_output=True, text=True, env=env, preexec_fn=limit_file_size, timeout=60,
    )  # fmt: skip

    one_error_line(result, 1, "no backup was written")
    assert list(backups_dir.iterdir()) == []
    assert checksum(db_url) == before


def test_while_a_backup_reads_the_pinned_file_writers_go_on_and_the_file_does_not_change(
    migrated_db, gallery, db_path
):
    # The fast path of an SQLite backup copies the database file itself: this is the
    # property it rests on (a checkpoint never writes past a reader's snapshot).
    with pinned_snapshot(db_path) as pinned:
        assert pinned is not None, "an idle WAL database can be pinned"
        before = backups.file_digest(db_path)
        with closing(sqlite3.connect(db_path, timeout=5, isolation_level=None)) as writer:
            writer.execute("PRAGMA wal_autocheckpoint = 1")  # try to checkpoint at every commit
            for number in range(300):
                writer.execute("INSERT INTO tags (name) VALUES (?)", (f"pinned-{number}",))
            assert writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0
            assert backups.file_digest(db_path) == before
        assert pinned.execute(
            "SELECT COUNT(*) FROM tags WHERE name LIKE 'pinned-%'"
        ).fetchone() == (0,)
    with closing(sqlite3.connect(db_path)) as reader:
        reader.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert backups.file_digest(db_path) != before


@pytest.mark.slow
def test_a_database_the_writers_keep_busy_is_backed_up_through_the_backup_api(
    migrated_db, gallery, db_path, backups_dir
):
    with closing(sqlite3.connect(db_path, timeout=5, isolation_level=None)) as writer:
        writer.execute("INSERT INTO tags (name) VALUES ('in the wal')")
        writer.execute("BEGIN")  # a reader of the current WAL: it cannot be emptied now
        writer.execute("SELECT COUNT(*) FROM tags").fetchone()
        with pinned_snapshot(db_path) as pinned:
            assert pinned is None
        info = backups.create_backup(Target.around(migrated_db, sqlite_url(db_path)), backups_dir)
        writer.execute("ROLLBACK")

    assert backups.verify_backup(info.path) == []
    with closing(sqlite3.connect(info.path)) as copy:
        assert copy.execute("SELECT COUNT(*) FROM tags WHERE name = 'in the wal'").fetchone() == (
            1,
        )


# --- what backups/__init__.py decides on its own -------------------------------------------


@pytest.fixture
def backup(migrated_db, gallery, backups_dir):
    """A fresh, unverified backup of the gallery."""
    return backups.create_backup(Target.around(migrated_db, sqlite_url(gallery)), backups_dir)


def edit_manifest(path, **changes):
    manifest = {**json.loads(backups.manifest_path(path).read_text()), **changes}
    backups.manifest_path(path).write_text(json.dumps(manifest))


def test_a_missing_backup_or_manifest_is_named_in_one_sentence(tmp_path):
    lonely = tmp_path / "lonely.db"
    lonely.write_bytes(b"x")

    assert backups.verify_backup(tmp_path / "nope.db") == [f"{tmp_path / 'nope.db'}: no such file"]
    assert backups.verify_backup(lonely) == [f"{lonely}: no readable manifest (lonely.db.json)"]


def test_a_manifest_naming_an_unknown_engine_is_a_problem(backup):
    edit_manifest(backup.path, engine="oracle")

    assert backups.verify_backup(backup.path) == [
        f"{backup.path}: the manifest names no known engine ('oracle')"
    ]


def test_a_backup_of_another_engine_is_not_restorable_here(backup, gallery):
    edit_manifest(backup.path, engine="mysql")

    with pytest.raises(BackupError) as refused:
        backups.check_restorable(backup.path, sqlite_url(gallery), LATEST_VERSION)

    assert str(refused.value) == (
        f"{backup.path}: a mysql backup cannot be restored into a sqlite database "
        "(db.transfer copies between engines); nothing restored"
    )


def test_a_backup_newer_than_the_code_is_not_restorable(backup, gallery):
    with pytest.raises(BackupError) as refused:
        backups.check_restorable(backup.path, sqlite_url(gallery), "003")

    assert str(refused.value) == (
        f"{backup.path}: its schema version {LATEST_VERSION} is newer than this code's migrations "
        "(latest 003); upgrade the code first; nothing restored"
    )
    assert (
        backups.check_restorable(backup.path, sqlite_url(gallery), LATEST_VERSION)["engine"]
        == "sqlite"
    )
    assert backups.check_restorable(backup.path, sqlite_url(gallery), "010")["engine"] == "sqlite"


def test_an_unverified_sqlite_backup_is_verified_before_a_restore(backup, gallery):
    assert not backup.verified

    manifest = backups.check_restorable(backup.path, sqlite_url(gallery), LATEST_VERSION)

    assert manifest["schema_version"] == LATEST_VERSION
    backup.path.write_bytes(backup.path.read_bytes()[:-1] + b"?")
    with pytest.raises(BackupError, match=r"checksum differs .*; nothing restored$"):
        backups.check_restorable(backup.path, sqlite_url(gallery), LATEST_VERSION)


def test_a_backups_folder_that_cannot_be_made_is_named_with_its_setting(tmp_path):
    (tmp_path / "a-file").write_text("")

    with pytest.raises(ConfigError) as refused:
        backups.writable_folder(tmp_path / "a-file" / "backups")

    assert str(refused.value) == (
        f"backups folder {tmp_path / 'a-file' / 'backups'} cannot be created (Not a "
        "directory); point INVOKE_DB_BACKUPS (db.backups in invoke.yaml) at a folder you "
        "can write"
    )
    made = backups.writable_folder(tmp_path / "new" / "nested")
    assert made.is_dir()


def test_a_database_that_does_not_exist_yet_has_an_owner_without_id(tmp_path):
    url = sqlite_url(tmp_path / "later.db")

    assert backups.current_owner(url) == backups.Owner.at(url)
    assert backups.current_owner(url).id is None
    assert not (tmp_path / "later.db").exists()


@pytest.mark.parametrize(
    ("replaced_id", "backup_of", "kept"),
    [
        ("id-of-replaced", ("/srv/gallery.db", "id-of-backup"), "id-of-replaced"),
        (None, ("/srv/gallery.db", "id-of-backup"), "id-of-backup"),  # its own, id lost
        (None, ("/srv/other.db", "id-of-backup"), "new"),  # another's: a new id
        (None, ("/srv/gallery.db", None), "new"),
    ],
)
def test_a_restored_database_keeps_the_id_it_had_else_its_backups_own(replaced_id, backup_of, kept):
    replaced = backups.Owner("sqlite", None, None, "/srv/gallery.db", replaced_id)
    manifest = {"database": backups.Owner("sqlite", None, None, *backup_of).as_manifest()}

    chosen = backups._kept_id(replaced, manifest)

    if kept == "new":
        assert uuid.UUID(chosen).version == 4
    else:
        assert chosen == kept


def test_only_mysql_has_an_interrupted_restore_to_finish(migrated_db):
    assert engine_for(migrated_db).finish_interrupted_restore(migrated_db) is False


def test_an_encrypted_backup_is_not_restorable_without_its_identity_file(backup, gallery):
    edit_manifest(backup.path, encrypted={"format": "age", "recipients": []}, verified_at="x")

    with pytest.raises(ConfigError) as refused:
        backups.check_restorable(backup.path, sqlite_url(gallery), LATEST_VERSION)

    assert str(refused.value) == (
        f"{backup.path} is encrypted: give the identity file that decrypts it "
        "(--identity or db.backup_identity)"
    )


def test_a_verified_sqlite_backup_is_checked_as_it_is_copied_not_before(backup, gallery):
    # The same SHA-256 means the very bytes that verified: check_restorable does not read
    # them again (sqlite.restore checks them as it copies).
    backups.mark_verified(backup)
    backup.path.write_bytes(backup.path.read_bytes()[:-1] + b"?")

    manifest = backups.check_restorable(backup.path, sqlite_url(gallery), LATEST_VERSION)

    assert manifest["verified_at"]


def test_a_restore_returns_the_replaced_databases_safety_backup_under_its_id(
    migrated_db, gallery, backups_dir, tmp_path
):
    url = sqlite_url(gallery)
    info = backups.create_backup(Target.around(migrated_db, url), backups_dir, verify=True)
    own_id = backups.current_owner(url).id
    manifest = backups.check_restorable(info.path, url, LATEST_VERSION)
    migrated_db.close()

    safety = backups.restore_backup(url, info.path, manifest, tmp_path / "safety")

    assert safety.path.parent == tmp_path / "safety" and safety.path.is_file()
    assert backups.Owner.from_manifest(safety.manifest).id == own_id
    assert backups.read_manifest(safety.path) == safety.manifest
    assert backups.current_owner(url).id == own_id
