"""Restore (SQLite): verified first, a safety backup, then an atomic swap: old or new."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pytest

from db import backups
from db.errors import BackupError
from db.populate import GalleryPlan, populate
from db.target import Target
from tests.conftest import LATEST_VERSION, PROJECT_ROOT, one_error_line, run_invoke, sqlite_url
from tests.snapshots import checksum

KILLS = 20


@pytest.fixture
def cli(db_url, backups_dir):
    def run(*args):
        return run_invoke(*args, url=db_url, env={"INVOKE_DB_BACKUPS": str(backups_dir)})

    return run


@pytest.fixture
def backup_of_gallery(migrated_db, gallery, backups_dir):
    """A backup of the seeded gallery, then more data written to the live database."""
    info = backups.create_backup(
        Target.around(migrated_db, sqlite_url(migrated_db.database)), backups_dir
    )
    populate(migrated_db, GalleryPlan(users=20, images=200, seed=4))
    migrated_db.close()  # restore refuses while another connection uses the database
    return info


def test_restore_brings_back_the_backed_up_content(cli, db_url, backup_of_gallery, tmp_path):
    reference = tmp_path / "reference.db"
    reference.write_bytes(backup_of_gallery.path.read_bytes())

    result = cli("db.restore", str(backup_of_gallery.path), "--yes")

    assert result.returncode == 0, result.stderr
    assert checksum(db_url) == checksum(sqlite_url(reference))
    assert "safety backup" in result.stdout


def test_restore_takes_a_safety_backup_of_what_it_replaces(cli, db_url, backup_of_gallery):
    before = checksum(db_url)

    cli("db.restore", str(backup_of_gallery.path), "--yes")

    safety = [
        info
        for info in backups.list_backups(backup_of_gallery.path.parent)
        if info.path != backup_of_gallery.path
    ]
    assert len(safety) == 1
    assert checksum(sqlite_url(safety[0].path)) == before


def test_the_safety_backups_checksum_is_taken_at_its_first_verification(
    cli, db_url, backup_of_gallery
):
    # Hashing the replaced file during the restore would read a second database as large
    # as the restored one: its rows and version are recorded then, its checksum later.
    cli("db.restore", str(backup_of_gallery.path), "--yes")
    (safety,) = [
        info
        for info in backups.list_backups(backup_of_gallery.path.parent)
        if info.path != backup_of_gallery.path
    ]
    assert safety.manifest["checksum_deferred"] and safety.manifest["sha256"] is None
    assert safety.manifest["row_counts"]["images"] == 208

    assert cli("db.verify", str(safety.path)).returncode == 0

    recorded = backups.read_manifest(safety.path)
    assert "checksum_deferred" not in recorded and recorded["verified_at"]
    assert (recorded["sha256"], recorded["size"]) == backups.file_digest(safety.path)
    with open(safety.path, "r+b") as damaged:  # from now on, a changed byte is caught
        damaged.seek(recorded["size"] - 10)
        damaged.write(b"X")
    one_error_line(cli("db.verify", str(safety.path)), 1, "checksum differs")


def test_after_restoring_an_older_schema_status_shows_it_and_migrate_brings_it_forward(
    cli, db_path, backups_dir
):
    assert cli("db.migrate", "--to", "002").returncode == 0
    assert cli("db.backup").returncode == 0
    old = next(backups_dir.glob("*.db"))
    assert cli("db.migrate").returncode == 0

    assert cli("db.restore", str(old), "--yes").returncode == 0
    assert "current version: 002" in cli("db.status").stdout
    assert cli("db.migrate").returncode == 0
    assert f"current version: {LATEST_VERSION}" in cli("db.status").stdout


def test_without_a_terminal_or_yes_restore_refuses(cli, db_url, backup_of_gallery):
    before = checksum(db_url)

    one_error_line(cli("db.restore", str(backup_of_gallery.path)), 2, "--yes")

    assert checksum(db_url) == before


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty", "tampered manifest"])
def test_a_damaged_backup_is_refused_and_the_live_database_untouched(
    cli, db_path, backup_of_gallery, damage
):
    path = backup_of_gallery.path
    if damage == "tampered manifest":
        manifest = json.loads(backups.manifest_path(path).read_text())
        manifest["row_counts"]["users"] += 1
        backups.manifest_path(path).write_text(json.dumps(manifest))
    else:
        data = path.read_bytes()
        path.write_bytes({"truncated": data[:4096], "random bytes": os.urandom(len(data)),
                          "empty": b""}[damage])  # fmt: skip
    before = db_path.read_bytes()

    one_error_line(cli("db.restore", str(path), "--yes"), 1, "nothing restored")

    assert db_path.read_bytes() == before


def test_another_applications_database_is_refused(cli, db_path, gallery, foreign_backup):
    foreign = foreign_backup
    before = db_path.read_bytes()

    one_error_line(cli("db.restore", str(foreign), "--yes"), 1, "not a CloneGallery database")
    assert db_path.read_bytes() == before


def test_a_backup_from_a_newer_schema_is_refused(cli, db_path, backup_of_gallery):
    manifest_file = backups.manifest_path(backup_of_gallery.path)
    manifest = json.loads(manifest_file.read_text())
    manifest["schema_version"] = "999"
    manifest_file.write_text(json.dumps(manifest))
    before = db_path.read_bytes()

    one_error_line(cli("db.restore", str(backup_of_gallery.path), "--yes"), 1, "newer", "999")
    assert db_path.read_bytes() == before


def test_a_missing_backup_is_named(cli, tmp_path, gallery):
    one_error_line(cli("db.restore", str(tmp_path / "nope.db"), "--yes"), 1, "nope.db")


@pytest.mark.parametrize("missing", ["backup", "manifest"])
def test_a_missing_backup_or_manifest_is_named_before_anyone_is_asked_to_confirm(
    cli, tmp_path, gallery, missing
):
    path = tmp_path / "nope.db"
    if missing == "manifest":
        path.write_bytes(b"not a backup")

    refused = cli("db.restore", str(path))  # no --yes and no terminal: no prompt either

    one_error_line(refused, 1, "nope.db", "nothing restored")
    assert "confirm" not in refused.stderr


HOLDER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
connection.execute("INSERT INTO tags (name) VALUES ('held')")
print("holding", flush=True)
time.sleep(60)
"""


def test_restore_waits_for_a_writer_then_says_who_is_in_the_way(
    migrated_db, backup_of_gallery, tmp_path
):
    live = migrated_db.database
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, live], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        before = checksum(sqlite_url(live))
        started = time.monotonic()
        manifest = backups.check_restorable(
            backup_of_gallery.path, sqlite_url(live), LATEST_VERSION
        )
        with pytest.raises(BackupError, match="in use by another process"):
            backups.restore_backup(
                sqlite_url(live), backup_of_gallery.path, manifest, tmp_path, timeout=1
            )
        assert time.monotonic() - started >= 1
    finally:
        holder.kill()
        holder.wait()
    assert checksum(sqlite_url(live)) == before


@pytest.mark.slow
def test_a_restore_killed_at_any_moment_leaves_the_old_or_the_new_database(
    migrated_db, db_path, db_url, backups_dir, tmp_path
):
    populate(migrated_db, GalleryPlan(users=200, images=20_000, seed=8))
    info = backups.create_backup(
        Target.around(migrated_db, sqlite_url(migrated_db.database)), backups_dir
    )
    populate(migrated_db, GalleryPlan(users=10, images=100, seed=9))
    migrated_db.close()
    pristine = tmp_path / "pristine.db"
    with closing(sqlite3.connect(db_path)) as source, closing(sqlite3.connect(pristine)) as copy:
        source.backup(copy)
    copy_of_backup = tmp_path / "copy-of-backup.db"
    copy_of_backup.write_bytes(info.path.read_bytes())
    old, new = checksum(sqlite_url(pristine)), checksum(sqlite_url(copy_of_backup))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env.update(DATABASE_URL=db_url, INVOKE_DB_BACKUPS=str(tmp_path / "safety"))
    command = [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT),
               "db.restore", str(info.path), "--yes"]  # fmt: skip

    started = time.monotonic()
    assert subprocess.run(command, env=env, capture_output=True).returncode == 0
    duration = time.monotonic() - started

    rng, seen = random.Random(5), set()
    for attempt in range(KILLS):
        with (
            closing(sqlite3.connect(pristine)) as source,
            closing(sqlite3.connect(db_path)) as live,
        ):
            source.backup(live)
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # Spread over 1.5 times an undisturbed run: under load a run is slower, and the
        # last kills must still land both before and after the swap.
        time.sleep(1.5 * duration * (attempt + rng.random()) / KILLS)
        process.send_signal(signal.SIGKILL)
        process.wait()

        with closing(sqlite3.connect(db_path)) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        state = checksum(db_url)
        assert state in (old, new), f"kill {attempt}: neither the old nor the new database"
        seen.add("new" if state == new else "old")
    assert seen == {"old", "new"}, seen
