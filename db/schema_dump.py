"""The complete current schema of a database, as SQL for its engine (``db.schema``).

    sql = schema_sql(target)               # an opened db.target.Target: tables, indexes...
    write_schema(sql, Path("schema.sql"))  # refuses a folder that does not exist
    diff = compare_with_file(target, Path("schema.sql"))  # "" when in step

Each engine's schema comes from where that engine keeps it, so it is the schema the
database really has, not the one the migrations meant to give it:

- SQLite: the SQL that ``sqlite_master`` keeps for every table, index, view and
  trigger, tables in dependency order (a table after those its foreign keys name); a
  virtual table's shadow tables are left to its ``CREATE VIRTUAL TABLE``;
- PostgreSQL: ``pg_dump --schema-only --no-owner --no-privileges`` (trigger functions
  included); ``psql -f schema.sql`` loads it;
- MySQL / MariaDB: ``mariadb-dump --no-data --triggers --skip-comments`` (or
  ``mysqldump``); the ``mariadb`` client loads it.

Credentials reach the tools as they do for backups (db.backups.postgres,
db.backups.mysql): a private password or options file, never the command line.

The SQL is deterministic, so that a committed ``schema.sql`` can be diffed against the
live database (``compare_with_file``, ``db.schema --check``): two dumps of the same
schema are byte-identical, whatever the rows, the time or who ran the migrations.

- PostgreSQL: ``pg_dump`` 13.22/14.19/15.14/16.10/17.6 and later guard the file with
  ``\\restrict <random key>`` ... ``\\unrestrict <key>``. We give it a fixed key
  (``--restrict-key``, when this ``pg_dump`` has the option) and drop those two lines, and
  the ``-- Dumped from/by ... version`` comments: a client with the option and one
  without it write the same file, whatever minor release each runs. (A fixed key
  protects nothing: a hostile server could write the ``\\unrestrict`` line itself;
  pg_dump documents the option for comparing dumps.)
- MySQL / MariaDB: ``--skip-comments`` leaves out the header and the dump date; we drop
  the ``AUTO_INCREMENT=N`` table option (the next id: data, not schema) and each
  trigger's or view's ``DEFINER=user@host`` (who ran the migrations, from where: the
  counterpart of pg_dump's ``--no-owner``).
- SQLite: ``sqlite_master``'s SQL, in a fixed order (above); nothing varies.
"""

import difflib
import functools
import io
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from db.clients import (
    POSTGRES_CLIENT_PACKAGE,
    find_tool,
    libpq_environment,
    mysql_dump_command,
    mysql_options_file,
    run_tool,
)
from db.engines import MySQLEngine, PostgresEngine, SqliteEngine
from db.errors import ConfigError

# SQLite's own objects (sqlite_sequence, sqlite_stat1...): SQLite makes them itself.
SQLITE_OWN = "sqlite_%"
SQLITE_KINDS = ("table", "index", "view", "trigger")  # the order they are written in
# A virtual table's shadow tables (FTS5's _data, _idx...) are its storage: its own CREATE
# VIRTUAL TABLE makes them, so writing them too would fail as "already exists".
SQLITE_NOT_SHADOW = "name NOT IN (SELECT name FROM pragma_table_list WHERE type = 'shadow')"
# pg_dump's psql \\restrict key: fixed, so that the lines that carry it are known (and
# dropped). Letters and digits only, as pg_dump requires.
RESTRICT_KEY = "clonegallerySchemaDump"
RESTRICT_OPTION = "--restrict-key"
POSTGRES_VERSION_COMMENTS = ("-- Dumped from database version ", "-- Dumped by pg_dump version ")
# SHOW CREATE TABLE's next id (") ENGINE=InnoDB AUTO_INCREMENT=42 DEFAULT CHARSET=..."):
# it comes right after ENGINE=, on the line that closes a CREATE TABLE.
MYSQL_NEXT_ID = re.compile(r"^(\) ENGINE=\w+) AUTO_INCREMENT=\d+", re.MULTILINE)
# A trigger's "/*!50017 DEFINER=`root`@`127.0.0.1`*/", a view's "/*!50013 DEFINER=... SQL
# SECURITY DEFINER */": the account alone, then the comment it leaves empty.
MYSQL_DEFINER = re.compile(r"DEFINER=`(?:[^`]|``)*`@`(?:[^`]|``)*` ?")
MYSQL_EMPTY_VERSIONED_COMMENT = re.compile(r" ?/\*!\d{5} ?\*/")
LIVE_LABEL = "live database"
# A schema file is kilobytes: one far larger is not one (and its diff would never end).
SCHEMA_FILE_LIMIT = 16 * 2**20


@dataclass(frozen=True)
class SchemaDump:
    """What ``db.schema`` made: the SQL, how many tables it creates, where it went."""

    sql: str
    tables: int
    path: Path | None  # None: not written to a file (printed)


def schema_sql(target):
    """Return the schema of an opened db.target.Target as SQL for its engine."""
    return engine_schema(target.engine, target.database, target.url)


def compare_with_file(target, path):
    """Return the unified diff from the schema SQL in ``path`` to the live schema of an
    opened db.target.Target; an empty string when they are the same."""
    committed = read_schema(path)  # a missing file: refused before the dump
    return schema_diff(committed, schema_sql(target), str(path))


def read_schema(path):
    """Return the text of a schema file; raise ConfigError naming it when it cannot be
    read, is not a regular file (a FIFO or /dev/zero would never end) or is too large to
    be a schema (SCHEMA_FILE_LIMIT: the diff would run for hours)."""
    file = Path(path).expanduser()
    try:
        if not stat.S_ISREG(file.stat().st_mode):
            raise ConfigError(f"cannot read the schema file {path}: not a regular file")
        with open(file, "rb") as stream:
            data = stream.read(SCHEMA_FILE_LIMIT + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"cannot compare the schema with {path}: it does not exist; "
            f"write it with invoke db.schema --output {path}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the schema file {path}: {exc.strerror or exc}") from None
    if len(data) > SCHEMA_FILE_LIMIT:
        raise ConfigError(
            f"cannot read the schema file {path}: larger than {SCHEMA_FILE_LIMIT // 2**20} MiB, "
            "no schema is"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read the schema file {path}: {exc}") from None


def schema_diff(committed, live, label):
    """Return the unified diff from ``committed`` (the file ``label``) to ``live``; "" when
    they are the same text."""
    if committed == live:
        return ""
    lines = difflib.unified_diff(
        lines_of(committed),
        lines_of(live),
        fromfile=label,
        tofile=LIVE_LABEL,
    )
    return "".join(_ended(line) for line in lines)


def lines_of(text):
    """Return the lines of ``text``, each with its newline: split at "\\n" only (a form
    feed or U+2028 in a comment or a string does not end a line of SQL)."""
    return io.StringIO(text).readlines()


def _ended(line):
    # A last line without its newline is marked as diff(1) marks it.
    return line if line.endswith("\n") else f"{line}\n\\ No newline at end of file\n"


def check_output(output):
    """Raise ConfigError unless ``output`` can be written (its folder exists)."""
    folder = Path(output).expanduser().resolve().parent
    if not folder.is_dir():
        raise ConfigError(f"cannot write the schema to {output}: folder {folder} does not exist")


def write_schema(sql, output):
    """Write the schema SQL to ``output``; return its path."""
    check_output(output)
    path = Path(output).expanduser()
    path.write_text(sql, encoding="utf-8")
    return path


@functools.singledispatch
def engine_schema(engine, database, url):
    """Return the schema of ``engine``'s connected database (of ``url``) as SQL."""
    raise TypeError(f"db.schema cannot dump {engine.name}")


@engine_schema.register
def _(engine: SqliteEngine, database, url):
    return sqlite_schema(database, url)


@engine_schema.register
def _(engine: PostgresEngine, database, url):
    return postgres_schema(database, url)


@engine_schema.register
def _(engine: MySQLEngine, database, url):
    return mysql_schema(database, url)


def sqlite_schema(database, url=None):
    """Return sqlite_master's SQL: tables in dependency order, then indexes, views, triggers."""
    rows = database.execute_sql(
        "SELECT type, name, sql FROM sqlite_master "
        f"WHERE sql IS NOT NULL AND name NOT LIKE ? AND {SQLITE_NOT_SHADOW} ORDER BY name",
        (SQLITE_OWN,),
    ).fetchall()
    sql_of = {(kind, name): sql for kind, name, sql in rows}
    tables = dependency_order(
        {name: _referenced_tables(database, name) for kind, name, _ in rows if kind == "table"}
    )
    ordered = [sql_of[("table", name)] for name in tables]
    ordered += [sql for kind in SQLITE_KINDS[1:] for k, _, sql in rows if k == kind]
    return "".join(f"{sql};\n" for sql in ordered)


def dependency_order(references):
    """Return the tables of {table: tables it references} so that each comes after the
    ones it references (by name where a cycle leaves no other choice)."""
    ordered, placed = [], set()
    remaining = sorted(references)
    while remaining:
        ready = [t for t in remaining if references[t] <= placed | {t}] or remaining[:1]
        ordered += ready
        placed.update(ready)
        remaining = [t for t in remaining if t not in placed]
    return ordered


def _referenced_tables(database, table):
    return {key.dest_table for key in database.get_foreign_keys(table)}


def postgres_schema(database, url):
    """Return ``pg_dump --schema-only --no-owner --no-privileges`` of the database, without
    its restrict key and version lines."""
    pg_dump = find_tool("pg_dump", package=POSTGRES_CLIENT_PACKAGE)
    command = [pg_dump, "--schema-only", "--no-owner", "--no-privileges"]
    if RESTRICT_OPTION in tool_options(pg_dump):
        command.append(f"{RESTRICT_OPTION}={RESTRICT_KEY}")
    with libpq_environment(url) as env:
        return without_postgres_noise(_tool_output(command, env))


def tool_options(tool):
    """Return the long options a client tool lists in its ``--help``."""
    return set(re.findall(r"--[a-z][a-z0-9-]*", _tool_output([tool, "--help"], env=None)))


def without_postgres_noise(sql):
    """Return pg_dump's SQL without the lines that say nothing of the schema: the
    ``\\restrict``/``\\unrestrict`` lines of our key and the version comments."""
    noise = {f"\\restrict {RESTRICT_KEY}", f"\\unrestrict {RESTRICT_KEY}"}
    return without_lines(
        sql, lambda line: line in noise or line.startswith(POSTGRES_VERSION_COMMENTS)
    )


def without_lines(text, unwanted):
    """Return ``text`` without the lines for which ``unwanted(line)`` is true, each with the
    blank line that follows it (pg_dump sets them apart with one)."""
    kept, after_dropped = [], False
    for line in lines_of(text):
        if unwanted(line.rstrip("\n")):
            after_dropped = True
            continue
        if not (after_dropped and line == "\n"):
            kept.append(line)
        after_dropped = False
    return "".join(kept)


def mysql_schema(database, url):
    """Return ``mariadb-dump --no-data --triggers --skip-comments`` of the database, without
    next ids and definers."""
    with mysql_options_file(url) as options:
        command = mysql_dump_command(options, url, "--no-data", "--triggers", "--skip-comments")
        return without_mysql_noise(_tool_output(command, env=None))


def without_mysql_noise(sql):
    """Return mariadb-dump's SQL without the tables' ``AUTO_INCREMENT=N`` (their next id)
    and the ``DEFINER=user@host`` of triggers and views."""
    sql = MYSQL_NEXT_ID.sub(r"\1", sql)
    sql = MYSQL_DEFINER.sub("", sql)
    return MYSQL_EMPTY_VERSIONED_COMMENT.sub("", sql)


def _tool_output(command, env):
    """Run a dump tool; return what it wrote on stdout (one clear line when it fails)."""
    with tempfile.TemporaryFile() as output:
        run_tool(command, env, stdout=output)
        output.seek(0)
        return output.read().decode("utf-8")
