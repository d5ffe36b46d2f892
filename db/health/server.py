"""What each engine keeps about itself, as db.health's checks need it.

Every function takes the engine and an open database and returns plain numbers, or
None where the engine does not keep them (SQLite has no sessions, no server-wide cache):
the check is then not shown. The caller's own connection never counts, and sessions
count only on this database (the server's other databases are someone else's to watch);
connections and the cache are the server's.

- PostgreSQL: pg_stat_activity (connections, transactions, idle sessions),
  pg_stat_user_tables (dead rows), pg_stat_database (cache hits), pg_replication_slots.
- MariaDB/MySQL: the global status and variables, information_schema's INNODB_TRX,
  PROCESSLIST and TABLES (data_free: fragmentation). INNODB_TRX needs the PROCESS right.
- SQLite: the free-list pages of the file.
"""

import functools

from db.engines.mysql import MySQLEngine
from db.engines.postgres import PostgresEngine
from db.engines.sqlite import SqliteEngine

CACHE_READS_TO_JUDGE = 10_000  # below this many reads a hit ratio says little
DEAD_ROWS_TO_JUDGE = 1_000  # PostgreSQL: a table with fewer dead rows is not judged
FRAGMENTED_BYTES_TO_JUDGE = 10 * 2**20  # InnoDB: tables smaller than this are not judged
FREE_PAGES_TO_JUDGE = 256  # SQLite: fewer free pages than this are not judged
TABLE_READS_TO_JUDGE = 1_000  # a table's indexes are judged unused once it was read this much


def _session(pid, user, application, database):
    who = f"{user}" + (f", application {application!r}" if application else "")
    where = f" on {database}" if database else ""
    return f"session {pid} ({who}){where}"


# --- connections -------------------------------------------------------------------------


@functools.singledispatch
def connections_in_use(engine, database):
    """Return (connections in use, the most the server accepts), or None."""
    return None


@connections_in_use.register
def _(engine: PostgresEngine, database):
    return database.execute_sql(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), "
        "current_setting('max_connections')::int "
        "- current_setting('superuser_reserved_connections')::int"
    ).fetchone()


@connections_in_use.register
def _(engine: MySQLEngine, database):
    connected = _status(database, "Threads_connected")
    maximum = database.execute_sql("SELECT @@max_connections").fetchone()[0]
    return int(connected), int(maximum)


# --- transactions ------------------------------------------------------------------------


@functools.singledispatch
def oldest_transaction(engine, database):
    """Return (seconds the oldest open transaction has run, who runs it), (0.0, None)
    when none is open, or None."""
    return None


@oldest_transaction.register
def _(engine: PostgresEngine, database):
    row = database.execute_sql(
        "SELECT EXTRACT(EPOCH FROM now() - xact_start)::float, pid, usename, "
        "application_name, datname FROM pg_stat_activity "
        "WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() "
        "AND datname = current_database() AND backend_type = 'client backend' "
        "ORDER BY xact_start LIMIT 1"
    ).fetchone()
    return (0.0, None) if row is None else (max(0.0, row[0]), _session(*row[1:]))


@oldest_transaction.register
def _(engine: MySQLEngine, database):
    row = database.execute_sql(
        "SELECT TIMESTAMPDIFF(SECOND, t.trx_started, NOW()), t.trx_mysql_thread_id, p.user, "
        "NULL, p.db FROM information_schema.INNODB_TRX t "
        "LEFT JOIN information_schema.PROCESSLIST p ON p.id = t.trx_mysql_thread_id "
        "WHERE t.trx_mysql_thread_id <> CONNECTION_ID() AND p.db = DATABASE() "
        "ORDER BY t.trx_started LIMIT 1"
    ).fetchone()
    return (0.0, None) if row is None else (float(max(0, row[0])), _session(*row[1:]))


@functools.singledispatch
def idle_in_transaction(engine, database):
    """Return (sessions idle inside a transaction, the longest one's idle seconds, who it
    is), or None."""
    return None


@idle_in_transaction.register
def _(engine: PostgresEngine, database):
    rows = database.execute_sql(
        "SELECT EXTRACT(EPOCH FROM now() - state_change)::float, pid, usename, "
        "application_name, datname FROM pg_stat_activity "
        "WHERE state IN ('idle in transaction', 'idle in transaction (aborted)') "
        "AND pid <> pg_backend_pid() AND datname = current_database() ORDER BY state_change"
    ).fetchall()
    return _idle(rows)


@idle_in_transaction.register
def _(engine: MySQLEngine, database):
    rows = database.execute_sql(
        "SELECT p.time, p.id, p.user, NULL, p.db FROM information_schema.INNODB_TRX t "
        "JOIN information_schema.PROCESSLIST p ON p.id = t.trx_mysql_thread_id "
        "WHERE p.command = 'Sleep' AND p.id <> CONNECTION_ID() AND p.db = DATABASE() "
        "ORDER BY p.time DESC"
    ).fetchall()
    return _idle(rows)


def _idle(rows):
    if not rows:
        return 0, 0.0, None
    seconds, *session = rows[0]
    return len(rows), float(max(0, seconds)), _session(*session)


# --- space -------------------------------------------------------------------------------


@functools.singledispatch
def bloat(engine, database):
    """Return (the worst wasted share, where), or None."""
    return None


@bloat.register
def _(engine: PostgresEngine, database):
    row = database.execute_sql(
        "SELECT n_dead_tup::float / (n_live_tup + n_dead_tup), relname, n_dead_tup "
        "FROM pg_stat_user_tables WHERE schemaname = current_schema() AND n_dead_tup >= %s "
        "ORDER BY 1 DESC LIMIT 1",
        (DEAD_ROWS_TO_JUDGE,),
    ).fetchone()
    if row is None:
        return 0.0, f"no table has {DEAD_ROWS_TO_JUDGE:,} dead rows"
    share, table, dead = row
    return share, f"{table}: {dead:,} dead rows (invoke db.optimize vacuums them)"


@bloat.register
def _(engine: MySQLEngine, database):
    row = database.execute_sql(
        "SELECT data_free / (data_length + index_length + data_free), table_name, data_free "
        "FROM information_schema.TABLES WHERE table_schema = DATABASE() "
        "AND table_type = 'BASE TABLE' AND data_length + index_length + data_free >= %s "
        "ORDER BY 1 DESC LIMIT 1",
        (FRAGMENTED_BYTES_TO_JUDGE,),
    ).fetchone()
    if row is None:
        return 0.0, f"no table of {FRAGMENTED_BYTES_TO_JUDGE // 2**20} MiB or more"
    share, table, free = row
    return float(share), f"{table}: {free / 2**20:.1f} MiB free inside (invoke db.optimize)"


@bloat.register
def _(engine: SqliteEngine, database):
    free = database.pragma("freelist_count")
    pages = database.pragma("page_count")
    if free < FREE_PAGES_TO_JUDGE:
        return 0.0, f"{free} free pages (fewer than {FREE_PAGES_TO_JUDGE} are not judged)"
    return free / pages, f"{free:,} of {pages:,} pages free (invoke db.optimize reclaims them)"


# --- cache -------------------------------------------------------------------------------


@functools.singledispatch
def cache_hits(engine, database):
    """Return (reads served from memory, all reads) since the statistics began, or None."""
    return None


@cache_hits.register
def _(engine: PostgresEngine, database):
    hits, reads = database.execute_sql(
        "SELECT blks_hit, blks_hit + blks_read FROM pg_stat_database "
        "WHERE datname = current_database()"
    ).fetchone()
    return int(hits), int(reads)


@cache_hits.register
def _(engine: MySQLEngine, database):
    requests = int(_status(database, "Innodb_buffer_pool_read_requests"))
    from_disk = int(_status(database, "Innodb_buffer_pool_reads"))
    return requests - from_disk, requests


def _status(database, name):
    return database.execute_sql("SHOW GLOBAL STATUS LIKE %s", (name,)).fetchone()[1]


# --- index use ---------------------------------------------------------------------------


@functools.singledispatch
def table_reads(engine, database):
    """Return {table: how often it was read} since the statistics were reset: PostgreSQL's
    scans, MariaDB's rows read (userstat); {} where the engine does not count."""
    return {}


@table_reads.register
def _(engine: PostgresEngine, database):
    rows = database.execute_sql(
        "SELECT relname, seq_scan + COALESCE(idx_scan, 0) FROM pg_stat_user_tables "
        "WHERE schemaname = current_schema()"
    )
    return dict(rows.fetchall())


@table_reads.register
def _(engine: MySQLEngine, database):
    rows = database.execute_sql(
        "SELECT table_name, rows_read FROM information_schema.TABLE_STATISTICS "
        "WHERE table_schema = DATABASE()"
    )
    return {name: int(count) for name, count in rows.fetchall()}


# --- replication -------------------------------------------------------------------------


@functools.singledispatch
def inactive_slots(engine, database):
    """Return the names of replication slots no standby uses (PostgreSQL keeps WAL for them)."""
    return []


@inactive_slots.register
def _(engine: PostgresEngine, database):
    rows = database.execute_sql(
        "SELECT slot_name FROM pg_replication_slots WHERE NOT active ORDER BY slot_name"
    )
    return [name for (name,) in rows.fetchall()]
