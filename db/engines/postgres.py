"""PostgreSQL: advisory locks, transactional DDL, COPY for bulk loads (psycopg 3)."""

from contextlib import contextmanager

import peewee
from playhouse.migrate import PostgresqlMigrator

from db.engines.base import (
    LOCK_TIMEOUT_SECONDS,
    Replication,
    ServerEngine,
    StandbyInfo,
    database_name_of,
    quoted,
    retry_until,
)
from db.errors import LockTimeout

LOCK_KEY = 0x636C6F6E  # "clon": one advisory lock per database for migrate/seed/reset
UNKNOWN_DATABASE = "3D000"


class PostgresEngine(ServerEngine):
    """PostgreSQL, through psycopg 3."""

    maintenance_database = "postgres"
    create_right = "CREATEDB"
    name = "PostgreSQL"
    key = "postgres"
    schemes = ("postgresql", "postgres")
    database_class = peewee.PostgresqlDatabase
    driver_extra = "postgres"
    row_level_security = True  # migration 004's policies
    has_standbys = True  # streaming replication: see replication() and primary_of()
    current_schema = "current_schema()"

    def check_constraints(self, database, table):
        query = (
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "JOIN pg_class t ON t.oid = c.conrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE c.contype = 'c' AND t.relname = %s AND n.nspname = current_schema()"
        )
        return [expression for (expression,) in database.execute_sql(query, (table,))]

    def invalid_indexes(self, database):
        query = (
            "SELECT i.relname, t.relname FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE NOT x.indisvalid AND n.nspname = current_schema() ORDER BY 1"
        )
        return [tuple(row) for row in database.execute_sql(query).fetchall()]

    def primary_of(self, database):
        if not _in_recovery(database):
            return None
        return _sender(database) or "an unknown primary (its WAL receiver is not connected)"

    def replication(self, database):
        if not _in_recovery(database):
            standbys = database.execute_sql(
                "SELECT application_name, host(client_addr), state, "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, "
                "EXTRACT(EPOCH FROM replay_lag)::float "
                "FROM pg_stat_replication ORDER BY application_name, client_addr"
            ).fetchall()
            return Replication("primary", tuple(StandbyInfo(*row) for row in standbys))
        # Seconds behind: the age of the last replayed transaction while WAL waits to be
        # replayed; none waiting, the standby is not behind however idle the primary is.
        lag_bytes, lag_seconds = database.execute_sql(
            "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint, "
            "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
            "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END::float"
        ).fetchone()
        sender = _sender(database)
        halted = None if sender else "its WAL receiver is not connected to a primary"
        return Replication("standby", (), sender, lag_bytes, lag_seconds, halted)

    def is_unknown_database(self, exc, url):
        # libpq reports a missing database at connection time without an
        # SQLSTATE, so the server's own words are checked as well.
        missing = f'database "{database_name_of(url)}" does not exist'
        return sqlstate(exc.__cause__) == UNKNOWN_DATABASE or missing in str(exc)

    def create_database(self, maintenance, name):
        maintenance.connection().autocommit = True
        maintenance.execute_sql(f"CREATE DATABASE {quoted(maintenance, name)}")

    def drop_database(self, maintenance, name):
        maintenance.connection().autocommit = True
        maintenance.execute_sql(f"DROP DATABASE IF EXISTS {quoted(maintenance, name)} WITH (FORCE)")

    def migrator(self, database):
        return PostgresqlMigrator(database)

    @contextmanager
    def migration_lock(self, database, timeout=LOCK_TIMEOUT_SECONDS):
        # A session-level advisory lock: PostgreSQL releases it when the
        # connection ends, so a crashed process never leaves it behind.
        retry_until(
            lambda: _try_lock(database),
            timeout,
            interval=0.1,
            timed_out=lambda _: LockTimeout(
                f"another process has held the migration lock of {database.database} "
                f"for more than {timeout} s; is a migration still running?"
            ),
        )
        try:
            yield
        finally:
            database.execute_sql("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))

    @contextmanager
    def consistent_read(self, database):
        with database.atomic():
            database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield

    def identity(self, database):
        # The server (when it started, to the microsecond) and the database's oid on it:
        # a host name and its address, a socket and TCP, reach the same database.
        return database.execute_sql(
            "SELECT pg_postmaster_start_time(), d.oid "
            "FROM pg_database d WHERE d.datname = current_database()"
        ).fetchone()

    def restart_sequences(self, database, tables):
        # Rows copied with their ids leave a serial column's sequence where it was:
        # the next insert would take id 1 again and collide.
        for table in tables:
            for column in database.get_columns(table):
                (sequence,) = database.execute_sql(
                    "SELECT pg_get_serial_sequence(%s, %s)", (quoted(database, table), column.name)
                ).fetchone()
                if sequence:
                    database.execute_sql(
                        f"SELECT setval(%s, COALESCE(MAX({quoted(database, column.name)}), 0) + 1, "
                        f"false) FROM {quoted(database, table)}",
                        (sequence,),
                    )

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


def _in_recovery(database):
    return database.execute_sql("SELECT pg_is_in_recovery()").fetchone()[0]


def _sender(database):
    """Return host:port of the primary a standby streams from, or None when unknown."""
    row = database.execute_sql(
        "SELECT sender_host, sender_port FROM pg_stat_wal_receiver WHERE sender_host IS NOT NULL"
    ).fetchone()
    return f"{row[0]}:{row[1]}" if row else None


def _try_lock(database):
    return database.execute_sql("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]


def sqlstate(exc):
    """Return the SQLSTATE of a driver error hidden under peewee's, if any."""
    while exc is not None:
        state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if state:
            return state
        exc = exc.__cause__ or exc.__context__
    return None
