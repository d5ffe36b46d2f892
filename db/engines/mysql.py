"""MySQL and MariaDB: GET_LOCK, non-transactional DDL, multi-row inserts (PyMySQL)."""

from contextlib import contextmanager

import peewee
from playhouse.migrate import MySQLMigrator

from db.engines.base import (
    LOCK_TIMEOUT_SECONDS,
    ServerEngine,
    quoted,
)
from db.errors import LockTimeout

UNKNOWN_DATABASE = 1049
CHARSET = "utf8mb4"
# Binary collation: 'Admin' is not 'admin', as on SQLite and PostgreSQL (the default
# *_general_ci would let CHECKs, unique keys and look-ups ignore case).
COLLATION = "utf8mb4_bin"


class MySQLEngine(ServerEngine):
    """MySQL / MariaDB, through PyMySQL. DDL commits implicitly: see transactional_ddl."""

    maintenance_database = "information_schema"
    create_right = "CREATE"
    name = "MySQL"
    key = "mysql"
    schemes = ("mysql",)
    database_class = peewee.MySQLDatabase
    driver_extra = "mysql"
    transactional_ddl = False
    datetime_precision = 0  # DATETIME, as the migrations declare it, keeps whole seconds
    foreign_keys_make_indexes = True
    current_schema = "DATABASE()"

    def check_constraints(self, database, table):
        query = (
            "SELECT check_clause FROM information_schema.check_constraints "
            "WHERE constraint_schema = DATABASE() AND table_name = %s"
        )
        return [expression for (expression,) in database.execute_sql(query, (table,))]

    def finish_interrupted_restore(self, database):
        from db.backups.mysql import finish_interrupted_swap

        return finish_interrupted_swap(database)

    def stats_reader(self, url):
        from db.stats import MySQLStats

        return MySQLStats(url)

    def planner(self):
        from db.explain import MySQLPlanner

        return MySQLPlanner()

    def optimize(self, database):
        from db.maintenance import optimize_mysql

        return optimize_mysql(database)

    def schema_sql(self, database, url):
        from db.schema_dump import mysql_schema

        return mysql_schema(database, url)

    def backup_format(self):
        from db.backups.mysql import MySQLBackups

        return MySQLBackups()

    def is_unknown_database(self, exc, url):
        return _error_code(exc.__cause__) == UNKNOWN_DATABASE

    def create_database(self, maintenance, name):
        maintenance.execute_sql(
            f"CREATE DATABASE IF NOT EXISTS {quoted(maintenance, name)} "
            f"CHARACTER SET {CHARSET} COLLATE {COLLATION}"
        )

    def drop_database(self, maintenance, name):
        maintenance.execute_sql(f"DROP DATABASE IF EXISTS {quoted(maintenance, name)}")

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

    @contextmanager
    def consistent_read(self, database):
        # peewee's BEGIN would take its snapshot only at the first read; this takes it now.
        with database.manual_commit():
            database.execute_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            try:
                yield
            finally:
                database.execute_sql("COMMIT")

    def identity(self, database):
        # The server (its host name, port and data folder) and the database on it.
        return database.execute_sql("SELECT @@hostname, @@port, @@datadir, DATABASE()").fetchone()

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
