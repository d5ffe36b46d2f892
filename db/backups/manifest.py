"""The manifest beside every backup, and what it lets us do: list, trust, prune.

``NAME.json`` beside the backup ``NAME`` records the engine, the schema version (the
latest applied migration), row counts per table, the SHA-256 and size of the file (and,
for a compressed file, of its content), when and by which version of this tool it was
made, and when it last verified.
"""

import datetime
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from db.backups.files import file_digest, finished_file
from db.backups.owner import engine_key
from db.errors import ConfigError

TOOL = "clonegallery-db"
# 2: the database it was taken of (see owner.py); 3: engines named by their key
# (postgres, which 2 spelled postgresql: read_manifest reads both).
MANIFEST_FORMAT = 3
MANIFEST_SUFFIX = ".json"
# What the backups of each engine are called (compressed ones end in .zst as well).
PLAIN_SUFFIXES = (".db", ".db.zst", ".pgdump", ".sql", ".sql.zst")
ENCRYPTED_SUFFIX = ".age"
BACKUP_SUFFIXES = PLAIN_SUFFIXES + tuple(suffix + ENCRYPTED_SUFFIX for suffix in PLAIN_SUFFIXES)


@dataclass(frozen=True)
class BackupInfo:
    """A backup file and its manifest (None when the manifest is missing or unreadable)."""

    path: Path
    manifest: dict | None

    @property
    def verified(self):
        return bool(self.manifest and self.manifest.get("verified_at"))


def new_manifest(
    path,
    engine,
    schema_version,
    row_counts,
    content=None,
    verified=False,
    digest=None,
    checksum_deferred=False,
):
    """Return the manifest of a finished backup file.

    ``content`` is the (SHA-256, size) of what a compressed file holds, when compressed;
    ``digest`` the file's own (SHA-256, size) when already known. With
    ``checksum_deferred`` the checksum is left to the first verification (see
    with_deferred_checksum): a restore's safety backup is the replaced file itself, and
    reading all of it once more would double the restore's time.
    """
    if checksum_deferred:
        digest = (None, Path(path).stat().st_size)
    digest, size = digest or file_digest(path)
    content_digest, content_size = content or (digest, size)
    now = now_text()
    return {
        "format": MANIFEST_FORMAT,
        "tool": TOOL,
        "tool_version": _tool_version(),
        "engine": engine,
        "created_at": now,
        "schema_version": schema_version,
        "row_counts": row_counts,
        "sha256": digest,
        "size": size,
        "compressed": "zstd" if content else False,
        "content_sha256": content_digest,
        "content_size": content_size,
        "verified_at": now if verified else None,
        **({"checksum_deferred": True} if checksum_deferred else {}),
    }


def with_deferred_checksum(path, manifest):
    """Return the manifest with the checksum its backup was made without, taken now
    (before its content is read), when it was deferred; else the manifest as it is."""
    if not manifest.get("checksum_deferred") or manifest.get("compressed"):
        return manifest
    digest, size = file_digest(path)
    return {
        **{k: v for k, v in manifest.items() if k != "checksum_deferred"},
        "sha256": digest,
        "size": size,
        "content_sha256": digest,
        "content_size": size,
    }


def manifest_path(path):
    return Path(path).with_name(Path(path).name + MANIFEST_SUFFIX)


def read_manifest(path):
    try:
        manifest = json.loads(manifest_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    if isinstance(manifest.get("engine"), str):
        manifest["engine"] = engine_key(manifest["engine"])
    return manifest


def write_manifest(path, manifest):
    """Write the manifest of ``path`` (0600, temporary name, then renamed)."""
    with finished_file(manifest_path(path)) as partial, open(partial, "w", encoding="utf-8") as out:
        json.dump(manifest, out, indent=2, sort_keys=True)


def checksum_problems(path, manifest):
    """Return [] when the file matches the manifest's checksum and size, else the problem."""
    if file_digest(path) != (manifest.get("sha256"), manifest.get("size")):
        return [f"{path}: checksum differs from the manifest (damaged or tampered)"]
    return []


def mark_verified(info):
    """Record in the manifest that the backup verified now; return the new BackupInfo."""
    # As written by the verification (a deferred checksum is recorded then).
    manifest = {**(read_manifest(info.path) or info.manifest), "verified_at": now_text()}
    write_manifest(info.path, manifest)
    return BackupInfo(info.path, manifest)


def list_backups(folder, owner=None):
    """Return the backups in ``folder``, newest first: those of ``owner`` (an Owner), or
    every one (with or without a manifest) when ``owner`` is None."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = [
        path
        for path in folder.iterdir()
        if path.is_file() and path.name.endswith(BACKUP_SUFFIXES) and not path.name.startswith(".")
    ]
    infos = [BackupInfo(path, read_manifest(path)) for path in files]
    if owner is not None:
        infos = [info for info in infos if _made_by_us(info) and owner.owns(info.manifest)]
    return sorted(infos, key=created_at, reverse=True)


@dataclass(frozen=True)
class Retention:
    """How many backups to keep: the newest ``last``, and the newest of each of the last
    ``daily`` days, ``weekly`` ISO weeks and ``monthly`` months that have one (UTC),
    as restic's ``forget --keep-last/--keep-daily/...`` does. None keeps nothing by
    that rule; a backup kept by any rule stays."""

    last: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None

    def __post_init__(self):
        for rule, value in self.rules().items():
            if value is not None and value < 1:
                raise ConfigError(f"{self.option(rule)} must be 1 or more, not {value}")

    def rules(self):
        return {
            "last": self.last,
            "daily": self.daily,
            "weekly": self.weekly,
            "monthly": self.monthly,
        }

    @staticmethod
    def option(rule):
        return {"last": "--keep"}.get(rule, f"--keep-{rule}")

    @property
    def active(self):
        """Whether any rule is set (else nothing is ever pruned)."""
        return any(value is not None for value in self.rules().values())

    def kept(self, infos):
        """Return the paths of the backups (newest first) that the rules keep."""
        kept = {info.path for info in infos[: self.last or 0]}
        for rule, period in PERIODS.items():
            count = getattr(self, rule)
            if count:
                kept |= _newest_of_each_period(infos, period, count)
        return kept


def _newest_of_each_period(infos, period, count):
    """Return the paths of the newest backup of each of the ``count`` latest periods."""
    newest, seen = set(), set()
    for info in infos:
        key = period(created_moment(info))
        if key not in seen and len(seen) < count:
            seen.add(key)
            newest.add(info.path)
    return newest


PERIODS = {
    "daily": lambda moment: moment.date(),
    "weekly": lambda moment: moment.isocalendar()[:2],
    "monthly": lambda moment: (moment.year, moment.month),
}


def prune_backups(folder, owner, retention):
    """Delete the backups of ``owner`` in ``folder`` that ``retention`` does not keep;
    return their paths. Only this tool's backups, and never the newest verified one."""
    if not retention.active:
        return []
    ours = list_backups(folder, owner)
    kept = retention.kept(ours)
    newest_verified = next((info for info in ours if info.verified), None)
    deleted = []
    for info in ours:
        if info.path in kept or info is newest_verified:
            continue
        info.path.unlink()
        manifest_path(info.path).unlink(missing_ok=True)
        deleted.append(info.path)
    return deleted


def backup_name(engine, compress, prefix="clonegallery", encrypted=False):
    """Return a new backup's file name: <prefix>-<UTC time><suffix>, the prefix being the
    database's name (see Owner.file_prefix)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    suffix = {"sqlite": ".db", "postgres": ".pgdump", "mysql": ".sql"}[engine]
    if compress and engine != "postgres":  # pg_dump's custom format is compressed already
        suffix += ".zst"
    if encrypted:
        suffix += ENCRYPTED_SUFFIX
    return f"{prefix}-{stamp}{suffix}"


def now_text():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _made_by_us(info):
    return bool(info.manifest and info.manifest.get("tool") == TOOL)


def created_at(info):
    """Return when a backup was made (UTC): its manifest's time, else its file's."""
    return created_moment(info).isoformat()


def created_moment(info):
    """Return when a backup was made, as an aware UTC datetime."""
    recorded = info.manifest.get("created_at") if info.manifest else None
    if isinstance(recorded, str):
        try:
            moment = datetime.datetime.fromisoformat(recorded)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment.astimezone(datetime.timezone.utc)
    return datetime.datetime.fromtimestamp(info.path.stat().st_mtime, datetime.timezone.utc)


def _tool_version():
    try:
        return metadata.version(TOOL)
    except metadata.PackageNotFoundError:
        return "unknown"
