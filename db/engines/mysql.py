"""MySQL and MariaDB: GET_LOCK, non-transactional DDL, multi-row inserts (PyMySQL)."""

from contextlib import contextmanager

import peewee
from playhouse.migrate import MySQLMigrator

from db.config import mask_url
from db.engines.base import (
    LOCK_TIMEOUT_SECONDS,
    Engine,
    database_name_of,
    quoted,
    with_database,
)
from db.errors import ConfigError, ConnectionFailed, LockTimeout, one_line

MAINTENANCE_DATABASE = "information_schema"
UNKNOWN_DATABASE = 1049
CHARSET = "utf8mb4"
# Binary collation: 'Admin' is not 'admin', as on SQLite and PostgreSQL (the default
# *_general_ci would let CHECKs, unique keys and look-ups ignore case).
COLLATION = "utf8mb4_bin"


class MySQLEngine(Engine):
    """MySQL / MariaDB, through PyMySQL. DDL commits implicitly: see transactional_ddl."""

    name = "MySQL"
    schemes = ("mysql",)
    database_class = peewee.MySQLDatabase
    driver_extra = "mysql"
    transactional_ddl = False

    def exists(self, url):
        try:
            self.connect(url).close()
        except ConnectionFailed as exc:
            if _error_code(exc.__cause__) == UNKNOWN_DATABASE:
                return False
            raise
        return True

    def create(self, url):
        name = database_name_of(url)
        maintenance = self.connect(with_database(url, MAINTENANCE_DATABASE))
        try:
            maintenance.execute_sql(
                f"CREATE DATABASE IF NOT EXISTS {quoted(maintenance, name)} "
                f"CHARACTER SET {CHARSET} COLLATE {COLLATION}"
            )
        except peewee.DatabaseError as exc:
            raise ConfigError(
                f"cannot create database {name!r} on {mask_url(url)}: {one_line(exc)} "
                "(create it by hand or grant CREATE)"
            ) from exc
        finally:
            maintenance.close()

    def drop(self, url):
        maintenance = self.connect(with_database(url, MAINTENANCE_DATABASE))
        try:
            name = quoted(maintenance, database_name_of(url))
            maintenance.execute_sql(f"DROP DATABASE IF EXISTS {name}")
        finally:
            maintenance.close()

    def connect(self, url, **options):
        return super().connect(url, charset=CHARSET, **options)

    def migrator(self, database):
        return MySQLMigrator(database)

    @contextmanager
    def migration_lock(self, database, timeout=LOCK_TIMEOUT_SECONDS):
        # GET_LOCK is held by the connection and released when it ends, so a
        # crashed process never leaves it behind. Its name is server-wide.
        name = f"clonegallery_migrate_{database.database}"[:64]
        granted = database.execute_sql("SELECT GET_LOCK(%s, %s)", (name, timeout)).fetchone()[0]
        if granted != 1:
            raise LockTimeout(
                f"another process has held the migration lock of {database.database} "
                f"for more than {timeout} s; is a migration still running?"
            )
        try:
            yield
        finally:
            database.execute_sql("SELECT RELEASE_LOCK(%s)", (name,))

    def drop_all_tables(self, database):
        tables = database.get_tables()
        with self._foreign_keys_off(database):
            for view in database.get_views():
                database.execute_sql(f"DROP VIEW IF EXISTS {quoted(database, view.name)}")
            for table in tables:
                database.execute_sql(f"DROP TABLE IF EXISTS {quoted(database, table)}")
        return tables

    def empty_all_tables(self, database, keep=()):
        tables = [t for t in database.get_tables() if t not in keep]
        with self._foreign_keys_off(database):
            for table in tables:
                database.execute_sql(f"TRUNCATE TABLE {quoted(database, table)}")
        return tables

    @contextmanager
    def _foreign_keys_off(self, database):
        database.execute_sql("SET FOREIGN_KEY_CHECKS = 0")
        try:
            yield
        finally:
            database.execute_sql("SET FOREIGN_KEY_CHECKS = 1")


def _error_code(exc):
    """Return the MySQL error number of a driver error hidden under peewee's, if any."""
    while exc is not None:
        if exc.args and isinstance(exc.args[0], int):
            return exc.args[0]
        exc = exc.__cause__ or exc.__context__
    return None
