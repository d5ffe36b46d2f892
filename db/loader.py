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

How a step runs (StepOptions) is said on its marker line, as ``key:value`` words::

    -- migrate:up transaction:false lock_timeout:10s statement_timeout:5m
    CREATE INDEX CONCURRENTLY images_views ON images (views);

and in a Python migration by module-level names, for both of its steps::

    atomic = False            # run outside a transaction (each statement commits)
    lock_timeout = "10s"      # instead of the configured db.lock_timeout
    statement_timeout = "5m"  # instead of db.statement_timeout ("off": no limit)

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

from db.errors import ConfigError, DbError, SourceFileError, StatementFailed, one_line

NAME_PATTERN = re.compile(r"^(?P<version>\d{3,})_(?P<description>[a-z0-9_]+)\.(?P<kind>py|sql)$")
UP_MARKER = re.compile(r"^--\s*migrate:up(?P<options>(?:[ \t]+\S+)*)[ \t]*$", re.MULTILINE)
DOWN_MARKER = re.compile(r"^--\s*migrate:down(?P<options>(?:[ \t]+\S+)*)[ \t]*$", re.MULTILINE)
# The words a marker line may carry, and what they set in StepOptions.
MARKER_OPTIONS = {"transaction": "atomic", "lock_timeout": None, "statement_timeout": None}
# What may sit beside migrations and seeders without being one: notes, helpers the files
# import (``_common.py``), hidden files (``.gitkeep``, ``.DS_Store``, editor swap files),
# folders (``__pycache__``) and editor back-ups. Every other file must be well named.
IGNORED_NAMES = {"README.md", "README"}
IGNORED_PREFIXES = (".", "_", "#")
EDITOR_BACKUP_SUFFIXES = ("~", ".bak", ".orig", ".swp")


@dataclass(frozen=True)
class StepOptions:
    """How one step runs: in a transaction or not, and its own timeouts (text such as
    ``10s`` or ``off``, checked by db.timeouts; None: the configured ones)."""

    atomic: bool = True
    lock_timeout: str | None = None
    statement_timeout: str | None = None


@dataclass(frozen=True)
class Steps:
    """What a migration does: callables ``up(migrator, db)`` and ``down`` (None if absent),
    and how each runs."""

    up: object
    down: object
    up_options: StepOptions = StepOptions()
    down_options: StepOptions = StepOptions()


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
        options = _module_options(migration, module)
        return Steps(up, down if callable(down) else None, options, options)
    up, down = _sql_sections(migration)
    up_step = _sql_step(migration, engine.split_statements(up.text, up.line))
    if down is None:
        return Steps(up_step, None, up.options)
    down_step = _sql_step(migration, engine.split_statements(down.text, down.line))
    return Steps(up_step, down_step, up.options, down.options)


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


@dataclass(frozen=True)
class Section:
    """The up or down part of an SQL migration: its text, the line it starts on, and the
    options of its marker line."""

    text: str
    line: int
    options: StepOptions


def _sql_sections(migration):
    """Return the up Section and the down Section (None when there is none)."""
    text = migration.path.read_text(encoding="utf-8")
    ups, downs = list(UP_MARKER.finditer(text)), list(DOWN_MARKER.finditer(text))
    if not ups and not downs:
        return Section(text, 1, StepOptions()), None
    if len(ups) != 1 or len(downs) > 1:
        raise SourceFileError(
            f"{migration.path}: needs exactly one '-- migrate:up' and at most one "
            "'-- migrate:down' marker"
        )
    up_start = ups[0].end()
    up_options = _marker_options(migration, text, ups[0])
    if not downs:
        return Section(text[up_start:], _line_at(text, up_start), up_options), None
    down_start, down_end = downs[0].start(), downs[0].end()
    if down_start < up_start:
        raise SourceFileError(
            f"{migration.path}: '-- migrate:down' must come after '-- migrate:up'"
        )
    up = Section(text[up_start:down_start], _line_at(text, up_start), up_options)
    down_options = _marker_options(migration, text, downs[0])
    return up, Section(text[down_end:], _line_at(text, down_end), down_options)


def _marker_options(migration, text, marker):
    """Return the StepOptions of a marker line's ``key:value`` words."""
    where = f"{migration.path}, line {_line_at(text, marker.start())}"
    options = {}
    for word in marker.group("options").split():
        key, _, value = word.partition(":")
        if key not in MARKER_OPTIONS or not value:
            raise SourceFileError(
                f"{where}: unknown marker option {word!r} (known: transaction:false, "
                "lock_timeout:10s, statement_timeout:5m)"
            )
        if key == "transaction":
            if value not in ("true", "false"):
                raise SourceFileError(f"{where}: transaction: is true or false, not {value!r}")
            options["atomic"] = value == "true"
        else:
            options[key] = _checked_timeout(f"{where}: {key}", value)
    return StepOptions(**options)


def _module_options(migration, module):
    """Return the StepOptions of a Python migration's ``atomic``, ``lock_timeout`` and
    ``statement_timeout`` names."""
    atomic = getattr(module, "atomic", True)
    if not isinstance(atomic, bool):
        raise SourceFileError(f"{migration.path}: atomic is True or False, not {atomic!r}")
    options = {"atomic": atomic}
    for key in ("lock_timeout", "statement_timeout"):
        value = getattr(module, key, None)
        if value is not None:
            options[key] = _checked_timeout(f"{migration.path}: {key}", value)
    return StepOptions(**options)


def _checked_timeout(where, value):
    """Return ``value`` as text once it reads as a timeout; else SourceFileError naming
    the file (and line)."""
    from db.timeouts import parse_timeout

    try:
        parse_timeout(where, value)
    except ConfigError as exc:
        raise SourceFileError(str(exc)) from None
    return str(value)


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
