"""What differs between database engines, behind one small interface.

The toolkit needs these things from an engine, and only these:

- ``migrator(database)``: the ``playhouse.migrate`` SchemaMigrator that migrations receive;
- ``migration_lock(database)``: a lock held while planning and applying (migrations or
  seeders), which dies with the process that holds it, so concurrent runs do the work once;
- ``transaction(database)``: a unit of writes that waits for other writers;
- ``migration_transaction(database)``: one migration and its history row, all or nothing;
- ``split_statements(sql, first_line)``: an SQL file's text as Statements (line, sql);
- ``drop_all_tables(database)`` / ``empty_all_tables(database, keep)``: for ``db.reset``;
- ``bulk_insert(database, table, columns, rows)``: many rows at once, for ``db.populate``.

``engine_for(database)`` picks the engine. SQLite is here; PostgreSQL and MySQL join
by adding a class each.
"""

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import filelock
import peewee
from playhouse.migrate import SqliteMigrator, operation

from db.errors import ConfigError, LockTimeout, MigrationFailed

LOCK_TIMEOUT_SECONDS = 600


class Statement(NamedTuple):
    """One SQL statement and the line of its file it starts on."""

    line: int
    sql: str


class Engine:
    """The primitives the migration runner needs from one database engine."""

    name = "generic"

    def migrator(self, database):
        raise NotImplementedError

    def migration_lock(self, database, timeout=LOCK_TIMEOUT_SECONDS):
        raise NotImplementedError

    def transaction(self, database):
        raise NotImplementedError

    def migration_transaction(self, database):
        raise NotImplementedError

    def split_statements(self, sql, first_line=1):
        raise NotImplementedError

    def drop_all_tables(self, database):
        raise NotImplementedError

    def empty_all_tables(self, database, keep=()):
        raise NotImplementedError

    def bulk_insert(self, database, table, columns, rows):
        raise NotImplementedError


class TriggerKeepingSqliteMigrator(SqliteMigrator):
    """SqliteMigrator whose table rebuilds re-create the table's triggers.

    SQLite cannot alter most column properties, so peewee rebuilds the table
    (create a copy, move the rows, drop, rename). Dropping the table drops its
    triggers, and peewee does not put them back; this class does. The rename
    runs in legacy mode: otherwise SQLite re-checks every trigger of *other*
    tables that mentions the table and fails ("no such table") while the
    table is briefly gone.
    """

    @operation
    def _update_column(self, table, column_to_update, fn):
        triggers = self.database.execute_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table,)
        ).fetchall()
        rebuild = SqliteMigrator._update_column.__wrapped__(self, table, column_to_update, fn)
        return [
            peewee.SQL("PRAGMA legacy_alter_table = ON"),
            *rebuild,
            peewee.SQL("PRAGMA legacy_alter_table = OFF"),
            *(peewee.SQL(sql) for (sql,) in triggers),
        ]


class SqliteEngine(Engine):
    """SQLite: a file lock beside the database, IMMEDIATE transactions."""

    name = "sqlite"

    def migrator(self, database):
        return TriggerKeepingSqliteMigrator(database)

    @contextmanager
    def migration_lock(self, database, timeout=LOCK_TIMEOUT_SECONDS):
        # An OS file lock (flock) is released by the kernel when its process dies,
        # so a crash can never leave a stale lock behind.
        if database.database == ":memory:":
            yield
            return
        lock_path = (
            Path(database.database)
            .resolve()
            .with_name(Path(database.database).name + ".migrate.lock")
        )
        lock = filelock.FileLock(lock_path, timeout=timeout)
        try:
            with lock:
                yield
        except filelock.Timeout as exc:
            raise LockTimeout(
                f"another process has held the migration lock {lock_path} "
                f"for more than {timeout} s; is a migration still running?"
            ) from exc

    @contextmanager
    def transaction(self, database):
        # IMMEDIATE takes the write lock up front: a busy database is waited for
        # (busy timeout) instead of failing midway with "database is locked".
        with database.atomic("IMMEDIATE"):
            yield

    @contextmanager
    def migration_transaction(self, database):
        # Foreign-key enforcement must be switched off before BEGIN (the pragma
        # is ignored inside a transaction), or a table rebuild's DROP TABLE would
        # cascade-delete the rows that reference it. The check before COMMIT
        # keeps the guarantee the pragma gave.
        try:
            with self._foreign_keys_off(database), self.transaction(database):
                yield
                _raise_on_foreign_key_violations(database)
        finally:
            database.pragma("legacy_alter_table", 0)  # in case a table rebuild failed midway

    def drop_all_tables(self, database):
        with self._foreign_keys_off(database), self.transaction(database):
            for view in database.get_views():
                database.execute_sql(f'DROP VIEW "{view.name}"')
            tables = database.get_tables()
            for table in tables:
                database.execute_sql(f'DROP TABLE "{table}"')
        return tables

    def empty_all_tables(self, database, keep=()):
        with self._foreign_keys_off(database), self.transaction(database):
            tables = [t for t in database.get_tables() if t not in keep]
            for table in tables:
                database.execute_sql(f'DELETE FROM "{table}"')
        return tables

    def bulk_insert(self, database, table, columns, rows):
        # One prepared statement for every row: the driver's executemany is the
        # fastest path SQLite offers from Python.
        if rows:
            database.cursor().executemany(insert_statement(database, table, columns), rows)

    @contextmanager
    def _foreign_keys_off(self, database):
        database.pragma("foreign_keys", 0)
        try:
            yield
        finally:
            database.pragma("foreign_keys", 1)

    def split_statements(self, sql, first_line=1):
        statements, pending, start = [], "", first_line
        for number, line in enumerate(sql.splitlines(keepends=True), start=first_line):
            if _only_comments(pending):
                start = number
            pending += line
            if sqlite3.complete_statement(pending):
                statements.append(Statement(start, pending.strip()))
                pending = ""
        if pending.strip() and not _only_comments(pending):
            statements.append(Statement(start, pending.strip()))
        return statements


def insert_statement(database, table, columns):
    """Return ``INSERT INTO table (columns) VALUES (?, ...)`` quoted for the database."""
    context = database.get_sql_context()
    context.literal("INSERT INTO ")
    context.sql(peewee.Entity(table))
    context.literal(" (")
    context.sql(peewee.CommaNodeList([peewee.Entity(column) for column in columns]))
    context.literal(") VALUES (" + ", ".join([database.param] * len(columns)) + ")")
    return context.query()[0]


def _only_comments(sql):
    return all(not line.strip() or line.strip().startswith("--") for line in sql.splitlines())


def _raise_on_foreign_key_violations(database):
    violations = database.execute_sql("PRAGMA foreign_key_check").fetchall()
    if violations:
        table, rowid, parent, _ = violations[0]
        raise MigrationFailed(
            f"{len(violations)} row(s) break a foreign key, e.g. {table} rowid {rowid} "
            f"points to a missing {parent} row"
        )


ENGINES = {peewee.SqliteDatabase: SqliteEngine}


def engine_for(database):
    """Return the Engine for a peewee Database."""
    for database_class, engine_class in ENGINES.items():
        if isinstance(database, database_class):
            return engine_class()
    raise ConfigError(
        f"{type(database).__name__} is not supported yet: this version runs on SQLite only"
    )
