"""What a backup leaves behind when things go wrong (issue 11, defects 2 and 10): a
backup is under its final name only with its manifest, even on a disk with room for the
one but not the other; files in the making that killed runs left are removed by the next
run (a run still going keeps its own); a symbolic link is refused as --output.

The full disk is a real one: a tmpfs mounted with room for the compressed backup, to the
page, and not for its manifest (root may mount here; the test skips, saying so, where
it may not).
"""

import errno
import hashlib
import json
import os
import stat
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
import zstandard

from db import backups, commands
from db.backups import files
from db.config import Settings
from db.errors import BackupError
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


# --- files.py on its own: complete or absent, private, hashed as written ------------------

BIG = files.WHOLE_FILE_CHUNK_BYTES + 12_345  # more than one chunk, not a whole number of them


def mode_of(path):
    return stat.S_IMODE(path.stat().st_mode)


def sha256_and_size(data):
    return hashlib.sha256(data).hexdigest(), len(data)


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "source.db"
    path.write_bytes(os.urandom(BIG))
    return path


def test_a_finished_file_appears_whole_and_private_under_its_name(tmp_path):
    target = tmp_path / "backup.db"
    with files.finished_file(target) as partial:
        assert partial.name == f".backup.db.partial-{os.getpid()}"
        assert partial.read_bytes() == b"" and mode_of(partial) == 0o600
        assert not target.exists()
        partial.write_bytes(b"complete")

    assert target.read_bytes() == b"complete" and mode_of(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["backup.db"]


def test_a_failed_file_leaves_nothing_and_the_old_one_as_it_was(tmp_path):
    target = tmp_path / "backup.db"
    target.write_bytes(b"the previous one")

    with pytest.raises(RuntimeError), files.finished_file(target) as partial:
        partial.write_bytes(b"half")
        raise RuntimeError("the disk is full")

    assert target.read_bytes() == b"the previous one"
    assert [p.name for p in tmp_path.iterdir()] == ["backup.db"]


def test_a_private_file_is_created_0600_whatever_the_umask_and_never_reused(tmp_path):
    path = tmp_path / "private"
    previous = os.umask(0)
    try:
        files.create_private(path)
    finally:
        os.umask(previous)

    assert mode_of(path) == 0o600
    with pytest.raises(FileExistsError):
        files.create_private(path)


def a_dead_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_only_the_files_in_the_making_of_dead_runs_are_removed(tmp_path):
    dead = a_dead_pid()
    left = [f".a.db.partial-{dead}", f".b.db.zst.partial-{dead}.plain"]
    kept = [
        f".c.db.partial-{os.getpid()}",  # this run's own
        ".d.db.partial-1",  # a live process's (init)
        f"e.db.partial-{dead}",  # not hidden: not ours
        ".f.db.partial-abc",  # no process id
        f".g.db.partial-{dead}.PLAIN",
    ]
    for name in left + kept:
        (tmp_path / name).write_bytes(b"x")

    removed = files.remove_leftovers(tmp_path)

    assert sorted(p.name for p in removed) == sorted(left)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


@pytest.mark.parametrize("size", [0, 1, BIG])
def test_a_files_digest_is_its_sha256_and_size(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "data"
    path.write_bytes(data)

    assert files.file_digest(path) == sha256_and_size(data)


@pytest.mark.parametrize("copy", ["in the kernel", "through a buffer"])
def test_a_hashed_copy_is_whole_patched_and_hashed_as_written(big_file, tmp_path, copy):
    target = tmp_path / "copy.db"
    target.write_bytes(b"longer former content " * 300_000)  # cut to the copy's size
    patches = [(0, b"PATCHED"), (100, b"!")]
    expected = bytearray(big_file.read_bytes())
    expected[0:7], expected[100:101] = b"PATCHED", b"!"

    if copy == "in the kernel":
        with files.hashed_copy(big_file, target, patches=patches) as content:
            digest = content.result()
    else:
        with open(big_file, "rb", buffering=0) as reader, open(target, "r+b") as writer:
            digest = files._copied_through_buffer(reader, writer, patches)

    assert target.read_bytes() == bytes(expected)
    assert digest == sha256_and_size(bytes(expected))


def test_compression_round_trips_and_reports_what_it_read(tmp_path):
    big_file = tmp_path / "source.db"
    big_file.write_bytes(b"".join(b"INSERT INTO tags VALUES (%d);\n" % n for n in range(200_000)))
    compressed, restored = tmp_path / "c.zst", tmp_path / "restored"
    compressed.write_bytes(b"")
    restored.write_bytes(b"x" * (2 * BIG))  # cut to the content's size

    content = files.compress_file(big_file, compressed)
    written = files.decompress_file(compressed, restored)

    original = big_file.read_bytes()
    assert content == written == sha256_and_size(original)
    assert restored.read_bytes() == original
    assert compressed.stat().st_size < len(original) // 10
    assert b"".join(files.decompressed_chunks(compressed)) == original


def test_a_cut_or_foreign_compressed_file_is_refused(big_file, tmp_path):
    compressed = tmp_path / "c.zst"
    compressed.write_bytes(b"")
    files.compress_file(big_file, compressed)
    whole = compressed.read_bytes()
    target = tmp_path / "out"
    target.write_bytes(b"")

    compressed.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BackupError, match=r"^the compressed data stops short"):
        files.decompress_file(compressed, target)
    compressed.write_bytes(b"not zstd at all" * 100)
    with pytest.raises(BackupError, match=r"^cannot be decompressed \("):
        files.decompress_file(compressed, target)


def test_a_compressed_file_is_one_frame_that_carries_its_checksum(big_file, tmp_path):
    compressed = tmp_path / "c.zst"
    compressed.write_bytes(b"")

    files.compress_file(big_file, compressed)

    frame = zstandard.get_frame_parameters(compressed.read_bytes())
    assert frame.has_checksum
    assert frame.content_size in (zstandard.CONTENTSIZE_UNKNOWN, BIG)


def test_content_bigger_than_a_chunk_is_decompressed_and_counted_whole(big_file, tmp_path):
    compressed, restored = tmp_path / "c.zst", tmp_path / "restored"
    compressed.write_bytes(b"")
    restored.write_bytes(b"")
    files.compress_file(big_file, compressed)
    assert compressed.stat().st_size > files.CHUNK_BYTES  # random bytes: read in chunks

    assert files.decompress_file(compressed, restored) == files.file_digest(big_file)
    assert restored.read_bytes() == big_file.read_bytes()


def test_a_copy_of_a_single_chunk_is_patched_too(tmp_path):
    source, target = tmp_path / "small.db", tmp_path / "copy.db"
    source.write_bytes(b"0123456789")
    target.write_bytes(b"")

    with files.hashed_copy(source, target, patches=[(2, b"ab")]) as content:
        digest = content.result()

    assert target.read_bytes() == b"01ab456789"
    assert digest == sha256_and_size(b"01ab456789")


def test_a_copy_shorter_than_what_was_written_is_an_io_error(tmp_path):
    # What hashed_copy relies on when the file shrinks under it: never a short digest.
    short = tmp_path / "short.db"
    short.write_bytes(b"0123456789")
    descriptor = os.open(short, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as failed:
            files._hash_written(hashlib.sha256(), descriptor, 0, 100)
    finally:
        os.close(descriptor)

    assert failed.value.errno == errno.EIO
    assert failed.value.strerror == "the copy is shorter than what was written into it"
