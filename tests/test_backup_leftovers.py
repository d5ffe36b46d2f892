"""What a backup leaves behind when things go wrong (issue 11, defects 2 and 10): a
backup is under its final name only with its manifest, even on a disk with room for the
one but not the other; files in the making that killed runs left are removed by the next
run (a run still going keeps its own); a symbolic link is refused as --output.

The full disk is a real one: a tmpfs mounted with room for the compressed backup, to the
page, and not for its manifest (root may mount here; the test skips, saying so, where
it may not).
"""

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from db import backups, commands
from db.config import Settings
from tests.conftest import MIGRATIONS_DIR, one_error_line, run_invoke
from tests.test_backup_ownership import seeded

PAGE = os.sysconf("SC_PAGE_SIZE")


def cli(url, folder, *args):
    return run_invoke(*args, url=url, env={"INVOKE_DB_BACKUPS": str(folder)})


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def engine_gallery(engine, engine_url):
    """The seeded sample gallery on the engine under test; returns its URL."""
    return seeded(engine_url)


# --- a disk with room for the backup, not for its manifest --------------------------------


@contextmanager
def small_tmpfs(where, size):
    """Mount a tmpfs of ``size`` bytes at ``where`` for the block; skip if not allowed."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_compressed_backup_without_room_for_its_manifest_leaves_nothing(engine_gallery, tmp_path):
    # The same unchanged database, backed up elsewhere first (which also gives it its id,
    # so the second backup is of the very same content), tells the backup's size.
    measured = commands.backup(
        Settings(engine_gallery, MIGRATIONS_DIR, backups_dir=tmp_path / "measure"), compress=True
    ).backup.path
    size = measured.stat().st_size
    manifest_size = backups.manifest_path(measured).stat().st_size
    room = -(-size // PAGE) * PAGE  # the backup's pages, and not one more
    assert room - size < PAGE and manifest_size > 0

    with small_tmpfs(tmp_path / "full", room) as full:
        failed = cli(engine_gallery, full, "db.backup", "--compress")

        one_error_line(failed, 1, str(full), "No space left", "no backup was written")
        assert list(full.iterdir()) == []  # no backup, no manifest, nothing in the making
        listed = ok(cli(engine_gallery, full, "db.backups"))
        assert listed.stdout.startswith("no backups of"), listed.stdout
        assert ok(cli(engine_gallery, full, "db.backups", "--all")).stdout.strip() == "no backups"

    # One page more, for the manifest, and the same backup fits: it was the manifest that
    # found no room.
    with small_tmpfs(tmp_path / "roomy", room + PAGE) as roomy:
        made = ok(cli(engine_gallery, roomy, "db.backup", "--compress"))
        written = Path(made.stdout.split()[1])
        # (a MySQL dump records when it was made: a byte or two may differ, not a page)
        assert -(-written.stat().st_size // PAGE) * PAGE == room
        assert backups.manifest_path(written).exists()


# --- files in the making left by killed runs ----------------------------------------------


def dead_pid():
    """Return the id of a process that has ended."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def test_the_next_backup_removes_what_killed_runs_left_and_keeps_a_live_runs_files(
    engine_gallery, backups_dir
):
    backups_dir.mkdir()
    dead, alive = dead_pid(), os.getpid()
    left_by_the_dead = [
        f".gallery-20260101T000000000000Z.db.partial-{dead}",
        f".gallery-20260101T000000000000Z.db.partial-{dead}.plain",
        f".gallery-20260101T000000000000Z.sql.zst.json.partial-{dead}",
    ]
    not_ours_to_remove = [
        f".gallery-20260101T000000000000Z.db.partial-{alive}",  # a run still going
        f".gallery-20260101T000000000000Z.db.partial-{alive}.plain",
        f"notes.partial-{dead}",  # not a name of ours
        ".notes.partial-abc",
    ]
    for name in left_by_the_dead + not_ours_to_remove:
        (backups_dir / name).write_bytes(b"half a backup")

    made = ok(cli(engine_gallery, backups_dir, "db.backup"))

    new = Path(made.stdout.split()[1])
    assert {p.name for p in backups_dir.iterdir()} == {
        *not_ours_to_remove,
        new.name,
        backups.manifest_path(new).name,
    }


# --- a symbolic link as --output ----------------------------------------------------------


@pytest.mark.parametrize("target_exists", [False, True], ids=["dangling", "to-a-file"])
def test_a_symbolic_link_as_output_is_refused_and_nothing_is_written_at_its_target(
    engine_gallery, backups_dir, tmp_path, target_exists
):
    target = tmp_path / "elsewhere" / "precious.db"
    target.parent.mkdir()
    if target_exists:
        target.write_bytes(b"someone's data")
    link = tmp_path / "backup.db"
    link.symlink_to(target)

    refused = cli(engine_gallery, backups_dir, "db.backup", "--output", str(link))

    one_error_line(refused, 2, "--output", str(link), "symbolic link")
    assert link.is_symlink() and os.readlink(link) == str(target)
    if target_exists:
        assert target.read_bytes() == b"someone's data"
    else:
        assert not target.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == (
        ["precious.db"] if target_exists else []
    )
    assert sorted(p.name for p in tmp_path.glob("backup.db*")) == ["backup.db"]
    assert not backups_dir.exists() or list(backups_dir.iterdir()) == []


def test_the_manifest_written_beside_a_plain_output_names_it(engine_gallery, tmp_path):
    # The refusal above is of links only: a plain new file as --output is written.
    output = tmp_path / "mine.backup"
    ok(cli(engine_gallery, tmp_path / "unused", "db.backup", "--output", str(output)))

    assert output.is_file() and not output.is_symlink()
    manifest = json.loads(backups.manifest_path(output).read_text())
    assert (manifest["sha256"], manifest["size"]) == backups.file_digest(output)
