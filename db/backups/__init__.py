"""Backups you can trust: consistent snapshots with a manifest, verified before trusted.

    info = create_backup(database, url, folder=Path("backups"))   # BackupInfo(path, manifest)
    verify_backup(info.path, url)            # [] when sound, else the problems found
    list_backups(Path("backups"))            # [BackupInfo, ...], newest first
    prune_backups(Path("backups"), keep=7)   # paths deleted
    manifest = check_restorable(info.path, url, latest_known_version="003")
    restore_backup(url, info.path, manifest, safety_folder=Path("backups"))

Each engine backs up with its own means (``sqlite.py``: the online backup API;
``postgres.py``: ``pg_dump``/``pg_restore``; ``mysql.py``: ``mariadb-dump``/``mariadb``);
what they share is here and in ``manifest.py`` (the JSON sidecar that makes a file a
backup) and ``files.py`` (private files renamed into place only once complete, zstd).

Retention only ever deletes this tool's backups (those with a manifest), only after
the new backup verified, and never the newest verified one.
"""

import os
import sqlite3
from pathlib import Path

import peewee

from db.backups import sqlite
from db.backups.files import file_digest, finished_file
from db.backups.manifest import (
    BackupInfo,
    backup_name,
    checksum_problems,
    list_backups,
    manifest_path,
    mark_verified,
    prune_backups,
    read_manifest,
    write_manifest,
)
from db.backups.mysql import MySQLBackups, finish_interrupted_swap
from db.backups.postgres import PostgresBackups
from db.config import scheme_of
from db.engines import database_exists, engine_for, open_database
from db.errors import BackupError, ConfigError, ToolFailed

__all__ = [
    "BackupInfo",
    "check_restorable",
    "create_backup",
    "file_digest",
    "list_backups",
    "manifest_path",
    "mark_verified",
    "prune_backups",
    "read_manifest",
    "restore_backup",
    "verify_backup",
]

FORMATS = {"sqlite": sqlite, "postgresql": PostgresBackups(), "mysql": MySQLBackups()}
ENGINE_OF_SCHEME = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}


def engine_of(url):
    """Return the manifest's name of the URL's engine: sqlite, postgresql or mysql."""
    scheme = scheme_of(url).split("+")[0]
    return ENGINE_OF_SCHEME.get(scheme, scheme)


def create_backup(database, url, folder=Path("backups"), output=None, compress=False):
    """Take a consistent snapshot of the open ``database`` (whose URL is ``url``);
    return its BackupInfo."""
    engine = engine_of(url)
    live = sqlite.live_file(url) if engine == "sqlite" else None
    target = _target_path(Path(folder), output, backup_name(engine, compress), live)
    try:
        with finished_file(target) as partial:
            manifest = FORMATS[engine].dump(database, url, partial, compress)
        write_manifest(target, manifest)
    except (OSError, sqlite3.Error, peewee.DatabaseError, BackupError, ToolFailed) as exc:
        raise BackupError(f"backup to {target} failed: {exc}; no backup was written") from exc
    return BackupInfo(target, manifest)


def verify_backup(path, url=None):
    """Check a backup against its manifest; return the problems found (empty: sound).

    Server backups are loaded into a scratch database on the server of ``url``.
    """
    path = Path(path)
    manifest, problems = _manifest_problems(path)
    if not problems:
        problems = checksum_problems(path, manifest)
    if problems:
        return problems
    engine = manifest.get("engine")
    if engine not in FORMATS:
        return [f"{path}: the manifest names no known engine ({engine!r})"]
    return [f"{path}: {problem}" for problem in FORMATS[engine].check(path, manifest, url)]


def check_restorable(path, url, latest_known_version):
    """Check that a backup may replace the database of ``url``; return its manifest, or
    raise BackupError saying why not.

    An SQLite backup that never verified is verified in full here. One that did is
    checked as it is copied (see sqlite.restore): the same SHA-256 means the very bytes
    that verified, so checking them twice would only double the reading. A server
    backup's content is checked when it is loaded into a fresh database, before the
    swap (see restore_backup).
    """
    path = Path(path)
    manifest, problems = _manifest_problems(path)
    engine = engine_of(url)
    if not problems and manifest.get("engine") != engine:
        problems = [
            f"{path}: a {manifest.get('engine')} backup cannot be restored into a {engine} "
            "database (db.transfer copies between engines)"
        ]
    if not problems and engine != "sqlite":
        problems = checksum_problems(path, manifest)
    if not problems and engine == "sqlite" and not manifest.get("verified_at"):
        problems = verify_backup(path, url)
    if problems:
        raise BackupError(f"{problems[0]}; nothing restored")
    version = manifest.get("schema_version")
    if version and latest_known_version and int(version) > int(latest_known_version):
        raise BackupError(
            f"{path}: its schema version {version} is newer than this code's migrations "
            f"(latest {latest_known_version}); upgrade the code first; nothing restored"
        )
    return manifest


def restore_backup(url, path, manifest, safety_folder, timeout=30):
    """Replace the database of ``url`` with the backup ``path`` (checked by
    check_restorable), so that it holds either the old or the new data, never a mix;
    return the safety backup taken of the replaced database (None when it did not exist)."""

    def take_safety():
        if not database_exists(url):
            return None
        database = open_database(url, create=False)
        try:
            return create_backup(database, url, safety_folder)
        finally:
            database.close()

    return FORMATS[manifest["engine"]].restore(
        url, Path(path), manifest, safety_folder, take_safety, timeout=timeout
    )


def finish_interrupted_restore(database):
    """Finish a restore killed in the middle of its swap, where that can happen (MySQL:
    see mysql.py); return whether there was one."""
    if engine_for(database).name == "MySQL":
        return finish_interrupted_swap(database)
    return False


def _manifest_problems(path):
    """Return (manifest, problems): whether the file and its manifest are there."""
    if not path.is_file():
        return None, [f"{path}: no such file"]
    manifest = read_manifest(path)
    if manifest is None:
        return None, [f"{path}: no readable manifest ({manifest_path(path).name})"]
    return manifest, []


def _target_path(folder, output, name, live):
    if output is None:
        folder.mkdir(parents=True, exist_ok=True)
        return (folder / name).resolve()
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
