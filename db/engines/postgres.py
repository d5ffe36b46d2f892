"""PostgreSQL: advisory locks, transactional DDL, COPY for bulk loads (psycopg 3)."""

import time
from contextlib import contextmanager

import peewee
from playhouse.migrate import PostgresqlMigrator

from db.config import mask_url
from db.engines.base import (
    LOCK_TIMEOUT_SECONDS,
    Engine,
    database_name_of,
    quoted,
    with_database,
)
from db.errors import ConfigError, ConnectionFailed, LockTimeout, one_line

MAINTENANCE_DATABASE = "postgres"
LOCK_KEY = 0x636C6F6E  # "clon": one advisory lock per database for migrate/seed/reset
UNKNOWN_DATABASE = "3D000"


class PostgresEngine(Engine):
    """PostgreSQL, through psycopg 3."""

    name = "PostgreSQL"
    schemes = ("postgresql", "postgres")
    database_class = peewee.PostgresqlDatabase
    driver_extra = "postgres"

    def exists(self, url):
        try:
            self.connect(url).close()
        except ConnectionFailed as exc:
            # libpq reports a missing database at connection time without an
            # SQLSTATE, so the server's own words are checked as well.
            missing = f'database "{database_name_of(url)}" does not exist'
            if _sqlstate(exc.__cause__) == UNKNOWN_DATABASE or missing in str(exc):
                return False
            raise
        return True

    def create(self, url):
        name = database_name_of(url)
        maintenance = self.connect(with_database(url, MAINTENANCE_DATABASE))
        try:
            maintenance.connection().autocommit = True
            maintenance.execute_sql(f"CREATE DATABASE {quoted(maintenance, name)}")
        except peewee.DatabaseError as exc:
            if self.exists(url):  # created meanwhile by a concurrent run
                return
            raise ConfigError(
                f"cannot create database {name!r} on {mask_url(url)}: {one_line(exc)} "
                "(create it by hand or grant CREATEDB)"
            ) from exc
        finally:
            maintenance.close()

    def drop(self, url):
        if not self.exists(url):
            return
        maintenance = self.connect(with_database(url, MAINTENANCE_DATABASE))
        try:
            maintenance.connection().autocommit = True
            name = quoted(maintenance, database_name_of(url))
            maintenance.execute_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            maintenance.close()

    def migrator(self, database):
        return PostgresqlMigrator(database)

    @contextmanager
    def migration_lock(self, database, timeout=LOCK_TIMEOUT_SECONDS):
        # A session-level advisory lock: PostgreSQL releases it when the
        # connection ends, so a crashed process never leaves it behind.
        deadline = time.monotonic() + timeout
        while not _try_lock(database):
            if time.monotonic() > deadline:
                raise LockTimeout(
                    f"another process has held the migration lock of {database.database} "
                    f"for more than {timeout} s; is a migration still running?"
                )
            time.sleep(0.1)
        try:
            yield
        finally:
            database.execute_sql("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))

    def drop_all_tables(self, database):
        with self.transaction(database):
            for view in database.get_views():
                database.execute_sql(f"DROP VIEW IF EXISTS {quoted(database, view.name)} CASCADE")
            tables = database.get_tables()
            for table in tables:
                database.execute_sql(f"DROP TABLE IF EXISTS {quoted(database, table)} CASCADE")
            # Trigger functions have nothing left to serve once their tables are gone.
            functions = database.execute_sql(
                "SELECT p.oid::regprocedure::text FROM pg_proc p "
                "JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = current_schema() AND p.prorettype = 'trigger'::regtype"
            ).fetchall()
            for (function,) in functions:
                database.execute_sql(f"DROP FUNCTION {function}")
        return tables

    def empty_all_tables(self, database, keep=()):
        tables = [t for t in database.get_tables() if t not in keep]
        if tables:
            with self.transaction(database):
                listed = ", ".join(quoted(database, t) for t in tables)
                database.execute_sql(f"TRUNCATE {listed} RESTART IDENTITY CASCADE")
        return tables

    def bulk_insert(self, database, table, columns, rows):
        # COPY is PostgreSQL's bulk path: one statement streams every row.
        if not rows:
            return
        listed = ", ".join(quoted(database, c) for c in columns)
        cursor = database.cursor()
        with cursor.copy(f"COPY {quoted(database, table)} ({listed}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _try_lock(database):
    return database.execute_sql("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]


def _sqlstate(exc):
    """Return the SQLSTATE of a driver error hidden under peewee's, if any."""
    while exc is not None:
        state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if state:
            return state
        exc = exc.__cause__ or exc.__context__
    return None
