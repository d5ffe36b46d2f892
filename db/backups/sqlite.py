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

import errno
import os
import sqlite3
import stat
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import peewee

from db.backups.files import (
    compress_file,
    compress_stream,
    create_private,
    decompress_file,
    fsync,
    fsync_folder,
    hashed_copy,
    remove_leftovers,
)
from db.backups.manifest import BackupInfo, backup_name, new_manifest, write_manifest
from db.backups.owner import Owner
from db.engines.base import retry_until
from db.engines.sqlite import sqlite_path
from db.errors import BackupError

ENGINE = "sqlite"
CLONEGALLERY_TABLES = ("users", "images", "tags", "albums", "migrations")
HEADER_BYTES = 100
SQLITE_HEADER = b"SQLite format 3\x00"
# The header's file format versions (bytes 18 and 19): 1 for a rollback journal, 2 for WAL.
ROLLBACK_JOURNAL_HEADER = (18, b"\x01\x01")
WAL_HEADER = (18, b"\x02\x02")


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
    if compress:
        counts, version = _counted(connection), _version_read(connection)
        with open(live, "rb") as reader, open(partial, "r+b") as output:
            content = compress_stream(_RollbackJournalHeader(reader), output)
        return new_manifest(partial, ENGINE, version, counts, content=content)
    # Copied in the kernel and hashed as written, in one pass; counted meanwhile.
    with hashed_copy(live, partial, patches=[ROLLBACK_JOURNAL_HEADER]) as digest:
        counts, version = _counted(connection), _version_read(connection)
    return new_manifest(partial, ENGINE, version, counts, digest=digest.result())


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
            offset, flags = ROLLBACK_JOURNAL_HEADER
            chunk = chunk[:offset] + flags + chunk[offset + len(flags) :]
        self.position += len(chunk)
        return chunk


def check(path, manifest, url=None):
    """Return the problems of an SQLite backup's content (empty: sound)."""
    try:
        with readable_copy(path, manifest) as database_file:
            return content_problems(database_file, manifest)
    except BackupError as exc:
        return [str(exc)]


def restore(url, path, manifest, safety_folder, take_safety, timeout=30, adopt=None):
    """Replace the SQLite database of ``url`` with a backup, atomically; return the
    safety backup of the replaced database (None when there was none).

    Nothing touches the live file until the backup is known good: the copy is built
    beside it (0600, in one pass that hashes what it writes) and checked against the
    manifest (checksum, SQLite header, schema version, row counts). Only then is the
    live file taken out of WAL mode (so no ``-wal``/``-shm`` of the old database can be
    replayed onto the new one) and locked exclusively, and the copy renamed over it.
    Killed at any moment, this leaves either the old database or the new one, never a
    mix; refused or failed, it leaves the live file as it was (a failure once it is
    held puts its journal mode back).

    The replaced file itself becomes the safety backup, through a hard link made while
    it is held (no copy), when the backups folder can link to it; otherwise
    ``take_safety()`` makes a regular backup first. ``adopt(database)``, when given, is
    run on the checked copy (a peewee Database) before it replaces the live one.
    """
    live, folder = live_file(url), Path(safety_folder)
    remove_leftovers(live.parent)
    staged = live.with_name(f".{live.name}.partial-{os.getpid()}")
    try:
        _stage(path, manifest, staged)
        if adopt is not None:
            _adopted(staged, adopt)
        prefix = Owner.at(url).file_prefix()
        return _swap_in(path, staged, live, folder, take_safety, timeout, prefix)
    finally:
        staged.unlink(missing_ok=True)


def _stage(path, manifest, staged):
    """Build the backup's content in ``staged`` and check it; raise BackupError (saying
    nothing was restored) when it cannot be written or is not what the manifest says."""
    try:
        create_private(staged)
        if manifest.get("compressed"):
            digest = _decompressed(path, staged)
            content = _read_content(staged)
        else:
            with hashed_copy(path, staged) as digest:
                content = _read_content(staged)  # while the last chunks are hashed
            digest = digest.result()
    except OSError as exc:
        raise BackupError(
            f"{path}: could not copy it to {staged.parent} ({_reason(exc)}); nothing restored"
        ) from exc
    problems = _staged_problems(manifest, digest, *content)
    if problems:
        raise BackupError(f"{path}: {problems[0]}; nothing restored")


def _reason(exc):
    """Return what went wrong, in words: the OS's (or SQLite's) message."""
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device"
    return (getattr(exc, "strerror", None) or str(exc)).lower()


def _read_content(path):
    """Return (why it cannot be read, or None; its row counts; its schema version) of
    an SQLite file, read as untrusted input."""
    problem = header_problem(path)
    if problem:
        return problem, None, None
    try:
        with closing(_open_untrusted(path)) as connection:
            return None, _counted(connection), _version_read(connection)
    except sqlite3.DatabaseError as exc:
        return f"not a readable SQLite database ({exc})", None, None


def _staged_problems(manifest, digest, unreadable, counts, version):
    """Return the problems of the copy of a backup: the very bytes its manifest
    describes (the same SHA-256 as when it verified), read as they are."""
    if digest != (manifest.get("content_sha256"), manifest.get("content_size")):
        return ["the copy does not match the manifest's checksum (damaged or tampered)"]
    if unreadable:
        return [unreadable]
    return claim_problems(counts, version, manifest)


def _adopted(staged, adopt):
    """Run ``adopt`` on the staged copy, opened plainly (it stays a single file in
    rollback-journal mode, as the swap expects)."""
    database = peewee.SqliteDatabase(str(staged))
    try:
        adopt(database)
    finally:
        database.close()


def _swap_in(path, staged, live, folder, take_safety, timeout, prefix):
    """Rename the checked copy ``staged`` of the backup ``path`` over ``live``; return
    the safety backup."""
    if not live.exists():
        _renamed_durably(staged, live)
        return None
    _take_permissions(staged, live)
    folder.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder)
    linkable = _can_link(staged, folder)
    safety = None if linkable else take_safety()
    try:
        swapped = _swapped_while_held(staged, live, folder if linkable else None, timeout, prefix)
    except (OSError, sqlite3.Error) as exc:
        raise BackupError(
            f"{live} could not be replaced ({_reason(exc)}); nothing restored"
        ) from exc
    if not linkable:
        return safety
    link, target, *described = swapped
    try:
        # Only now, when the live name is the new file, may the old one become private.
        os.chmod(link, 0o600)
        return _finish_safety(link, target, *described)
    except OSError as exc:
        raise BackupError(
            f"{path} was restored, but the safety backup of the replaced database could "
            f"not be finished ({_reason(exc)}): it is {target}"
        ) from exc


def _swapped_while_held(staged, live, folder, timeout, prefix):
    """Rename ``staged`` over ``live`` while holding it; with a ``folder``, link the
    replaced file into it first and return (that link, the safety backup's final name,
    its schema version and row counts).

    The live file is held from before the safety link until after the rename: nobody
    writes into the old database once it is the safety backup. It is read through a
    descriptor opened before the hold and closed after it: closing any descriptor of a
    file drops every POSIX lock this process holds on it, the hold's included.
    """
    with open(live, "rb", buffering=0) as replaced, _held_exclusively(live, timeout) as held:
        if held.journal_mode == "wal":
            _mark_wal(staged)  # the new database keeps the old one's journal mode
        if folder is None:
            _renamed_durably(staged, live)
            return None
        if os.fstat(replaced.fileno()).st_ino != os.stat(live).st_ino:
            raise BackupError(f"{live} was replaced by another process meanwhile; nothing restored")
        with _linked_for_safety(live, folder, prefix) as (link, target):
            # The copy reaches the disk while the replaced file is read for its manifest.
            with ThreadPoolExecutor(max_workers=1) as pool:
                synced = pool.submit(fsync, staged)
                described = _described(held.connection, replaced)
                synced.result()
            os.replace(staged, live)
            fsync_folder(live.parent)
    return link, target, *described


def _renamed_durably(staged, live):
    fsync(staged)
    os.replace(staged, live)
    fsync_folder(live.parent)


def _take_permissions(staged, live):
    """Give the copy the live file's mode (and owner, where allowed): the application
    must be able to open the restored database as it opened the old one."""
    status = os.stat(live)
    os.chmod(staged, stat.S_IMODE(status.st_mode))
    with suppress(PermissionError):
        os.chown(staged, status.st_uid, status.st_gid)


def _mark_wal(path):
    """Set an SQLite file's header to WAL mode, as an idle WAL database that was closed
    cleanly has it."""
    offset, flags = WAL_HEADER
    with open(path, "r+b") as stream:
        stream.seek(offset)
        stream.write(flags)


def _can_link(staged, folder):
    """Return whether files beside the live database can be hard-linked into ``folder``
    (tried with the staged copy: the same file system is not enough, a bind mount of
    it refuses)."""
    probe = folder / f"{staged.name}.probe"
    try:
        os.link(staged, probe)
    except OSError:
        return False
    probe.unlink()
    return True


@contextmanager
def _linked_for_safety(live, folder, prefix):
    """Give the held live file a second name in the backups folder for the block; yield
    (that name, the safety backup's final name). The name goes again if the block fails."""
    target = folder / backup_name(ENGINE, compress=False, prefix=prefix)
    link = target.with_name(f".{target.name}.partial-{os.getpid()}")
    os.link(live, link)
    try:
        yield link, target
    except BaseException:
        link.unlink(missing_ok=True)
        raise


def _described(connection, replaced):
    """Return the (schema version, row counts) of the replaced file, read through the
    connection that holds it, once the file is on disk. Its checksum is left to its first
    verification: hashing it here would read a second database as large as the restored
    one, and double the restore's time."""
    os.fsync(replaced.fileno())
    return _version_read(connection), _counted(connection)


def _finish_safety(partial, target, version, counts):
    manifest = new_manifest(partial, ENGINE, version, counts, checksum_deferred=True)
    try:
        write_manifest(target, manifest)  # first: a backup is under its name with its manifest
    finally:
        # The replaced database is kept whatever happens (a partial name is a left-over).
        os.replace(partial, target)
        fsync_folder(target.parent)
    return BackupInfo(target, manifest)


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
    """Check an SQLite file against its manifest: an SQLite file at all, integrity,
    foreign keys, our tables, schema version and row counts read from the file itself."""
    problem = header_problem(path)
    if problem:
        return [problem]
    try:
        with closing(_open_untrusted(path)) as connection:
            integrity = [row[0] for row in connection.execute("PRAGMA integrity_check")]
            if integrity != ["ok"]:
                return [f"integrity check failed: {integrity[0]}"]
            if connection.execute("PRAGMA foreign_key_check").fetchone():
                return ["a row breaks a foreign key"]
            counts, version = _counted(connection), _version_read(connection)
    except sqlite3.DatabaseError as exc:
        return [f"not a readable SQLite database ({exc})"]
    return claim_problems(counts, version, manifest)


def header_problem(path):
    """Return why a file is not an SQLite database, judged by its header (None: it is)."""
    with open(path, "rb") as stream:
        header = stream.read(len(SQLITE_HEADER))
    if header == SQLITE_HEADER:
        return None
    return (
        f"not an SQLite database (it does not start with {SQLITE_HEADER[:-1].decode()!r}), "
        f"the manifest says {ENGINE}"
    )


def claim_problems(counts, version, manifest):
    """Return what the manifest says of a CloneGallery database that the database
    itself (its tables and rows ``counts``, its schema ``version``) contradicts."""
    missing = [t for t in CLONEGALLERY_TABLES if t not in counts]
    if missing:
        return [f"not a CloneGallery database (no {', '.join(missing)} table)"]
    claimed = manifest.get("schema_version")
    if version != claimed:
        return [f"schema version {version} in the backup, the manifest says {claimed}"]
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
        table: connection.execute(f"SELECT COUNT(*) FROM {_quoted(table)}").fetchone()[0]
        for table in tables
    }


def _quoted(name):
    # A backup file is untrusted: its table names may hold quotes.
    return '"' + name.replace('"', '""') + '"'


def _version_read(connection):
    """Return the latest version in the history, read through a sqlite3 connection."""
    try:
        versions = [v for (v,) in connection.execute("SELECT version FROM migrations")]
    except sqlite3.OperationalError:  # no history table
        return None
    return max(versions, key=_version_order) if versions else None


def _version_order(version):
    # An edited file may hold versions that are not numbers: they sort first.
    text = str(version)
    return (text.isdigit(), int(text) if text.isdigit() else 0, text)


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


@dataclass
class _Hold:
    """The connection holding the live database, and its journal mode before."""

    connection: sqlite3.Connection
    journal_mode: str


@contextmanager
def _held_exclusively(live, timeout):
    """Yield a _Hold of the live database out of WAL mode and exclusively locked (no
    reader, no writer) for the duration of the block. A block that fails gets the
    database back in its journal mode.

    Switching to DELETE mode checkpoints the WAL and removes -wal and -shm (so none of
    the old database's can be replayed onto the new one); SQLite allows it only while no
    other connection has the database open. The exclusive transaction then keeps others
    out until the block ends. (After a successful block, the connection holds the old
    file, renamed away: its journal mode stays DELETE, as a backup's.)
    """
    with closing(sqlite3.connect(live, timeout=min(timeout, 5), isolation_level=None)) as guard:
        hold = _Hold(guard, guard.execute("PRAGMA journal_mode").fetchone()[0])
        try:
            retry_until(
                lambda: _locked_out_of_wal(guard),
                timeout,
                interval=0.2,
                timed_out=lambda _: BackupError(
                    f"{live} is in use by another process (it holds the database for "
                    f"more than {timeout} s); stop it and retry; nothing restored"
                ),
            )
            yield hold
        except BaseException:
            _put_back(hold)
            raise
        guard.execute("ROLLBACK")


def _put_back(hold):
    """End the hold and give the database its journal mode back (best effort: the
    failure that got here is the one to report)."""
    with suppress(sqlite3.Error):
        if hold.connection.in_transaction:
            hold.connection.execute("ROLLBACK")
        if hold.journal_mode == "wal":
            hold.connection.execute("PRAGMA journal_mode = WAL")


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
