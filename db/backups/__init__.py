"""Backups you can trust: consistent snapshots with a manifest, verified before trusted.

    info = create_backup(target, folder=Path("backups"))   # an opened db.target.Target
    verify_backup(info.path, url)            # [] when sound, else the problems found
    owner = Owner.known(database, url)       # the database, as manifests name it
    list_backups(Path("backups"), owner)     # its BackupInfos, newest first (None: all)
    prune_backups(Path("backups"), owner, Retention(last=7, daily=7))   # paths deleted
    manifest = check_restorable(info.path, url, latest_known_version="003")
    restore_backup(url, info.path, manifest, safety_folder=Path("backups"))

Each engine backs up with its own means (``sqlite.py``: the online backup API;
``postgres.py``: ``pg_dump``/``pg_restore``; ``mysql.py``: ``mariadb-dump``/``mariadb``);
what they share is here and in ``manifest.py`` (the JSON sidecar that makes a file a
backup) and ``files.py`` (private files renamed into place only once complete, zstd).

Every backup records the database it was taken of (``owner.py``), and the tenant when it
is one (``manifest["tenant"]``; a tenant's backup holds that tenant alone, and its restore
replaces that tenant alone, see postgres.py for the engine where a tenant is a schema of
a shared database). Many databases can
share one backups folder, and each sees only its own backups. Retention only ever
deletes this tool's backups of that database, only after the new backup verified, and
never the newest verified one.
"""

import functools
import os
import sqlite3
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import peewee

from db.backups import encryption, sqlite
from db.backups.files import create_private, file_digest, finished_file, remove_leftovers
from db.backups.manifest import (
    ENCRYPTED_SUFFIX,
    BackupInfo,
    Retention,
    backup_name,
    checksum_problems,
    created_moment,
    list_backups,
    manifest_path,
    mark_verified,
    now_text,
    prune_backups,
    read_manifest,
    with_deferred_checksum,
    write_manifest,
)
from db.backups.mysql import MySQLBackups
from db.backups.owner import Owner, engine_of, manifest_tenant
from db.backups.postgres import PostgresBackups
from db.engines import MySQLEngine, PostgresEngine, SqliteEngine, engine_named
from db.errors import BackupError, ConfigError, ToolFailed
from db.history import DatabaseIdentity
from db.target import Target

__all__ = [
    "BackupInfo",
    "Owner",
    "Retention",
    "check_restorable",
    "create_backup",
    "created_moment",
    "current_owner",
    "file_digest",
    "list_backups",
    "manifest_path",
    "mark_verified",
    "newest_verified",
    "prune_backups",
    "read_manifest",
    "restore_backup",
    "verify_backup",
]


@functools.singledispatch
def backup_format(engine):
    """Return how ``engine``'s databases are dumped, checked and restored: sqlite.py's
    online backup, or the server tools of postgres.py and mysql.py."""
    raise TypeError(f"no backup format for {engine.name}")


@backup_format.register
def _(engine: SqliteEngine):
    return sqlite


@backup_format.register
def _(engine: PostgresEngine):
    return PostgresBackups()


@backup_format.register
def _(engine: MySQLEngine):
    return MySQLBackups()


# The setting that moves the backups folder, for the messages that name it.
FOLDER_SETTING = "INVOKE_DB_BACKUPS (db.backups in invoke.yaml)"


def create_backup(
    source,
    folder=Path("backups"),
    output=None,
    compress=False,
    recipients=None,
    verify=False,
):
    """Take a consistent snapshot of ``source``, an opened db.target.Target,
    compressed and then encrypted to ``recipients`` (see encryption.py) when asked, and
    verified when asked; return its BackupInfo.

    An encrypted backup is verified before it is encrypted, so that the machine that
    makes backups needs no key that can read them: afterwards its checksum proves the
    stored file is still the one that verified."""
    database, url, dumper = source.database, source.url, backup_format(source.engine)
    engine = source.engine.key
    live = sqlite.live_file(url) if engine == "sqlite" else None
    name = backup_name(engine, compress, Owner.at(url).file_prefix(), encrypted=bool(recipients))
    target = _target_path(Path(folder), output, name, live)
    remove_leftovers(target.parent)

    def dump(partial):
        return dumper.dump(database, url, partial, compress)

    def owner():
        # Its first backup gives the database its id, once the backup is made: a backup
        # that fails leaves the database as it was.
        return Owner.of(database, url)

    def verified_dump(partial):
        manifest = dump(partial)
        if manifest.get("verified_at"):  # a MySQL dump is verified as it is made
            return manifest
        found = dumper.check(partial, manifest, url)
        raise_problems([f"{target}: {problem}" for problem in found])
        return {**manifest, "verified_at": now_text()}

    try:
        writer = _encrypted(verified_dump if verify else dump, recipients) if recipients else dump
        info = BackupInfo(target, _written_with_manifest(target, writer, owner))
    except (OSError, sqlite3.Error, peewee.DatabaseError, BackupError, ToolFailed) as exc:
        raise BackupError(f"backup to {target} failed: {exc}; no backup was written") from exc
    if verify and not info.verified:
        raise_problems(verify_backup(target, url))
        info = mark_verified(info)
    return info


def raise_problems(problems):
    """Raise BackupError with the first of ``problems`` (and how many there are), if any."""
    if problems:
        raise BackupError(f"{problems[0]} ({len(problems)} problem(s) in all)")


def _encrypted(dump, recipients):
    """Return a dump(partial) that writes what ``dump`` writes, age-encrypted: the
    manifest's checksum is the stored file's, ``plain_sha256`` what it decrypts to."""

    def dump_encrypted(partial):
        plain = partial.with_name(partial.name + ".plain")  # a left-over is removed later
        try:
            create_private(plain)
            manifest = dump(plain)
            digest, size = encryption.encrypt_file(plain, partial, recipients)
        finally:
            plain.unlink(missing_ok=True)
        return {
            **manifest,
            "sha256": digest,
            "size": size,
            "plain_sha256": manifest["sha256"],
            "plain_size": manifest["size"],
            "encrypted": {
                "format": "age",
                "recipients": encryption.recipient_labels(recipients),
            },
        }

    return dump_encrypted


def _require_identities(path, manifest, identities):
    if manifest.get("encrypted") and identities is None:
        raise ConfigError(
            f"{path} is encrypted: give the identity file that decrypts it "
            f"({encryption.IDENTITY_SETTING})"
        )


@contextmanager
def readable_backup(path, manifest, identities):
    """Yield (path, manifest) of the backup as its engine reads it: the file itself, or
    a private decrypted copy (deleted afterwards) and the manifest of that copy. The
    stored file's checksum is checked first; the copy must decrypt to the very bytes
    the manifest recorded."""
    if not manifest.get("encrypted"):
        yield path, manifest
        return
    _require_identities(path, manifest, identities)
    problems = checksum_problems(path, manifest)
    if problems:
        raise BackupError(problems[0])
    recipients = (manifest["encrypted"] or {}).get("recipients") or ()
    with tempfile.TemporaryDirectory(prefix="clonegallery-decrypted-") as folder:
        plain = Path(folder) / path.name.removesuffix(ENCRYPTED_SUFFIX)
        create_private(plain)
        written = encryption.decrypt_file(path, plain, identities, recipients)
        if written != (manifest.get("plain_sha256"), manifest.get("plain_size")):
            raise BackupError(f"{path}: what it decrypts to differs from the manifest")
        yield plain, {**manifest, "sha256": written[0], "size": written[1], "encrypted": None}


def _written_with_manifest(target, dump, owner):
    """Write the backup ``target`` with ``dump(partial)`` and its manifest, naming the
    database ``owner()`` returns, so that the file is under its final name only once its
    manifest is: either both or neither."""
    try:
        with finished_file(target) as partial:
            manifest = {**dump(partial), **owner().manifest_fields()}
            write_manifest(target, manifest)
    except BaseException:
        if not target.exists():
            manifest_path(target).unlink(missing_ok=True)
        raise
    return manifest


def verify_backup(path, url=None, identities=None):
    """Check a backup against its manifest; return the problems found (empty: sound).

    Server backups are loaded into a scratch database on the server of ``url``; an
    encrypted backup is decrypted with ``identities`` (encryption.read_identities) first.
    """
    path = Path(path)
    manifest, problems = _manifest_problems(path)
    if not problems:
        deferred = with_deferred_checksum(path, manifest)
        problems = checksum_problems(path, deferred)
    if problems:
        return problems
    engine = engine_named(manifest.get("engine"))
    if engine is None:
        return [f"{path}: the manifest names no known engine ({manifest.get('engine')!r})"]
    try:
        with readable_backup(path, deferred, identities) as (plain, plain_manifest):
            found = backup_format(engine).check(plain, plain_manifest, url)
    except BackupError as exc:
        return [str(exc)]
    if not found and deferred is not manifest:
        write_manifest(path, deferred)  # the checksum it was made without, now it verified
    return [f"{path}: {problem}" for problem in found]


def check_restorable(path, url, latest_known_version, identities=None):
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
    if not problems:
        _require_identities(path, manifest, identities)
    if not problems and engine == "sqlite" and not manifest.get("verified_at"):
        problems = verify_backup(path, url, identities)
        manifest = read_manifest(path) or manifest  # with a deferred checksum taken
    if problems:
        raise BackupError(f"{problems[0]}; nothing restored")
    version = str(manifest.get("schema_version") or "")
    # A version that is not a number is no version of ours: reading the backup refuses it.
    if version.isdigit() and latest_known_version and int(version) > int(latest_known_version):
        raise BackupError(
            f"{path}: its schema version {version} is newer than this code's migrations "
            f"(latest {latest_known_version}); upgrade the code first; nothing restored"
        )
    return manifest


def restore_backup(url, path, manifest, safety_folder, timeout=30, identities=None):
    """Replace the database of ``url`` with the backup ``path`` (checked by
    check_restorable), so that it holds either the old or the new data, never a mix;
    return the safety backup taken of the replaced database (None when it did not exist).

    The restored database keeps the id of the one it replaces (a backup of production
    restored into staging does not make staging's backups production's), written into
    the restored copy before it is swapped in; the safety backup is the replaced
    database's, under that same id.
    """
    safety_folder = writable_folder(safety_folder)
    replaced = current_owner(url)
    kept = Owner.at(url, _kept_id(replaced, manifest))

    def take_safety():
        target = Target(url)
        if not target.exists:
            return None
        with target.opened() as database:
            if DatabaseIdentity(database).read() is None:
                DatabaseIdentity(database).write(kept.id)  # the id it keeps from now on
            return create_backup(target, safety_folder)

    def adopt(copy):
        DatabaseIdentity(copy).write(kept.id)

    with readable_backup(Path(path), manifest, identities) as (plain, plain_manifest):
        safety = backup_format(engine_named(manifest["engine"])).restore(
            url, plain, plain_manifest, safety_folder, take_safety, timeout=timeout, adopt=adopt
        )
    return _claimed(safety, kept)


def _kept_id(replaced, manifest):
    """Return the id the restored database is to have: the replaced database's; when it
    had none, the backup's own when the backup is of this database, else a new one."""
    if replaced.id:
        return replaced.id
    backup_of = Owner.from_manifest(manifest)
    if backup_of is not None and backup_of.id and replaced.is_same(backup_of):
        return backup_of.id
    return str(uuid.uuid4())


def _claimed(safety, owner):
    """Return the safety backup with its owner in its manifest (an SQLite safety backup
    is the replaced file itself, whose manifest is written by sqlite.restore)."""
    if safety is None or Owner.from_manifest(safety.manifest) is not None:
        return safety
    manifest = {**safety.manifest, **owner.manifest_fields()}
    write_manifest(safety.path, manifest)
    return BackupInfo(safety.path, manifest)


def current_owner(url):
    """Return the Owner of the database at ``url``, with its id when it exists and has
    one; nothing is written."""
    target = Target(url)
    if not target.exists:
        return Owner.at(url)
    with target.opened() as database:
        return Owner.known(database, url)


def newest_verified(folder, owner):
    """Return the newest verified backup (a BackupInfo) of ``owner`` in ``folder``, or None."""
    return next((info for info in list_backups(folder, owner) if info.verified), None)


def manifest_of(path):
    """Return the manifest of the backup ``path``; raise BackupError when the file or
    its manifest is missing or unreadable."""
    manifest, problems = _manifest_problems(Path(path))
    if problems:
        raise BackupError(problems[0])
    return manifest


def _manifest_problems(path):
    """Return (manifest, problems): whether the file and its manifest are there."""
    if not path.is_file():
        return None, [f"{path}: no such file"]
    manifest = read_manifest(path)
    if manifest is None:
        return None, [f"{path}: no readable manifest ({manifest_path(path).name})"]
    try:
        manifest_tenant(manifest)  # a name for schemas and databases: never taken unchecked
    except ValueError as exc:
        return manifest, [f"{path}: {exc}"]
    return manifest, []


def writable_folder(folder):
    """Create the backups folder if need be; raise ConfigError naming it, and the setting
    that moves it, when it cannot be created or written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"backups folder {folder} cannot be created ({exc.strerror}); "
            f"point {FOLDER_SETTING} at a folder you can write"
        ) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"backups folder {folder} is not writable by this user; "
            f"point {FOLDER_SETTING} at a folder you can write"
        )
    return folder


def _target_path(folder, output, name, live):
    if output is None:
        return (writable_folder(folder) / name).resolve()
    if Path(output).expanduser().is_symlink():
        raise ConfigError(f"--output {output} is a symbolic link; name a new, plain file")
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
