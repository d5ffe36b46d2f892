"""SQLite backups: consistent snapshots, checked read-only, restored by one rename.

A backup of an SQLite database is itself an SQLite database (``sqlite3 FILE`` opens
it), or that file zstd-compressed. Writers carry on while it is taken, and it holds
exactly what was committed when it started:

- in WAL mode (always, through this toolkit), the database file is pinned to one
  snapshot (see ``pinned_snapshot``) and copied or compressed as it is, in one pass;
- otherwise (or when writers keep the WAL from being emptied), SQLite's online backup
  API copies every page in one step, inside one read transaction. A stepped backup (a
  few pages at a time) would restart each time a writer commits, maybe forever.
"""

import os
import shutil
import sqlite3
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from pathlib import Path

from db.backups.files import (
    compress_file,
    compress_stream,
    create_private,
    decompress_file,
    file_digest,
    finished_file,
    fsync,
)
from db.backups.manifest import BackupInfo, backup_name, new_manifest, write_manifest
from db.engines.base import retry_until
from db.engines.sqlite import sqlite_path
from db.errors import BackupError

ENGINE = "sqlite"
CLONEGALLERY_TABLES = ("users", "images", "tags", "albums", "migrations")
HEADER_BYTES = 100


def live_file(url):
    return Path(sqlite_path(url)).resolve()


def dump(database, url, partial, compress):
    """Snapshot the database into the file ``partial``; return its manifest."""
    with pinned_snapshot(live_file(url)) as pinned:
        if pinned is not None:
            return _dump_pinned_file(pinned, live_file(url), partial, compress)
    return _dump_through_backup_api(database, partial, compress)


@contextmanager
def pinned_snapshot(live):
    """Yield a connection reading a snapshot that is exactly the bytes of the database
    file, which then cannot change until the block ends; or None when that cannot be
    arranged (not in WAL mode, or writers too busy).

    In WAL mode the database file changes only when a checkpoint copies WAL frames into
    it, and a checkpoint never copies a frame past the snapshot of a reader that is still
    reading. So: checkpoint everything and empty the WAL, start reading, and check the WAL
    is still empty — then our snapshot is the file itself, and stays so while writers go
    on appending to the WAL. The file can then be copied (in the kernel) or compressed
    in one pass, instead of being rebuilt page by page first.
    """
    connection = sqlite3.connect(live, timeout=5, isolation_level=None)
    try:
        connection.execute("PRAGMA trusted_schema = OFF")
        if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            yield None
            return
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        connection.execute("BEGIN")
        connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # reading now
        wal = live.with_name(live.name + "-wal")
        yield None if busy or (wal.exists() and wal.stat().st_size) else connection
    finally:
        connection.close()


def _dump_pinned_file(connection, live, partial, compress):
    counts, version = _counted(connection), _version_read(connection)
    if compress:
        with open(live, "rb") as reader, open(partial, "r+b") as output:
            content = compress_stream(_RollbackJournalHeader(reader), output)
        return new_manifest(partial, ENGINE, version, counts, content=content)
    shutil.copyfile(live, partial)  # in the kernel where it can (copy_file_range)
    _leave_wal_header(partial)
    return new_manifest(partial, ENGINE, version, counts)


def _dump_through_backup_api(database, partial, compress):
    if not compress:
        _snapshot(database, partial)
        return new_manifest(partial, ENGINE, _schema_version(database), row_counts(partial))
    plain = partial.with_name(partial.name + ".plain")
    try:
        create_private(plain)
        _snapshot(database, plain)
        counts = row_counts(plain)
        content = compress_file(plain, partial)
    finally:
        with suppress(FileNotFoundError):
            plain.unlink()
    return new_manifest(partial, ENGINE, _schema_version(database), counts, content=content)


class _RollbackJournalHeader:
    """A reader of a WAL-mode database file that hands out its bytes with the header
    saying "rollback journal" (bytes 18 and 19: 1 instead of 2), as ``PRAGMA
    journal_mode = DELETE`` would leave them: a backup has no WAL beside it."""

    def __init__(self, reader):
        self.reader, self.position = reader, 0

    def read(self, size=-1):
        chunk = self.reader.read(size)
        if self.position == 0 and len(chunk) >= HEADER_BYTES:
            chunk = chunk[:18] + b"\x01\x01" + chunk[20:]
        self.position += len(chunk)
        return chunk


def check(path, manifest, url=None):
    """Return the problems of an SQLite backup's content (empty: sound)."""
    try:
        with readable_copy(path, manifest) as database_file:
            return content_problems(database_file, manifest)
    except BackupError as exc:
        return [str(exc)]


def restore(url, path, manifest, safety_folder, take_safety, timeout=30):
    """Replace the SQLite database of ``url`` with a backup, atomically; return the
    safety backup of the replaced database (None when there was none).

    The live file first leaves WAL mode (so no ``-wal``/``-shm`` of the old database can
    be replayed onto the new one) and is locked exclusively. The copy is built beside it
    (0600) and checked against the manifest, then renamed over it. Killed at any moment,
    this leaves either the old database or the new one, never a mix.

    The replaced file itself becomes the safety backup, through a hard link made just
    before the rename (no copy), when the backups folder is on the same file system;
    otherwise ``take_safety()`` makes a regular backup first.
    """
    live, folder = live_file(url), Path(safety_folder)
    _remove_stale_restores(live)
    folder.mkdir(parents=True, exist_ok=True)
    link_safety = live.exists() and _same_file_system(folder, live.parent)
    safety = take_safety() if live.exists() and not link_safety else None
    # The live file is held from before the copy until after the rename: nobody can
    # write into the old database once its safety backup is being read.
    with _held_exclusively(live, timeout), finished_file(live) as staged:
        linked = _link_for_safety(live, folder) if link_safety else None
        try:
            copied, replaced = _copied_and_read(path, manifest, staged, linked and linked[0])
            _check_copy(path, manifest, staged, copied)
        except BaseException:
            if linked:
                linked[0].unlink(missing_ok=True)
            raise
    return _finish_safety(*linked, replaced) if linked else safety


def _copied_and_read(path, manifest, staged, replaced):
    """Write the backup's content into ``staged`` and read the ``replaced`` file (if any),
    side by side (the copy runs in the kernel, hashing lets other threads run); return
    the (SHA-256, size) of the content written and of the replaced file."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        if manifest.get("compressed"):
            content = pool.submit(_decompressed, path, staged)
        else:
            pool.submit(shutil.copyfile, path, staged)  # copy_file_range where it can
            content = pool.submit(file_digest, path)
        old = pool.submit(file_digest, replaced) if replaced else None
        return content.result(), old.result() if old else None


def _check_copy(path, manifest, staged, digest):
    """Raise BackupError unless the staged copy is the manifest's content, row for row."""
    if digest != (manifest["content_sha256"], manifest["content_size"]):
        raise BackupError(f"{path}: the copy does not match the manifest; nothing restored")
    problems = count_problems(row_counts(staged), manifest)
    if problems:
        raise BackupError(f"{path}: {problems[0]}; nothing restored")


def _link_for_safety(live, folder):
    """Give the live file a second, private name in the backups folder; return
    (that name, the backup's final name)."""
    target = folder / backup_name(ENGINE, compress=False)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    os.link(live, partial)
    os.chmod(partial, 0o600)
    return partial, target


def _finish_safety(partial, target, digest):
    version, counts = _file_schema_version(partial), row_counts(partial)
    manifest = new_manifest(partial, ENGINE, version, counts, digest=digest)
    fsync(partial)
    os.replace(partial, target)
    write_manifest(target, manifest)
    return BackupInfo(target, manifest)


def _same_file_system(folder, other):
    return os.stat(folder).st_dev == os.stat(other).st_dev


@contextmanager
def readable_copy(path, manifest):
    """Yield an SQLite file holding the backup's content: the file itself, or a
    private decompressed copy that is deleted afterwards."""
    if not manifest.get("compressed"):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="clonegallery-verify-") as folder:
        plain = Path(folder) / "backup.db"
        create_private(plain)
        decompress_file(path, plain)
        yield plain


def content_problems(path, manifest):
    """Check an SQLite file: integrity, foreign keys, our tables, row counts."""
    try:
        with closing(_open_untrusted(path)) as connection:
            integrity = [row[0] for row in connection.execute("PRAGMA integrity_check")]
            if integrity != ["ok"]:
                return [f"integrity check failed: {integrity[0]}"]
            if connection.execute("PRAGMA foreign_key_check").fetchone():
                return ["a row breaks a foreign key"]
    except sqlite3.DatabaseError as exc:
        return [f"not a readable SQLite database ({exc})"]
    counts = row_counts(path)
    missing = [t for t in CLONEGALLERY_TABLES if t not in counts]
    if missing:
        return [f"not a CloneGallery database (no {', '.join(missing)} table)"]
    return count_problems(counts, manifest)


def count_problems(counts, manifest):
    """Return one line per table whose row count differs from the manifest's."""
    expected = manifest.get("row_counts", {})
    return [
        f"{table}: {counts.get(table)} rows, the manifest says {expected.get(table)}"
        for table in sorted(set(counts) | set(expected))
        if counts.get(table) != expected.get(table)
    ]


def row_counts(path):
    """Return {table: rows} of an SQLite file, opened read-only."""
    with closing(_open_untrusted(path)) as connection:
        return _counted(connection)


def _counted(connection):
    tables = [
        name
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    return {
        table: connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        for table in tables
    }


def _version_read(connection):
    """Return the latest version in the history, read through a sqlite3 connection."""
    try:
        versions = [v for (v,) in connection.execute("SELECT version FROM migrations")]
    except sqlite3.OperationalError:  # no history table
        return None
    return max(versions, key=int) if versions else None


def _snapshot(database, target):
    with closing(sqlite3.connect(target)) as copy:
        database.connection().backup(copy, pages=-1)  # one step: see the module's docstring
    _leave_wal_header(target)


def _leave_wal_header(path):
    # A backup is a single self-contained file: no WAL beside it.
    with closing(sqlite3.connect(path)) as copy:
        copy.execute("PRAGMA journal_mode = DELETE")


def _schema_version(database):
    return _version_read(database.connection())


def _file_schema_version(path):
    with closing(_open_untrusted(path)) as connection:
        return _version_read(connection)


def _open_untrusted(path):
    # A backup file is untrusted input: read-only, and no schema-defined code runs.
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    connection.execute("PRAGMA trusted_schema = OFF")
    return connection


def _decompressed(path, staged):
    """Decompress the backup into ``staged``; return the (SHA-256, size) written."""
    try:
        return decompress_file(path, staged)
    except BackupError as exc:
        raise BackupError(f"{path}: {exc}; nothing restored") from exc


def _remove_stale_restores(live):
    for leftover in live.parent.glob(f".{live.name}.partial-*"):
        leftover.unlink(missing_ok=True)


@contextmanager
def _held_exclusively(live, timeout):
    """Hold the live database out of WAL mode and exclusively locked (no reader, no
    writer) for the duration of the block; a database that does not exist is not held.

    Switching to DELETE mode checkpoints the WAL and removes -wal and -shm (so none of
    the old database's can be replayed onto the new one); SQLite allows it only while no
    other connection has the database open. The exclusive transaction then keeps others
    out until the block ends.
    """
    if not live.exists():
        yield
        return
    with closing(sqlite3.connect(live, timeout=min(timeout, 5), isolation_level=None)) as guard:
        retry_until(
            lambda: _locked_out_of_wal(guard),
            timeout,
            interval=0.2,
            timed_out=lambda _: BackupError(
                f"{live} is in use by another process (it holds the database for more "
                f"than {timeout} s); stop it and retry; nothing restored"
            ),
        )
        try:
            yield
        finally:
            guard.execute("ROLLBACK")


def _locked_out_of_wal(guard):
    try:
        if guard.execute("PRAGMA journal_mode = DELETE").fetchone()[0] != "delete":
            return False
        guard.execute("BEGIN EXCLUSIVE")
    except sqlite3.OperationalError:
        return False
    if guard.execute("PRAGMA journal_mode").fetchone()[0] == "delete":
        return True
    guard.execute("ROLLBACK")  # someone switched it back to WAL in between
    return False
