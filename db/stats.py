"""Where the space goes and which indexes earn their keep: ``db.stats``.

    stats = database_stats(database, url, backups_dir=Path("backups"))   # a DatabaseStats
    for table in stats.tables:
        table.name, table.rows, table.data_bytes, table.index_bytes, table.indexes

Rows are counted exactly (``COUNT(*)``, all tables in one snapshot) on every engine.
Everything else comes from what each engine keeps about itself, behind one small class
per engine with the same four methods (``database_size``, ``table_sizes``, ``indexes``,
``notes``):

- SQLite: page_count * page_size, the free-list pages, the WAL file; per-table and
  per-index sizes from the ``dbstat`` table when the SQLite build has it. A table whose
  primary key is its rowid has no index of its own: it is listed as ``(rowid)``.
- PostgreSQL: ``pg_total_relation_size`` and ``pg_indexes_size`` per table, each index's
  ``pg_relation_size`` and ``idx_scan`` (pg_stat_user_indexes), ``pg_database_size``.
- MySQL/MariaDB: ``information_schema.TABLES`` (data_length, index_length, data_free:
  InnoDB's estimates) and ``STATISTICS``; index usage from MariaDB's
  ``information_schema.INDEX_STATISTICS`` (rows read through each index) when the
  server collects it (``userstat`` on).

The search tables migration 005 derives from the others (db.search.DERIVED_TABLES, and
FTS5's shadow tables) are listed too, marked ``derived``: their room counts, their rows
are the triggers'. What an engine cannot tell is None, and a note says why. Nothing
here writes.
"""

import datetime
import functools
import os
from dataclasses import dataclass

import peewee

from db.backups import Owner, created_moment, list_backups
from db.config import mask_url
from db.engines.base import quoted
from db.engines.mysql import MySQLEngine
from db.engines.postgres import PostgresEngine
from db.engines.sqlite import SqliteEngine, sqlite_path
from db.search import is_derived

ROWID = "(rowid)"
_UNREAD = object()


@dataclass(frozen=True)
class IndexStats:
    """One index: its columns, kind, size and (where the server counts it) usage."""

    name: str
    columns: list
    primary: bool
    unique: bool
    size_bytes: int | None = None
    uses: int | None = None  # None: the server does not count them

    @property
    def unused(self):
        """Whether the server saw no use of it: never for unique indexes, which enforce
        their constraint without being read; None when usage is not counted."""
        if self.uses is None:
            return None
        return self.uses == 0 and not self.unique


@dataclass(frozen=True)
class TableStats:
    """One table: its exact row count, its size on disk (data and indexes) and indexes."""

    name: str
    rows: int
    data_bytes: int | None
    index_bytes: int | None
    indexes: list
    derived: bool = False  # kept by triggers from the other tables (db.search)


@dataclass(frozen=True)
class BackupAge:
    """The database's newest backup in the backups folder and how old it is."""

    path: object
    created_at: datetime.datetime
    age_seconds: float


@dataclass(frozen=True)
class DatabaseStats:
    """What ``db.stats`` shows."""

    database: str  # the URL, masked
    engine: str
    size_bytes: int
    free_bytes: int | None
    wal_bytes: int | None
    index_usage: str | None  # what IndexStats.uses counts: "idx_scan", "rows_read" or None
    tables: list
    latest_backup: BackupAge | None
    notes: list
    engine_key: str = None  # the engine's key (sqlite, postgres, mysql), for machines


def database_stats(target, backups_dir):
    """Return the DatabaseStats of an opened db.target.Target."""
    database, url, engine = target.database, target.url, target.engine
    reader = stats_reader(engine, url)
    with engine.consistent_read(database):
        names = sorted(engine.tables(database))
        sizes = reader.table_sizes(database)
        tables = [
            TableStats(
                name,
                _row_count(database, name),
                *sizes.get(name, (None, None)),
                reader.indexes(database, name),
                is_derived(name),
            )
            for name in names
        ]
        size, free, wal = reader.database_size(database)
        notes = reader.notes(database)
    return DatabaseStats(
        mask_url(url),
        engine.name,
        size,
        free,
        wal,
        reader.index_usage if reader.counts_usage(database) else None,
        tables,
        latest_backup(backups_dir, Owner.known(database, url)),
        notes,
        engine.key,
    )


def latest_backup(folder, owner, now=None):
    """Return the BackupAge of the newest backup of ``owner`` (an Owner) in ``folder``, or
    None when there is none."""
    infos = list_backups(folder, owner)
    if not infos:
        return None
    info = infos[0]
    created = created_moment(info)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return BackupAge(info.path, created, max(0.0, (now - created).total_seconds()))


def _row_count(database, table):
    return database.execute_sql(f"SELECT COUNT(*) FROM {quoted(database, table)}").fetchone()[0]


class SqliteStats:
    """SQLite: pages, the free list, the WAL file; dbstat for per-table sizes."""

    index_usage = None

    def __init__(self, url):
        self.path = sqlite_path(url)
        self._btrees = _UNREAD

    def database_size(self, database):
        page_size = database.pragma("page_size")
        size = database.pragma("page_count") * page_size
        free = database.pragma("freelist_count") * page_size
        wal = f"{self.path}-wal"
        return size, free, os.path.getsize(wal) if os.path.exists(wal) else 0

    def table_sizes(self, database):
        btrees = self._btree_sizes(database)
        if btrees is None:
            return {}
        sizes = {}
        for name, table in database.execute_sql(
            "SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"
        ).fetchall():
            data, indexes = sizes.get(table, (0, 0))
            if name == table:
                data += btrees.get(name, 0)
            else:
                indexes += btrees.get(name, 0)
            sizes[table] = (data, indexes)
        return sizes

    def indexes(self, database, table):
        btrees = self._btree_sizes(database) or {}
        found = []
        for _, name, unique, origin, _ in database.execute_sql(
            f"PRAGMA index_list({quoted(database, table)})"
        ).fetchall():
            columns = [
                row[2]
                for row in database.execute_sql(f"PRAGMA index_info({quoted(database, name)})")
            ]
            found.append(IndexStats(name, columns, origin == "pk", bool(unique), btrees.get(name)))
        if not any(index.primary for index in found):
            found += self._rowid_key(database, table)
        return sorted(found, key=lambda index: (not index.primary, index.name))

    def _rowid_key(self, database, table):
        # An INTEGER PRIMARY KEY is the rowid itself: the table's own b-tree, no index.
        key = [
            row[1]
            for row in sorted(
                database.execute_sql(f"PRAGMA table_info({quoted(database, table)})").fetchall(),
                key=lambda row: row[5],
            )
            if row[5]
        ]
        return [IndexStats(ROWID, key, primary=True, unique=True)] if key else []

    def _btree_sizes(self, database):
        """Return {table or index name: bytes} from dbstat, or None without it."""
        # dbstat reads every page: once per db.stats (a reader serves one call).
        if self._btrees is _UNREAD:
            try:
                rows = database.execute_sql("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
                self._btrees = dict(rows.fetchall())
            except peewee.OperationalError:
                self._btrees = None
        return self._btrees

    def counts_usage(self, database):
        return False

    def notes(self, database):
        notes = ["SQLite does not count index use"]
        if self._btree_sizes(database) is None:
            notes.append("sizes are not available per table on this SQLite build (no dbstat table)")
        return notes


class PostgresStats:
    """PostgreSQL: relation sizes, the database size, and idx_scan per index."""

    index_usage = "idx_scan"

    def __init__(self, url):
        pass

    def database_size(self, database):
        size = database.execute_sql("SELECT pg_database_size(current_database())").fetchone()[0]
        return size, None, None

    def table_sizes(self, database):
        rows = database.execute_sql(
            "SELECT c.relname, pg_total_relation_size(c.oid) - pg_indexes_size(c.oid), "
            "pg_indexes_size(c.oid) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
        ).fetchall()
        return {name: (data, indexes) for name, data, indexes in rows}

    def indexes(self, database, table):
        rows = database.execute_sql(
            "SELECT i.relname, ARRAY(SELECT a.attname FROM unnest(x.indkey) "
            "  WITH ORDINALITY AS k(attnum, position) LEFT JOIN pg_attribute a "  # 0: an expression
            "  ON a.attrelid = x.indrelid AND a.attnum = k.attnum ORDER BY k.position), "
            "x.indisprimary, x.indisunique, pg_relation_size(i.oid), s.idx_scan "
            "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_class t ON t.oid = x.indrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = x.indexrelid "
            "WHERE n.nspname = current_schema() AND t.relname = %s "
            "ORDER BY NOT x.indisprimary, i.relname",
            (table,),
        ).fetchall()
        return [IndexStats(*row) for row in rows]

    def counts_usage(self, database):
        return True

    def notes(self, database):
        return ["PostgreSQL reports no free space inside the database"]


class MySQLStats:
    """MySQL/MariaDB: information_schema's sizes and indexes; usage where userstat is on."""

    index_usage = "rows_read"

    def __init__(self, url):
        pass

    def database_size(self, database):
        size, free = database.execute_sql(
            "SELECT COALESCE(SUM(data_length + index_length), 0), COALESCE(SUM(data_free), 0) "
            "FROM information_schema.TABLES WHERE table_schema = DATABASE()"
        ).fetchone()
        return int(size), int(free), None

    def table_sizes(self, database):
        rows = database.execute_sql(
            "SELECT table_name, data_length, index_length FROM information_schema.TABLES "
            "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'"
        ).fetchall()
        return {name: (data, indexes) for name, data, indexes in rows}

    def indexes(self, database, table):
        uses = self._rows_read(database, table)
        columns, unique = {}, {}
        for name, non_unique, column in database.execute_sql(
            "SELECT index_name, non_unique, column_name FROM information_schema.STATISTICS "
            "WHERE table_schema = DATABASE() AND table_name = %s "
            "ORDER BY index_name, seq_in_index",
            (table,),
        ).fetchall():
            columns.setdefault(name, []).append(column)
            unique[name] = not non_unique
        found = [
            IndexStats(
                name,
                columns[name],
                name == "PRIMARY",
                unique[name],
                uses=None if uses is None else uses.get(name, 0),
            )
            for name in columns
        ]
        return sorted(found, key=lambda index: (not index.primary, index.name))

    def _rows_read(self, database, table):
        """Return {index: rows read through it} (MariaDB's userstat), or None without it."""
        if not self.counts_usage(database):
            return None
        return dict(
            database.execute_sql(
                "SELECT index_name, rows_read FROM information_schema.INDEX_STATISTICS "
                "WHERE table_schema = DATABASE() AND table_name = %s",
                (table,),
            ).fetchall()
        )

    def counts_usage(self, database):
        row = database.execute_sql("SHOW GLOBAL VARIABLES LIKE 'userstat'").fetchone()
        return bool(row) and str(row[1]).upper() in ("ON", "1")

    def notes(self, database):
        notes = ["data and index sizes are InnoDB's estimates (ANALYZE TABLE refreshes them)"]
        if not self.counts_usage(database):
            notes.append(
                "index usage is unavailable: the server does not collect it "
                "(MariaDB: SET GLOBAL userstat = 1)"
            )
        return notes


@functools.singledispatch
def stats_reader(engine, url):
    """Return the reader of sizes and index use for a database of ``engine`` at ``url``."""
    raise TypeError(f"db.stats has no reader for {engine.name}")


@stats_reader.register
def _(engine: SqliteEngine, url):
    return SqliteStats(url)


@stats_reader.register
def _(engine: PostgresEngine, url):
    return PostgresStats(url)


@stats_reader.register
def _(engine: MySQLEngine, url):
    return MySQLStats(url)
