"""SQLite backups: online-backup snapshots, checked read-only, restored by one rename.

A backup of an SQLite database is itself an SQLite database (``sqlite3 FILE`` opens
it), or that file zstd-compressed. SQLite's online backup API copies every page in one
step, inside one read transaction: writers carry on (WAL mode) and the copy is
consistent. A stepped backup (a few pages at a time) would restart from scratch each
time a writer commits, and might never finish under a busy writer.
"""

import os
import sqlite3
import tempfile
import time
from contextlib import closing, contextmanager, suppress
from pathlib import Path

import peewee

from db.backups.files import (
    compress_file,
    copy_file,
    create_private,
    decompress_file,
    finished_file,
    fsync,
)
from db.backups.manifest import BackupInfo, backup_name, new_manifest, write_manifest
from db.engines.sqlite import sqlite_path
from db.errors import BackupError
from db.history import History

ENGINE = "sqlite"
CLONEGALLERY_TABLES = ("users", "images", "tags", "albums", "migrations")


def live_file(url):
    return Path(sqlite_path(url)).resolve()


def dump(database, url, partial, compress):
    """Snapshot the database into the file ``partial``; return its manifest."""
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

    The copy is built beside the live file (0600) and checked against the manifest on
    the way, then renamed over the live file while no other connection uses it, after
    the live file left WAL mode (so no ``-wal``/``-shm`` of the old database can be
    replayed onto the new one). Killed at any moment, this leaves either the old
    database or the new one, never a mix.

    The replaced file itself becomes the safety backup, through a hard link made just
    before the rename (no copy), when the backups folder is on the same file system;
    otherwise ``take_safety()`` makes a regular backup first.
    """
    live = live_file(url)
    _remove_stale_restores(live)
    Path(safety_folder).mkdir(parents=True, exist_ok=True)
    link_safety = live.exists() and _same_file_system(safety_folder, live.parent)
    safety = take_safety() if live.exists() and not link_safety else None
    expected = (manifest["content_sha256"], manifest["content_size"])
    with finished_file(live) as staged:  # renamed over the live file once the block ends
        if _unpacked(path, manifest, staged) != expected:
            raise BackupError(f"{path}: the copy does not match the manifest; nothing restored")
        problems = count_problems(row_counts(staged), manifest)
        if problems:
            raise BackupError(f"{path}: {problems[0]}; nothing restored")
        if live.exists():
            _leave_wal_mode(live, timeout)
        if link_safety:
            safety_files = _link_for_safety(live, Path(safety_folder))
    return _finish_safety(*safety_files) if link_safety else safety


def _link_for_safety(live, folder):
    """Give the live file a second, private name in the backups folder; return
    (that name, the backup's final name)."""
    target = folder / backup_name(ENGINE, compress=False)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    os.link(live, partial)
    os.chmod(partial, 0o600)
    return partial, target


def _finish_safety(partial, target):
    manifest = new_manifest(partial, ENGINE, _file_schema_version(partial), row_counts(partial))
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


def _snapshot(database, target):
    with closing(sqlite3.connect(target)) as copy:
        database.connection().backup(copy, pages=-1)  # one step: see the module's docstring
        # A backup is a single self-contained file: no WAL beside it.
        copy.execute("PRAGMA journal_mode = DELETE")


def _schema_version(database):
    versions = sorted(History(database).applied(), key=int)
    return versions[-1] if versions else None


def _file_schema_version(path):
    database = peewee.SqliteDatabase(f"file:{path}?mode=ro", uri=True)
    try:
        return _schema_version(database)
    finally:
        database.close()


def _open_untrusted(path):
    # A backup file is untrusted input: read-only, and no schema-defined code runs.
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    connection.execute("PRAGMA trusted_schema = OFF")
    return connection


def _unpacked(path, manifest, staged):
    """Write the backup's content into ``staged``; return its (SHA-256, size)."""
    if not manifest.get("compressed"):
        return copy_file(path, staged)
    try:
        return decompress_file(path, staged)
    except BackupError as exc:
        raise BackupError(f"{path}: {exc}; nothing restored") from exc


def _remove_stale_restores(live):
    for leftover in live.parent.glob(f".{live.name}.partial-*"):
        leftover.unlink(missing_ok=True)


def _leave_wal_mode(live, timeout):
    # Switching to DELETE mode checkpoints the WAL and removes -wal and -shm; SQLite
    # allows it only while no other connection has the database open, so it is also
    # the guarantee that nobody is reading or writing the file we replace.
    deadline = time.monotonic() + timeout
    while True:
        try:
            with closing(sqlite3.connect(live, timeout=min(timeout, 5))) as connection:
                mode = connection.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
            if mode == "delete":
                return
        except sqlite3.OperationalError:
            pass
        if time.monotonic() > deadline:
            raise BackupError(
                f"{live} is in use by another process (it holds the database for more than "
                f"{timeout} s); stop it and retry; nothing restored"
            )
        time.sleep(0.2)
