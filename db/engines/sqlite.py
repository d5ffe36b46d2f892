"""SQLite: a file, a file lock beside it, IMMEDIATE transactions.

Connections run with foreign keys on, the WAL journal and a busy timeout, so a
writer waits for another instead of failing with "database is locked".
"""

import os
import re
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import filelock
import peewee
from playhouse import db_url
from playhouse.migrate import SqliteMigrator, operation

from db.config import mask_url
from db.engines.base import LOCK_TIMEOUT_SECONDS, Engine, Statement, _only_comments
from db.errors import ConfigError, LockTimeout, MigrationFailed

BUSY_TIMEOUT_SECONDS = 60
PRAGMAS = {"foreign_keys": 1, "journal_mode": "wal"}


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

    name = "SQLite"
    key = "sqlite"
    schemes = ("sqlite",)
    database_class = peewee.SqliteDatabase

    def check_constraints(self, database, table):
        (sql,) = database.execute_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return check_clauses(sql)

    def triggers(self, database):
        sql = "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'"
        return dict(database.execute_sql(sql).fetchall())

    def check_url(self, url):
        parts = urlsplit(url)
        if parts.username or parts.password or parts.port:
            raise ConfigError(
                f"{mask_url(url)}: an SQLite URL takes no user, password or port; "
                "use sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        path = sqlite_path(url)
        if path != ":memory:":
            folder = Path(path).expanduser().resolve().parent
            if not folder.is_dir():
                raise ConfigError(
                    f"cannot create the SQLite file {path}: folder {folder} does not exist"
                )

    def exists(self, url):
        path = sqlite_path(url)
        return path == ":memory:" or Path(path).expanduser().exists()

    def create(self, url):
        pass  # connecting creates the file

    def drop(self, url):
        path = sqlite_path(url)
        if path != ":memory:":
            for suffix in ("", "-wal", "-shm", ".migrate.lock"):
                Path(path + suffix).unlink(missing_ok=True)

    def connect(self, url, **options):
        return super().connect(url, pragmas=PRAGMAS, timeout=BUSY_TIMEOUT_SECONDS, **options)

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

    def tables(self, database):
        # sqlite_sequence, sqlite_stat1...: SQLite's own, made and kept by SQLite itself.
        return [t for t in database.get_tables() if not t.startswith("sqlite_")]

    @contextmanager
    def consistent_read(self, database):
        # A deferred transaction takes no lock: in WAL mode it reads one snapshot, taken
        # at its first read, while writers carry on.
        with database.atomic("DEFERRED"):
            yield

    def identity(self, database):
        # The file itself, whatever path (relative, absolute, through a link) reached it.
        path = database.execute_sql("PRAGMA database_list").fetchone()[2]
        if not path:
            return ("memory", id(database))
        status = os.stat(path)
        return ("file", status.st_dev, status.st_ino)

    def drop_all_tables(self, database):
        with self._foreign_keys_off(database), self.transaction(database):
            for view in database.get_views():
                database.execute_sql(f'DROP VIEW "{view.name}"')
            tables = database.get_tables()
            for table in tables:
                # IF EXISTS: a virtual table (FTS5) takes its shadow tables along.
                database.execute_sql(f'DROP TABLE IF EXISTS "{table}"')
        _give_back_free_pages(database)
        return tables

    def empty_all_tables(self, database, keep=()):
        with self._foreign_keys_off(database), self.transaction(database):
            tables = [t for t in database.get_tables() if t not in keep]
            kinds = _table_kinds(database)
            plain = [t for t in tables if kinds.get(t) == "table"]
            # A trigger may write a table already emptied (005's rewrite an image's search
            # row when its tags go): delete again until every table stays empty.
            while sum(_delete_all(database, table) for table in plain):
                pass
            for table in tables:
                if kinds.get(table) == "virtual":  # its shadow tables are its own to empty
                    _empty_virtual(database, table)
            tables = [t for t in tables if kinds.get(t) != "shadow"]
        _give_back_free_pages(database)
        return tables

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


def sqlite_path(url):
    """Return the file path of an SQLite URL (``:memory:`` for an in-memory one)."""
    return db_url.parse(url)["database"]


def _raise_on_foreign_key_violations(database):
    violations = database.execute_sql("PRAGMA foreign_key_check").fetchall()
    if violations:
        table, rowid, parent, _ = violations[0]
        raise MigrationFailed(
            f"{len(violations)} row(s) break a foreign key, e.g. {table} rowid {rowid} "
            f"points to a missing {parent} row"
        )


def _table_kinds(database):
    """Return {table: "table", "virtual" or "shadow"} (a shadow table is a virtual table's
    storage, written by it alone)."""
    rows = database.execute_sql("SELECT name, type FROM pragma_table_list WHERE schema = 'main'")
    return dict(rows.fetchall())


def _delete_all(database, table):
    """Delete every row of ``table``; return how many there were."""
    return database.execute_sql(f'DELETE FROM "{table}"').rowcount


def _empty_virtual(database, table):
    """Empty a virtual table: an FTS5 index of external content by its 'delete-all'
    command (a DELETE would read the content, already gone), any other by DELETE."""
    try:
        database.execute_sql(f'INSERT INTO "{table}" ("{table}") VALUES (\'delete-all\')')
    except peewee.OperationalError:
        database.execute_sql(f'DELETE FROM "{table}"')


def _give_back_free_pages(database):
    """Shrink the file to what it holds: SQLite keeps the pages of dropped or emptied
    tables for reuse, so a reset gallery would stay as large as it was."""
    database.execute_sql("VACUUM")


def check_clauses(sql):
    """Return the expressions of every CHECK (...) in an SQLite CREATE TABLE statement."""
    clauses = []
    for match in re.finditer(r"\bCHECK\s*\(", sql, re.IGNORECASE):
        depth, start = 1, match.end()
        for position in range(start, len(sql)):
            depth += {"(": 1, ")": -1}.get(sql[position], 0)
            if depth == 0:
                clauses.append(sql[start:position])
                break
    return clauses
