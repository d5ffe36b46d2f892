"""Backups you can trust: consistent snapshots with a manifest, verified before trusted.

    info = create_backup(database, folder=Path("backups"))      # BackupInfo(path, manifest)
    verify_backup(info.path)                                    # [] when sound, else problems
    list_backups(Path("backups"))                               # [BackupInfo, ...], newest first
    prune_backups(Path("backups"), keep=7)                      # paths deleted
    manifest = check_restorable(info.path, latest_known_version="003")
    restore_backup("clonegallery.db", info.path, manifest)

A backup of an SQLite database is itself an SQLite database (``sqlite3 FILE`` opens
it), taken online with ``VACUUM INTO``: one read transaction, so writers carry on and
the copy is consistent. Beside it, ``FILE.json`` is its manifest: engine, schema
version (the latest applied migration), row counts per table, the SHA-256 and size of
the file, when and by which version of this tool it was made, and when it was verified.

Files are created 0600 before anything is written into them, under a temporary name
that is renamed only once complete, so a crash or a full disk never leaves a file that
looks complete but is not. Retention only ever deletes this tool's backups (those with
a manifest), only after the new backup verified, and never the newest verified one.
"""

import datetime
import hashlib
import json
import os
import sqlite3
import time
from contextlib import closing, suppress
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import peewee

from db.engines import engine_for
from db.errors import BackupError, ConfigError
from db.history import History

TOOL = "clonegallery-db"
MANIFEST_FORMAT = 1
MANIFEST_SUFFIX = ".json"
CHUNK_BYTES = 1 << 20
CLONEGALLERY_TABLES = ("users", "images", "tags", "albums", "migrations")


@dataclass(frozen=True)
class BackupInfo:
    """A backup file and its manifest (None when the manifest is missing or unreadable)."""

    path: Path
    manifest: dict | None

    @property
    def verified(self):
        return bool(self.manifest and self.manifest.get("verified_at"))


def create_backup(database, folder=Path("backups"), output=None):
    """Take a consistent snapshot of ``database``; return its BackupInfo."""
    engine = engine_for(database)
    if engine.name != "SQLite":
        raise ConfigError(
            f"db.backup supports SQLite so far; {engine.name} backups (pg_dump / "
            "mariadb-dump) are not built yet"
        )
    live = Path(database.database).resolve()
    target = _target_path(live, Path(folder), output)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        _create_private(partial)
        database.execute_sql("VACUUM INTO ?", (str(partial),))
        _finish_sqlite_file(partial)
        manifest = _manifest_for(partial, database)
        _fsync(partial)
        os.replace(partial, target)
        _write_manifest(target, manifest)
    except (OSError, peewee.DatabaseError) as exc:
        raise BackupError(f"backup to {target} failed: {exc}; no backup was written") from exc
    finally:
        with suppress(FileNotFoundError):
            partial.unlink()
    return BackupInfo(target, manifest)


def verify_backup(path):
    """Check a backup against its manifest; return the problems found (empty: sound)."""
    path = Path(path)
    if not path.is_file():
        return [f"{path}: no such file"]
    manifest = read_manifest(path)
    if manifest is None:
        return [f"{path}: no readable manifest ({manifest_path(path).name})"]
    problems = []
    digest, size = file_digest(path)
    if size != manifest.get("size") or digest != manifest.get("sha256"):
        problems.append(f"{path}: checksum differs from the manifest (damaged or tampered)")
    problems += [f"{path}: {problem}" for problem in _check_sqlite(path, manifest)]
    return problems


def mark_verified(info):
    """Record in the manifest that the backup verified now; return the new BackupInfo."""
    manifest = {**info.manifest, "verified_at": _now()}
    _write_manifest(info.path, manifest)
    return BackupInfo(info.path, manifest)


def list_backups(folder):
    """Return the backups in ``folder`` (files with or without a manifest), newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = [
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix == ".db" and not path.name.startswith(".")
    ]
    infos = [BackupInfo(path, read_manifest(path)) for path in files]
    return sorted(infos, key=_created_at, reverse=True)


def prune_backups(folder, keep):
    """Delete this tool's oldest backups beyond ``keep``; never the newest verified one."""
    if keep < 1:
        raise ConfigError(f"--keep must be 1 or more, not {keep}")
    ours = [info for info in list_backups(folder) if _made_by_us(info)]
    newest_verified = next((info for info in ours if info.verified), None)
    deleted = []
    for info in ours[keep:]:
        if info is newest_verified:
            continue
        info.path.unlink()
        manifest_path(info.path).unlink(missing_ok=True)
        deleted.append(info.path)
    return deleted


def manifest_path(path):
    return Path(path).with_name(Path(path).name + MANIFEST_SUFFIX)


def read_manifest(path):
    try:
        manifest = json.loads(manifest_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def file_digest(path):
    """Return (SHA-256 hex digest, size) of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _target_path(live, folder, output):
    if output is None:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        return (folder / f"clonegallery-{stamp}.db").resolve()
    target = Path(output).expanduser().resolve()
    if not target.parent.is_dir():
        raise ConfigError(f"--output {output}: folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise ConfigError(f"--output {output}: folder {target.parent} is not writable")
    if target == live:
        raise ConfigError(f"--output {output} is the live database itself; choose another path")
    if target.exists():
        raise ConfigError(f"--output {output} already exists; choose a new path")
    return target


def _create_private(path):
    # The file exists, empty and 0600, before SQLite writes a byte into it.
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _finish_sqlite_file(path):
    # A backup is a single self-contained file: no WAL beside it.
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA journal_mode = DELETE")


def _manifest_for(path, database):
    digest, size = file_digest(path)
    versions = sorted(History(database).applied(), key=int)
    return {
        "format": MANIFEST_FORMAT,
        "tool": TOOL,
        "tool_version": _tool_version(),
        "engine": "sqlite",
        "created_at": _now(),
        "schema_version": versions[-1] if versions else None,
        "row_counts": _row_counts(path),
        "sha256": digest,
        "size": size,
        "compressed": False,
        "verified_at": None,
    }


def _row_counts(path):
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


def _check_sqlite(path, manifest):
    try:
        with closing(_open_untrusted(path)) as connection:
            integrity = [row[0] for row in connection.execute("PRAGMA integrity_check")]
            if integrity != ["ok"]:
                return [f"integrity check failed: {integrity[0]}"]
            if connection.execute("PRAGMA foreign_key_check").fetchone():
                return ["a row breaks a foreign key"]
    except sqlite3.DatabaseError as exc:
        return [f"not a readable SQLite database ({exc})"]
    counts = _row_counts(path)
    missing = [t for t in CLONEGALLERY_TABLES if t not in counts]
    if missing:
        return [f"not a CloneGallery database (no {', '.join(missing)} table)"]
    expected = manifest.get("row_counts", {})
    return [
        f"{table}: {counts.get(table)} rows, the manifest says {expected.get(table)}"
        for table in sorted(set(counts) | set(expected))
        if counts.get(table) != expected.get(table)
    ]


def _open_untrusted(path):
    # A backup file is untrusted input: read-only, and no schema-defined code runs.
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    connection.execute("PRAGMA trusted_schema = OFF")
    return connection


def _write_manifest(path, manifest):
    target = manifest_path(path)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        descriptor = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump(manifest, stream, indent=2, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, target)
    finally:
        with suppress(FileNotFoundError):
            partial.unlink()


def _fsync(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _made_by_us(info):
    return bool(info.manifest and info.manifest.get("tool") == TOOL)


def _created_at(info):
    if info.manifest and info.manifest.get("created_at"):
        return info.manifest["created_at"]
    moment = datetime.datetime.fromtimestamp(info.path.stat().st_mtime, datetime.timezone.utc)
    return moment.isoformat()


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _tool_version():
    try:
        return metadata.version(TOOL)
    except metadata.PackageNotFoundError:
        return "unknown"


def restore_backup(database_path, backup_path, manifest, timeout=30):
    """Replace the SQLite database at ``database_path`` with a verified backup, atomically.

    ``manifest`` comes from ``check_restorable`` (call it before touching anything else).
    The copy is built beside the live file (0600), then renamed over it while no other connection
    uses the database, after the live file left WAL mode (so no ``-wal``/``-shm`` of the
    old database can be replayed onto the new one). Killed at any moment, this leaves
    either the old database or the new one, never a mix.
    """
    backup_path, live = Path(backup_path), Path(database_path).resolve()
    staged = live.with_name(f".{live.name}.restoring-{os.getpid()}")
    _remove_stale_restores(live)
    try:
        _create_private(staged)
        _copy_file(backup_path, staged)
        if file_digest(staged) != (manifest["sha256"], manifest["size"]):
            raise BackupError(
                f"{backup_path}: the copy does not match the manifest; nothing restored"
            )
        _fsync(staged)
        if live.exists():
            _leave_wal_mode(live, timeout)
        os.replace(staged, live)
        _fsync_folder(live.parent)
    finally:
        with suppress(FileNotFoundError):
            staged.unlink()
    return manifest


def check_restorable(path, latest_known_version):
    """Verify a backup and check its schema is not newer than the code's; return its
    manifest, or raise BackupError saying why it cannot be restored."""
    problems = verify_backup(path)
    if problems:
        raise BackupError(f"{problems[0]}; nothing restored")
    manifest = read_manifest(path)
    version = manifest.get("schema_version")
    if version and latest_known_version and int(version) > int(latest_known_version):
        raise BackupError(
            f"{path}: its schema version {version} is newer than this code's migrations "
            f"(latest {latest_known_version}); upgrade the code first; nothing restored"
        )
    return manifest


def _remove_stale_restores(live):
    for leftover in live.parent.glob(f".{live.name}.restoring-*"):
        leftover.unlink(missing_ok=True)


def _copy_file(source, target):
    with open(source, "rb") as reader, open(target, "r+b") as writer:
        while chunk := reader.read(CHUNK_BYTES):
            writer.write(chunk)
        writer.truncate()


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


def _fsync_folder(folder):
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
