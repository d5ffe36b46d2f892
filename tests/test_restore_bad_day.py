"""Restore (SQLite) on a bad day: a full disk, a backup that lies, a database in use.

A refused or failed restore leaves the live database as it was: the same bytes, the same
mode, the same journal mode (WAL), nothing left beside it or in the backups folder.
Whatever can be read from the backup itself (its engine, schema version, rows) is read
and compared with the manifest, never taken from it.
"""

import errno
import json
import os
import resource
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from contextlib import closing

import pytest

from db import backups
from db.backups.files import file_digest
from db.target import Target
from tests.conftest import (
    LATEST_VERSION,
    NEXT_VERSION,
    PROJECT_ROOT,
    one_error_line,
    run_invoke,
    sqlite_url,
)
from tests.snapshots import checksum

LATER_MIGRATION = """-- migrate:up
CREATE TABLE later (id INTEGER PRIMARY KEY);
-- migrate:down
DROP TABLE later;
"""


def state(path):
    """What a refused restore must not change about a database file: its bytes, size,
    mode, modification time and journal mode."""
    status = os.stat(path)
    digest, _ = backups.file_digest(path)
    with closing(sqlite3.connect(path)) as connection:
        journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    return {
        "sha256": digest,
        "size": status.st_size,
        "mode": oct(stat.S_IMODE(status.st_mode)),
        "mtime_ns": status.st_mtime_ns,
        "journal_mode": journal_mode,
    }


def leftovers(*folders):
    """Return the files in ``folders`` that a restore may have left (names starting
    with a dot: copies and links in the making)."""
    return sorted(str(path) for folder in folders if folder.exists() for path in folder.glob(".*"))


def files_in(folder):
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def edit_manifest(path, **changes):
    """Change fields of a backup's manifest, leaving the backup file (and so its
    checksum) as it is."""
    manifest_file = backups.manifest_path(path)
    manifest = json.loads(manifest_file.read_text())
    manifest.update(changes)
    manifest_file.write_text(json.dumps(manifest))


@pytest.fixture
def live(gallery):
    """The seeded gallery as an application leaves it: WAL mode, mode 0644."""
    os.chmod(gallery, 0o644)
    return gallery


@pytest.fixture
def verified_backup(migrated_db, live, tmp_path):
    """A verified backup of the live gallery, kept outside the backups folder; the
    live database is closed afterwards (a restore waits for other connections)."""
    info = backups.create_backup(Target.around(migrated_db, sqlite_url(live)), tmp_path / "kept")
    migrated_db.close()
    assert backups.verify_backup(info.path) == []
    return backups.mark_verified(info).path


@pytest.fixture
def cli(db_url, backups_dir):
    def run(*args):
        return run_invoke(*args, url=db_url, env={"INVOKE_DB_BACKUPS": str(backups_dir)})

    return run


# --- a full disk -------------------------------------------------------------------


def mount_tmpfs(folder, size):
    """Mount a tmpfs of ``size`` bytes on ``folder``; return whether that was allowed."""
    folder.mkdir()
    if not shutil.which("mount") or os.geteuid() != 0:
        return False
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
        capture_output=True,
    )
    return mounted.returncode == 0


def limit_file_size(limit):
    def limit_in_child():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_in_child


@pytest.fixture
def small_disk(tmp_path):
    """Return ``move(live)``, which puts the database file ``live`` on a disk with
    room for it but not for a second copy, and returns (its new path, the preexec_fn of
    a process that writes there). The disk is a size-limited tmpfs where this user may
    mount one (root), else a folder written to by a process whose file size is limited
    (RLIMIT_FSIZE)."""
    folder = tmp_path / "small-disk"
    mounted = []

    def move(live):
        size = live.stat().st_size
        if mount_tmpfs(folder, size + size // 2):
            mounted.append(folder)
            limit = None
        else:
            limit = limit_file_size(size // 2)
        moved = folder / live.name
        shutil.copyfile(live, moved)
        os.chmod(moved, 0o644)
        return moved, limit

    yield move
    for path in mounted:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_a_restore_onto_a_full_disk_is_one_line_and_leaves_the_database_as_it_was(
    migrated_db, live, tmp_path, small_disk, compress
):
    info = backups.create_backup(
        Target.around(migrated_db, sqlite_url(live)), tmp_path / "kept", compress=compress
    )
    migrated_db.close()
    backups.mark_verified(info)
    database, limit = small_disk(live)
    safety_folder = database.parent / "backups"  # on the same disk: the safety is a link
    before = state(database)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env.update(DATABASE_URL=sqlite_url(database), INVOKE_DB_BACKUPS=str(safety_folder))

    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT),
         "db.restore", str(info.path), "--yes"],
        capture_output=True, text=True, env=env, preexec_fn=limit, timeout=120,
    )  # fmt: skip

    reason = "file too large" if limit else "no space left on device"
    one_error_line(result, 1, str(info.path), reason, "nothing restored")
    assert state(database) == before
    assert leftovers(database.parent, safety_folder) == []
    assert files_in(safety_folder) == []


# --- a refused restore touches nothing ---------------------------------------------


def damage_after_verifying(path):
    """Change one byte in the middle of the backup file, after it verified."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def count_one_more_user(path):
    manifest = backups.read_manifest(path)
    edit_manifest(path, row_counts={**manifest["row_counts"], "users": 5 + 1})


def claim_an_older_schema(path):
    edit_manifest(path, schema_version="003")


@pytest.mark.parametrize(
    ("lie", "message"),
    [
        (damage_after_verifying, "does not match the manifest"),
        (count_one_more_user, "users: 5 rows, the manifest says 6"),
        (
            claim_an_older_schema,
            f"schema version {LATEST_VERSION} in the backup, the manifest says 003",
        ),
    ],
    ids=["damaged copy", "row counts", "schema version"],
)
def test_a_refused_restore_leaves_the_live_file_untouched(
    cli, live, verified_backup, backups_dir, lie, message
):
    lie(verified_backup)
    before = state(live)

    one_error_line(cli("db.restore", str(verified_backup), "--yes"), 1, message, "nothing restored")

    assert state(live) == before
    assert leftovers(live.parent, backups_dir) == []
    assert files_in(backups_dir) == []


READER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN")
connection.execute("SELECT COUNT(*) FROM tags").fetchone()
print("reading", flush=True)
time.sleep(60)
"""


def test_a_database_in_use_is_left_untouched(live, verified_backup, backups_dir):
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, live], stdout=subprocess.PIPE, text=True
    )
    try:
        assert reader.stdout.readline().strip() == "reading"
        before = state(live)
        manifest = backups.check_restorable(verified_backup, sqlite_url(live), LATEST_VERSION)
        with pytest.raises(backups.BackupError, match="in use by another process"):
            backups.restore_backup(
                sqlite_url(live), verified_backup, manifest, backups_dir, timeout=1
            )
    finally:
        reader.kill()
        reader.wait()
    assert state(live) == before
    assert leftovers(live.parent, backups_dir) == []
    assert files_in(backups_dir) == []


@pytest.fixture
def live_at_link_limit(live, tmp_path):
    """The live file with as many hard links as its file system allows (65,000 on ext4):
    the safety backup's link, made once the database is held, then fails."""
    links = tmp_path / "links"
    links.mkdir()
    for number in range(100_000):
        try:
            os.link(live, links / str(number))
        except OSError as exc:
            if exc.errno != errno.EMLINK:
                raise
            break
    else:
        shutil.rmtree(links)
        pytest.skip("this file system has no small limit on hard links")
    yield live
    shutil.rmtree(links)


def test_a_failure_once_the_database_is_held_gives_it_back_in_wal_mode(
    cli, live_at_link_limit, verified_backup, backups_dir
):
    live = live_at_link_limit
    before = state(live)
    before_content = checksum(sqlite_url(live))

    one_error_line(
        cli("db.restore", str(verified_backup), "--yes"), 1, str(live), "too many links",
        "nothing restored",
    )  # fmt: skip

    after = state(live)
    # Leaving WAL mode and coming back rewrote the header's change counter, nothing else.
    assert {**after, "sha256": None, "mtime_ns": None} == {
        **before,
        "sha256": None,
        "mtime_ns": None,
    }
    assert after["journal_mode"] == "wal"
    assert checksum(sqlite_url(live)) == before_content
    assert leftovers(live.parent, backups_dir) == []
    assert files_in(backups_dir) == []


def test_a_restored_database_keeps_the_live_files_mode_and_journal_mode(
    cli, live, verified_backup, backups_dir
):
    result = cli("db.restore", str(verified_backup), "--yes")

    assert result.returncode == 0, result.stderr
    restored = state(live)
    assert (restored["mode"], restored["journal_mode"]) == ("0o644", "wal")
    (safety,) = [path for path in backups_dir.iterdir() if path.suffix == ".db"]
    assert stat.S_IMODE(safety.stat().st_mode) == 0o600
    assert backups.verify_backup(safety) == []
    assert leftovers(live.parent, backups_dir) == []


def test_a_backup_of_a_wal_database_is_a_rollback_journal_file_hashed_as_written(
    migrated_db, live, tmp_path
):
    # The copy is hashed as it is written, its header switched to rollback journal first:
    # the manifest's checksum is the file's own, and the file needs no WAL beside it.
    info = backups.create_backup(Target.around(migrated_db, sqlite_url(live)), tmp_path / "kept")

    assert info.path.read_bytes()[18:20] == b"\x01\x01"
    assert file_digest(info.path) == (info.manifest["sha256"], info.manifest["size"])
    assert backups.verify_backup(info.path) == []


# --- what the backup says of itself is read from it ------------------------------


@pytest.fixture
def later_cli(db_url, backups_dir, project_migrations, write_migration):
    """The CLI with a migration beyond the project's."""
    write_migration(f"{NEXT_VERSION}_later.sql", LATER_MIGRATION)

    def run(*args):
        env = {"INVOKE_DB_BACKUPS": str(backups_dir)}
        return run_invoke(*args, url=db_url, migrations_dir=project_migrations, env=env)

    return run


@pytest.fixture
def backup_later_said_newest(later_cli, backups_dir):
    """A verified backup taken at the later migration's schema whose manifest was edited
    to say the project's newest (the backup file, and so its checksum, untouched)."""
    assert later_cli("db.setup").returncode == 0
    made = later_cli("db.backup", "--verify")
    assert made.returncode == 0, made.stderr
    (path,) = backups_dir.glob("*.db")
    assert backups.read_manifest(path)["schema_version"] == NEXT_VERSION
    edit_manifest(path, schema_version=LATEST_VERSION)
    return path


def test_verify_reads_the_schema_version_from_the_backup(later_cli, backup_later_said_newest):
    one_error_line(
        later_cli("db.verify", str(backup_later_said_newest)), 1,
        f"schema version {NEXT_VERSION} in the backup, the manifest says {LATEST_VERSION}",
    )  # fmt: skip


@pytest.mark.parametrize("verified", [True, False], ids=["verified", "never verified"])
def test_restore_reads_the_schema_version_from_the_backup(
    cli, later_cli, db_path, backup_later_said_newest, verified
):
    if not verified:
        edit_manifest(backup_later_said_newest, verified_at=None)
    assert later_cli("db.migrate", "--to", "003").returncode == 0
    # The project (cli) knows migrations up to its newest only: the manifest passes for one.
    before = state(db_path)

    one_error_line(
        cli("db.restore", str(backup_later_said_newest), "--yes"), 1,
        f"schema version {NEXT_VERSION} in the backup, the manifest says {LATEST_VERSION}",
        "nothing restored",
    )  # fmt: skip

    assert state(db_path) == before


@pytest.fixture
def not_sqlite_said_sqlite(verified_backup):
    """A verified SQLite backup whose file was replaced by a PostgreSQL custom dump's
    bytes, its manifest's checksums recomputed to match: only the content can tell."""
    verified_backup.write_bytes(b"PGDMP\x01\x0f\x00" + os.urandom(8192))
    digest, size = file_digest(verified_backup)
    edit_manifest(verified_backup, sha256=digest, size=size, content_sha256=digest,
                  content_size=size)  # fmt: skip
    return verified_backup


def test_a_file_that_is_not_sqlite_fails_verify_and_restore_clearly(
    cli, live, not_sqlite_said_sqlite
):
    before = state(live)
    message = "not an SQLite database"

    one_error_line(
        cli("db.verify", str(not_sqlite_said_sqlite)), 1, message, "manifest says sqlite"
    )
    one_error_line(cli("db.restore", str(not_sqlite_said_sqlite), "--yes"), 1, message,
                   "nothing restored")  # fmt: skip

    assert state(live) == before


def test_a_backups_folder_on_a_bind_mount_gets_a_regular_safety_backup(
    cli, live, verified_backup, backups_dir, tmp_path
):
    # A bind mount (a container's volume) shares the file system's device number, but
    # link() across mounts fails: the safety backup is then a copy.
    source = tmp_path / "volume"
    source.mkdir()
    backups_dir.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "--bind", str(source), str(backups_dir)], capture_output=True
        ).returncode
    ):
        pytest.skip("bind mounts need root")
    try:
        assert os.stat(backups_dir).st_dev == os.stat(live).st_dev
        before = checksum(sqlite_url(live))

        result = cli("db.restore", str(verified_backup), "--yes")

        assert result.returncode == 0, result.stderr
        (safety,) = [path for path in backups_dir.iterdir() if path.suffix == ".db"]
        assert checksum(sqlite_url(safety)) == before
        assert state(live)["journal_mode"] == "wal"
    finally:
        subprocess.run(["umount", "--lazy", str(backups_dir)], check=True)
    assert leftovers(live.parent) == []
