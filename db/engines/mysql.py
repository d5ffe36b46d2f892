"""MySQL and MariaDB: GET_LOCK, non-transactional DDL, multi-row inserts (PyMySQL).

Replication: a server with a replication connection configured (``SHOW ALL SLAVES
STATUS``, stopped or running) is a standby of the primary it names, whether or not it is
``read_only``: a write there would make it differ from its primary and break replication.
Promoting one means ``STOP SLAVE; RESET SLAVE ALL`` (see docs/replication.md).
"""

from contextlib import contextmanager

import peewee
from playhouse.migrate import MySQLMigrator

from db.engines.base import (
    LOCK_TIMEOUT_SECONDS,
    Replication,
    ServerEngine,
    StandbyInfo,
    quoted,
)
from db.errors import LockTimeout

UNKNOWN_DATABASE = 1049
PARSE_ERROR = 1064  # MySQL has no SHOW ALL SLAVES STATUS
ACCESS_DENIED = (1227, 1044, 1045, 1142)  # no REPLICATION CLIENT / SLAVE MONITOR right
# What a primary's binlog dump thread says once it has sent a replica everything.
ALL_SENT = "Master has sent all binlog to slave"
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
    has_standbys = True  # replicas: see replication() and primary_of()
    current_schema = "DATABASE()"

    def check_constraints(self, database, table):
        query = (
            "SELECT check_clause FROM information_schema.check_constraints "
            "WHERE constraint_schema = DATABASE() AND table_name = %s"
        )
        return [expression for (expression,) in database.execute_sql(query, (table,))]

    def finish_interrupted_restore(self, database):
        """Create again the triggers a killed restore left parked (see PARKED_TRIGGERS);
        return whether there were any."""
        if PARKED_TRIGGERS not in database.get_tables():
            return False
        unpark_triggers(database, database.database)
        return True

    def is_unknown_database(self, exc, url):
        return mysql_error_code(exc.__cause__) == UNKNOWN_DATABASE

    def primary_of(self, database):
        sources = _replica_sources(database)
        return _primaries(sources) if sources else None  # none, or the user may not ask

    def replication(self, database):
        sources = _replica_sources(database)
        if sources is None:
            return None  # the user may not ask: its role is not known
        if sources:
            return Replication(
                "standby",
                (),
                _primaries(sources),
                _worst([_relay_distance(source) for source in sources]),
                _worst([source["Seconds_Behind_Master"] for source in sources]),
                "; ".join(filter(None, map(_halted, sources))) or None,
            )
        if not database.execute_sql("SELECT @@log_bin").fetchone()[0]:
            return None  # no binary log: nothing can replicate from it
        return Replication("primary", tuple(_replicas(database)))

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


def _replica_sources(database):
    """Return the server's replication connections (one dict per primary, MariaDB's
    column names; none on a server that replicates from nobody), or None when the user
    lacks the right to ask (REPLICATION CLIENT, SLAVE MONITOR...)."""
    try:
        cursor = database.execute_sql("SHOW ALL SLAVES STATUS")
    except peewee.DatabaseError as exc:
        code = mysql_error_code(exc)
        if code in ACCESS_DENIED:
            return None
        if code != PARSE_ERROR:
            raise
        try:  # MySQL: one connection, its columns named Source_* rather than Master_*
            cursor = database.execute_sql("SHOW REPLICA STATUS")
        except peewee.DatabaseError as exc:
            if mysql_error_code(exc) in ACCESS_DENIED:
                return None
            raise
    names = [column[0].replace("Source", "Master") for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _primaries(sources):
    return ", ".join(f"{source['Master_Host']}:{source['Master_Port']}" for source in sources)


def _halted(source):
    """Return why replication from ``source`` is stopped, or None while both its threads run."""
    threads = {"IO": source["Slave_IO_Running"], "SQL": source["Slave_SQL_Running"]}
    if all(state == "Yes" for state in threads.values()):
        return None
    running = ", ".join(f"{name} thread {state or 'No'}" for name, state in threads.items())
    error = source.get("Last_Error") or source.get("Last_IO_Error")
    where = f"{source['Master_Host']}:{source['Master_Port']}"
    return f"replication from {where} is stopped ({running}{f': {error}' if error else ''})"


def _relay_distance(source):
    """Return the bytes of the primary's binary log received but not applied yet, or None
    when they are in different files (the distance between files is not known here)."""
    if source["Master_Log_File"] != source["Relay_Master_Log_File"]:
        return None
    return int(source["Read_Master_Log_Pos"]) - int(source["Exec_Master_Log_Pos"])


def _worst(lags):
    """Return the largest lag of several primaries', or None when one is not known."""
    return None if any(lag is None for lag in lags) else max(lags)


def _replicas(database):
    """Return a StandbyInfo per replica reading the binary log (the primary knows neither
    lag: only the replica does). A user without the PROCESS right sees none."""
    rows = database.execute_sql(
        "SELECT user, host, state FROM information_schema.processlist "
        "WHERE command LIKE %s ORDER BY user, host",
        ("Binlog Dump%",),  # and MySQL's "Binlog Dump GTID"
    ).fetchall()
    return [
        StandbyInfo(
            user,
            host.rsplit(":", 1)[0] if host else None,
            "streaming" if (state or "").startswith(ALL_SENT) else "catchup",
            None,
            None,
        )
        for user, host, state in rows
    ]


def mysql_error_code(exc):
    """Return the MySQL error number of a driver error hidden under peewee's, if any."""
    while exc is not None:
        if exc.args and isinstance(exc.args[0], int):
            return exc.args[0]
        exc = exc.__cause__ or exc.__context__
    return None


# -- a restore's trigger parking (db/backups/mysql.py): what a killed one leaves -------
# Triggers cannot be renamed into another database, so a restore parks their definitions
# in this table, which moves with the others; whoever opens the database next unparks
# them (MySQLEngine.finish_interrupted_restore).
PARKED_TRIGGERS = "clonegallery_parked_triggers"


def unpark_triggers(server, schema):
    """Create the parked triggers that do not exist, then drop the PARKED_TRIGGERS table."""
    if PARKED_TRIGGERS not in base_tables(server, schema):
        return
    table = f"{quoted(server, schema)}.{quoted(server, PARKED_TRIGGERS)}"
    existing = set(trigger_names(server, schema))
    parked = server.execute_sql(f"SELECT name, definition FROM {table} ORDER BY name").fetchall()
    server.execute_sql(f"USE {quoted(server, schema)}")
    for name, definition in parked:
        if name not in existing:
            # The raw cursor: a definer such as app@'%' must not be read as a parameter.
            server.cursor().execute(definition)
    server.execute_sql(f"DROP TABLE {table}")


def base_tables(server, schema):
    return catalogue_names(
        server, "table_name", "tables", "table_schema = %s AND table_type = 'BASE TABLE'", schema
    )


def trigger_names(server, schema):
    return catalogue_names(server, "trigger_name", "triggers", "trigger_schema = %s", schema)


def catalogue_names(server, column, view, condition, schema):
    """Return one column of an information_schema view, sorted, for one schema."""
    cursor = server.execute_sql(
        f"SELECT {column} FROM information_schema.{view} WHERE {condition} ORDER BY {column}",
        (schema,),
    )
    return [name for (name,) in cursor.fetchall()]
