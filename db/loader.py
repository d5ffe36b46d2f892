"""Finding and reading migration files.

A migration is a file in ``migrations/`` named ``NNN_description.py`` or
``NNN_description.sql`` (NNN: three or more digits; description: lower-case
letters, digits and underscores). Left alone beside them: folders, ``README``/``README.md``,
names starting with ``_``, ``.`` or ``#``, and editor back-ups (``~``, ``.bak``, ``.orig``,
``.swp``); any other file is refused by name.

A Python migration defines ``up(migrator, db)`` and, to be reversible,
``down(migrator, db)``; ``migrator`` is the engine's ``playhouse.migrate``
SchemaMigrator. An SQL migration holds ``-- migrate:up`` and ``-- migrate:down``
sections; a file without markers is all "up" and cannot be rolled back::

    -- migrate:up
    ALTER TABLE users ADD COLUMN karma INTEGER NOT NULL DEFAULT 0;
    -- migrate:down
    ALTER TABLE users DROP COLUMN karma;

``discover(folder)`` returns the files in version order and refuses misnamed
files and duplicate versions before anything runs; ``load_migration(file, engine)``
returns its up/down steps. A file's checksum ignores line endings, so a CRLF
checkout is not mistaken for an edited migration. Seeders (``db/seeders.py``)
follow the same naming and use the same discovery.
"""

import hashlib
import importlib.util
import re
import traceback
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import peewee

from db.errors import DbError, SourceFileError, StatementFailed, one_line

NAME_PATTERN = re.compile(r"^(?P<version>\d{3,})_(?P<description>[a-z0-9_]+)\.(?P<kind>py|sql)$")
UP_MARKER = re.compile(r"^--\s*migrate:up\s*$", re.MULTILINE)
DOWN_MARKER = re.compile(r"^--\s*migrate:down\s*$", re.MULTILINE)
# What may sit beside migrations and seeders without being one: notes, helpers the files
# import (``_common.py``), hidden files (``.gitkeep``, ``.DS_Store``, editor swap files),
# folders (``__pycache__``) and editor back-ups. Every other file must be well named.
IGNORED_NAMES = {"README.md", "README"}
IGNORED_PREFIXES = (".", "_", "#")
EDITOR_BACKUP_SUFFIXES = ("~", ".bak", ".orig", ".swp")


@dataclass(frozen=True)
class Steps:
    """What a migration does: callables ``up(migrator, db)`` and ``down`` (None if absent)."""

    up: object
    down: object


@dataclass(frozen=True)
class NumberedFile:
    """One ``NNN_description.(py|sql)`` file on disk: a migration or a seeder."""

    path: Path
    version: str
    description: str
    kind: str

    @property
    def name(self):
        return self.path.stem

    @property
    def number(self):
        return int(self.version)

    @cached_property
    def checksum(self):
        """SHA-256 of the file's text with line endings normalised to LF."""
        text = self.path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return hashlib.sha256(text).hexdigest()


def discover(folder, noun="migration"):
    """Return the numbered files in ``folder`` in version order, refusing bad ones."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceFileError(f"{noun}s folder {folder} does not exist")
    files = []
    for path in sorted(folder.iterdir()):
        if not _ignored(path):
            files.append(_parse_name(path, noun))
    _refuse_duplicate_versions(files)
    return sorted(files, key=lambda f: f.number)


def _ignored(path):
    """Return whether a file beside the numbered ones is left alone (see IGNORED_NAMES)."""
    name = path.name
    return (
        path.is_dir()
        or name in IGNORED_NAMES
        or name.startswith(IGNORED_PREFIXES)
        or name.endswith(EDITOR_BACKUP_SUFFIXES)
    )


def load_migration(migration, engine):
    """Return the migration's Steps, or raise SourceFileError naming the file."""
    if migration.kind == "py":
        module = load_module(migration)
        up, down = getattr(module, "up", None), getattr(module, "down", None)
        if not callable(up):
            raise SourceFileError(f"{migration.path}: defines no up(migrator, db) function")
        return Steps(up=up, down=down if callable(down) else None)
    up_text, up_line, down_text, down_line = _sql_sections(migration)
    up = _sql_step(migration, engine.split_statements(up_text, up_line))
    down = None
    if down_text is not None:
        down = _sql_step(migration, engine.split_statements(down_text, down_line))
    return Steps(up=up, down=down)


def load_module(numbered_file):
    """Execute a Python file and return it as a module, or raise naming the file."""
    path = numbered_file.path
    spec = importlib.util.spec_from_file_location(f"cg_{numbered_file.name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise SourceFileError(f"{path}: cannot be loaded: {exc}") from exc
    return module


def run_statements(numbered_file, statements, database):
    """Execute SQL statements in order; a failure names the file's line."""
    for statement in statements:
        try:
            database.execute_sql(statement.sql)
        except peewee.DatabaseError as exc:
            raise StatementFailed(f"line {statement.line}: {one_line(exc)}") from exc


def next_version(files):
    """Return the version string for a new migration after ``files``."""
    number = max((f.number for f in files), default=0) + 1
    return f"{number:03d}"


def slugify(text):
    """Return ``text`` as a migration description: lower case, words joined by ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _parse_name(path, noun):
    match = NAME_PATTERN.match(path.name)
    if match is None:
        raise SourceFileError(
            f"{path}: {noun} file names must look like NNN_description.py or "
            "NNN_description.sql (digits, underscore, lower-case words)"
        )
    return NumberedFile(path=path, **match.groupdict())


def _refuse_duplicate_versions(files):
    seen = {}
    for migration in files:
        other = seen.setdefault(migration.number, migration)
        if other is not migration:
            raise SourceFileError(
                f"{migration.path}: version {migration.version} is also used by "
                f"{other.path.name}; renumber one of them"
            )


def _sql_sections(migration):
    """Return (up text, its first line, down text or None, its first line)."""
    text = migration.path.read_text(encoding="utf-8")
    ups, downs = list(UP_MARKER.finditer(text)), list(DOWN_MARKER.finditer(text))
    if not ups and not downs:
        return text, 1, None, None
    if len(ups) != 1 or len(downs) > 1:
        raise SourceFileError(
            f"{migration.path}: needs exactly one '-- migrate:up' and at most one "
            "'-- migrate:down' marker"
        )
    up_start = ups[0].end()
    up_line = _line_at(text, up_start)
    if not downs:
        return text[up_start:], up_line, None, None
    down_start, down_end = downs[0].start(), downs[0].end()
    if down_start < up_start:
        raise SourceFileError(
            f"{migration.path}: '-- migrate:down' must come after '-- migrate:up'"
        )
    return text[up_start:down_start], up_line, text[down_end:], _line_at(text, down_end)


def _line_at(text, offset):
    return text.count("\n", 0, offset) + 1


def _sql_step(migration, statements):
    def run(migrator, db):
        run_statements(migration, statements, db)

    return run


def describe_failure(exc, numbered_file):
    """Return a one-line account of why running a file failed, with its line when known."""
    if isinstance(exc, StatementFailed):
        return str(exc)  # names its line already
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename == str(numbered_file.path)
    ]
    where = f"line {frames[-1].lineno}: " if frames else ""
    if isinstance(exc, DbError | peewee.DatabaseError):
        return f"{where}{one_line(exc)}"
    return f"{where}{type(exc).__name__}: {one_line(exc)}"
