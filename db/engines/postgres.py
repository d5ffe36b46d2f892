"""PostgreSQL: advisory locks, transactional DDL, COPY for bulk loads (psycopg 3).

A tenant (db/tenants.py) is a schema of the database, ``tenant_<name>``: its URL is the
database's with ``?tenant=<name>``, and a connection to it works in that schema alone
(``search_path``), so every task works on a tenant as on a database. Its role
``<database>__<name>`` may use that schema's tables and nothing else: the app's binding
(``db.tenants.tenant``) logs in as it, so raw SQL there cannot reach another tenant.
"""

from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit

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

LOCK_KEY = 0x636C6F6E  # "clon": one advisory lock per schema for migrate/seed/reset
TENANT_PARAMETER = "tenant"  # ?tenant=NAME: the tenant's schema of the URL's database
TENANT_SCHEMA_PREFIX = "tenant_"
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

    def connect(self, url, **options):
        base, tenant = split_tenant(url)
        if tenant is not None:
            options["options"] = f"-c search_path={tenant_schema(tenant)}"
        return super().connect(base, **options)

    def connect_existing(self, url):
        database = super().connect_existing(url)
        tenant = split_tenant(url)[1]
        if database is None or tenant is None or _has_schema(database, tenant_schema(tenant)):
            return database
        database.close()
        return None

    def create(self, url):
        base, tenant = split_tenant(url)
        if tenant is None or not super().exists(base):
            super().create(base)
        if tenant is not None:
            database = super().connect(base)
            try:
                with database.atomic():
                    create_tenant_schema(database, tenant)
            finally:
                database.close()

    def drop(self, url):
        base, tenant = split_tenant(url)
        if tenant is None:
            return super().drop(url)
        database = super().connect_existing(base)
        if database is not None:
            try:
                with database.atomic():
                    drop_tenant_schema(database, tenant)
            finally:
                database.close()

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
        # Its tenants' roles served that database alone (tenant_role).
        for (role,) in maintenance.execute_sql(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (f"{name}__",)
        ).fetchall():
            maintenance.execute_sql(f"DROP ROLE IF EXISTS {quoted(maintenance, role)}")

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
                f"another process has held the migration lock of {_where(database)} "
                f"for more than {timeout} s; is a migration still running?"
            ),
        )
        try:
            yield
        finally:
            database.execute_sql(f"SELECT pg_advisory_unlock({SCHEMA_LOCK})")

    @contextmanager
    def consistent_read(self, database):
        with database.atomic():
            database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield

    def identity(self, database):
        # The server (when it started, to the microsecond), the database's oid on it and
        # the schema (a tenant's): a host name and its address, a socket and TCP, reach
        # the same database.
        return database.execute_sql(
            "SELECT pg_postmaster_start_time(), d.oid, current_schema() "
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


# The migration lock of the schema the connection works in: each tenant's is its own.
SCHEMA_LOCK = f"{LOCK_KEY}, hashtext(current_schema())"


def _try_lock(database):
    return database.execute_sql(f"SELECT pg_try_advisory_lock({SCHEMA_LOCK})").fetchone()[0]


def _where(database):
    (schema,) = database.execute_sql("SELECT current_schema()").fetchone()
    return database.database if schema == "public" else f"{database.database} ({schema})"


# -- tenants: a schema and a role each ------------------------------------------------------


def split_tenant(url):
    """Return (the URL without ``?tenant=``, the tenant's name or None)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    tenants = [value for key, value in pairs if key == TENANT_PARAMETER]
    if not tenants:
        return url, None
    rest = urlencode([(key, value) for key, value in pairs if key != TENANT_PARAMETER])
    return parts._replace(query=rest).geturl(), tenants[-1]


def with_tenant(url, name):
    """Return the URL of tenant ``name`` of the URL's database."""
    base = split_tenant(url)[0]
    return f"{base}{'&' if '?' in base else '?'}{TENANT_PARAMETER}={name}"


def tenant_schema(name):
    return f"{TENANT_SCHEMA_PREFIX}{name}"


def tenant_role(database_name, name):
    """Return the role of tenant ``name`` of a database: roles are the server's, so the
    database's name is part of it."""
    return f"{database_name}__{name}"


def tenant_names(database):
    """Return the names of the database's tenants (its tenant_* schemas), sorted."""
    rows = database.execute_sql(
        "SELECT substr(nspname, %s) FROM pg_namespace WHERE starts_with(nspname, %s) ORDER BY 1",
        (len(TENANT_SCHEMA_PREFIX) + 1, TENANT_SCHEMA_PREFIX),
    ).fetchall()
    return [name for (name,) in rows]


def create_tenant_schema(database, name):
    """Create the tenant's schema and its role, which may read and write the tables that
    migrations will create there (and only use that schema)."""
    schema = quoted(database, tenant_schema(name))
    role = tenant_role(database.database, name)
    exists = database.execute_sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    role = quoted(database, role)
    # LOGIN, without a password: where the server asks for one, none is accepted until
    # an operator sets it (ALTER ROLE ... PASSWORD); trust, peer and certificates work.
    database.execute_sql(f"{'ALTER' if exists else 'CREATE'} ROLE {role} LOGIN")
    database.execute_sql(f"GRANT {role} TO CURRENT_USER")  # to drop what it owns, later
    database.execute_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    database.execute_sql(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    database.execute_sql(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"
    )
    database.execute_sql(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}"
    )


def drop_tenant_schema(database, name):
    """Drop the tenant's schema with everything in it, and its role."""
    role = tenant_role(database.database, name)
    database.execute_sql(f"DROP SCHEMA IF EXISTS {quoted(database, tenant_schema(name))} CASCADE")
    if database.execute_sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        database.execute_sql(f"DROP OWNED BY {quoted(database, role)}")  # its default privileges
        database.execute_sql(f"DROP ROLE {quoted(database, role)}")


def _has_schema(database, schema):
    query = "SELECT 1 FROM pg_namespace WHERE nspname = %s"
    return database.execute_sql(query, (schema,)).fetchone() is not None


def sqlstate(exc):
    """Return the SQLSTATE of a driver error hidden under peewee's, if any."""
    while exc is not None:
        state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if state:
            return state
        exc = exc.__cause__ or exc.__context__
    return None
