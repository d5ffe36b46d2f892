"""The complete current schema of a database, as SQL for its engine (``db.schema``).

    sql = schema_sql(database, url)        # tables, constraints, indexes, triggers
    write_schema(sql, Path("schema.sql"))  # refuses a folder that does not exist

Each engine's schema comes from where that engine keeps it, so it is the schema the
database really has, not the one the migrations meant to give it:

- SQLite: the SQL that ``sqlite_master`` keeps for every table, index, view and
  trigger, tables in dependency order (a table after those its foreign keys name);
- PostgreSQL: ``pg_dump --schema-only --no-owner --no-privileges`` (trigger functions
  included); ``psql -f schema.sql`` loads it;
- MySQL / MariaDB: ``mariadb-dump --no-data --triggers --skip-comments`` (or
  ``mysqldump``); the ``mariadb`` client loads it.

Credentials reach the tools as they do for backups (db.backups.postgres,
db.backups.mysql): a private password or options file, never the command line.
"""

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
from db.engines import engine_for
from db.errors import ConfigError

# SQLite's own objects (sqlite_sequence, sqlite_stat1...): SQLite makes them itself.
SQLITE_OWN = "sqlite_%"
SQLITE_KINDS = ("table", "index", "view", "trigger")  # the order they are written in


@dataclass(frozen=True)
class SchemaDump:
    """What ``db.schema`` made: the SQL, how many tables it creates, where it went."""

    sql: str
    tables: int
    path: Path | None  # None: not written to a file (printed)


def schema_sql(database, url):
    """Return the schema of the connected database (of ``url``) as SQL for its engine."""
    return DUMPERS[engine_for(database).name](database, url)


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


def sqlite_schema(database, url=None):
    """Return sqlite_master's SQL: tables in dependency order, then indexes, views, triggers."""
    rows = database.execute_sql(
        "SELECT type, name, sql FROM sqlite_master "
        "WHERE sql IS NOT NULL AND name NOT LIKE ? ORDER BY name",
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
    """Return ``pg_dump --schema-only --no-owner --no-privileges`` of the database."""
    pg_dump = find_tool("pg_dump", package=POSTGRES_CLIENT_PACKAGE)
    with libpq_environment(url) as env:
        return _tool_output([pg_dump, "--schema-only", "--no-owner", "--no-privileges"], env)


def mysql_schema(database, url):
    """Return ``mariadb-dump --no-data --triggers --skip-comments`` of the database."""
    with mysql_options_file(url) as options:
        command = mysql_dump_command(options, url, "--no-data", "--triggers", "--skip-comments")
        return _tool_output(command, env=None)


def _tool_output(command, env):
    """Run a dump tool; return what it wrote on stdout (one clear line when it fails)."""
    with tempfile.TemporaryFile() as output:
        run_tool(command, env, stdout=output)
        output.seek(0)
        return output.read().decode("utf-8")


DUMPERS = {"SQLite": sqlite_schema, "PostgreSQL": postgres_schema, "MySQL": mysql_schema}
