"""Copy the CloneGallery database to another database, on any engine: ``db.transfer``.

    source = Target("sqlite:///clonegallery.db")               # fully migrated
    with source.opened():
        result = transfer(source, "postgresql://app@db.example.com/gallery",
                          Path("migrations"), on_progress=show)   # show(stage, done, total)
    result.rows       # {"users": 5005, "tags": 1018, "images": 100008, ...}, parents first
    result.seconds

Any engine to any engine: SQLite, PostgreSQL, MySQL/MariaDB. What it guarantees:

1. Refused before anything is written: a target that is the source itself, under
   whatever URL (``Engine.identity``); a target that is not empty (has any table),
   unless ``force``, which drops its tables first.
2. The target is marked incomplete (``transfer_incomplete``, see
   db.history.TransferMarker) before anything else is written to it, and the mark goes
   only once the copy is proved equal to the source. Failed, interrupted or killed at
   any moment, the target stays marked, and the toolkit refuses to use it
   (db.commands.opened) until ``db.transfer --force`` or ``db.reset``.
3. The target's schema is made by our migrations (db.runner), up to the source's
   version, never by copying DDL; its ``migrations`` table must then list the source's
   versions with the same checksums. The ``seeders`` history is copied.
4. Tables are copied parents first (the order comes from the source's foreign keys), in
   batches read by keyset pagination (db.content) inside one consistent read of the
   source, so rows written to the source meanwhile are not half copied; each batch is
   written in one transaction with the engine's bulk insert (COPY on PostgreSQL). The
   counters the triggers keep (db.models.TRIGGER_COUNTERS) are written as 0, and the
   target's triggers count them. The search tables (db.search.DERIVED_TABLES) are not
   copied: the target's triggers write them from the copied rows, as its own engine
   indexes them. PostgreSQL's sequences then restart past the copied ids.
5. Proof: each table's row count and content checksum (db.content), taken of the source
   as it is read and of the target afterwards, must be equal — counters included, which
   proves the triggers counted right.

MySQL's DATETIME keeps whole seconds: a copy to MySQL drops fractions of a second, and
date-times are then compared to the second. ``on_progress(stage, done, total)`` counts
rows, ``COPIED`` then ``CHECKED``.
"""

import graphlib
import time
from contextlib import contextmanager
from dataclasses import dataclass

import peewee

from db.config import check_lasting_url, mask_url
from db.content import (
    DEFAULT_BATCH,
    TableDigest,
    is_datetime_type,
    normalisers,
    primary_key,
    read_batches,
    table_checksum,
    without_fraction,
)
from db.engines import engine_for, engine_for_url, open_database
from db.engines.base import quoted
from db.errors import (
    ConfigError,
    DatabaseFailed,
    TransferFailed,
    TransferInterrupted,
    one_line,
)
from db.history import DatabaseIdentity, History, SeederHistory, TransferMarker
from db.models import TRIGGER_COUNTERS
from db.runner import Runner
from db.search import is_derived

COPIED, CHECKED = "rows copied", "rows checked"  # the stages on_progress reports
# Made on the target itself; the target keeps its own identity (its backups stay its own).
NOT_COPIED = (History.table_name, TransferMarker.table_name, DatabaseIdentity.table_name)
WHAT_NOW = "run invoke db.transfer --force again, or invoke db.reset on it"


@dataclass(frozen=True)
class TransferResult:
    """What a transfer copied, where to, and how long it took."""

    target: str  # the target's URL, masked
    rows: dict  # {table: rows copied}, in the order copied
    seconds: float

    @property
    def total_rows(self):
        return sum(self.rows.values())


@dataclass(frozen=True)
class TableCopy:
    """One table to copy: its columns (in the source's order), its primary key, and the
    positions of the columns written otherwise than read."""

    table: str
    columns: tuple
    key: tuple
    counters: tuple  # kept by the target's triggers: written as 0
    datetimes: tuple  # cut to the second for a target that keeps no fractions


def transfer(
    origin,
    target_url,
    migrations_dir,
    force=False,
    batch=DEFAULT_BATCH,
    on_progress=None,
):
    """Copy the migrated database of ``origin`` (an opened db.target.Target) to the one at
    ``target_url`` (created if need be) and prove the copy; return a TransferResult."""
    source, source_url = origin.database, origin.url
    check_options(target_url, batch)
    started = time.perf_counter()
    plan = plan_tables(source)
    refuse_same_database(source, source_url, target_url)
    target_name = mask_url(target_url)
    target = open_database(target_url)
    try:
        with _failures_named(target_name):
            _empty_target(target, target_name, force)
            TransferMarker(target).mark(mask_url(source_url))
        rows = Transfer(source, target, target_name, migrations_dir, batch, on_progress).run(plan)
    finally:
        target.close()
    return TransferResult(target_name, rows, time.perf_counter() - started)


def check_options(target_url, batch):
    """Raise ConfigError unless the target's URL can name a lasting database (its scheme,
    not in memory, a server's database name, an SQLite file's folder) and ``batch`` is a
    whole number of rows, 1 or more."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"--batch must be a whole number >= 1, not {batch!r}")
    check_lasting_url(target_url, "--to")
    engine_for_url(target_url).check_url(target_url)


def plan_tables(database):
    """Return a TableCopy for each table to copy, parents first."""
    engine = engine_for(database)
    tables = [
        table
        for table in engine.tables(database)
        if table not in NOT_COPIED and not is_derived(table)
    ]
    counters = {(field.model._meta.table_name, field.column_name) for field in TRIGGER_COUNTERS}
    plan = []
    for table in parents_first(database, tables):
        columns = database.get_columns(table)
        names = tuple(column.name for column in columns)
        plan.append(
            TableCopy(
                table,
                names,
                tuple(primary_key(database, table)),
                counters=tuple(i for i, name in enumerate(names) if (table, name) in counters),
                datetimes=tuple(
                    i for i, column in enumerate(columns) if is_datetime_type(column.data_type)
                ),
            )
        )
    return plan


def parents_first(database, tables):
    """Return the tables ordered so that each comes after every table it references."""
    known = set(tables)
    parents = {
        table: sorted(
            {key.dest_table for key in database.get_foreign_keys(table)} & known - {table}
        )
        for table in sorted(tables)
    }
    try:
        return list(graphlib.TopologicalSorter(parents).static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise ConfigError(
            f"tables {cycle} reference each other in a cycle, so no copy order inserts "
            "parents first; db.transfer cannot copy them"
        ) from exc


def refuse_same_database(source, source_url, target_url):
    """Raise ConfigError when ``target_url`` reaches the source database itself."""
    engine = engine_for_url(target_url)
    if type(engine) is not type(engine_for(source)) or not engine.exists(target_url):
        return
    target = engine.connect(target_url)
    try:
        with _failures_named(mask_url(target_url)):
            same = engine.identity(target) == engine.identity(source)
    finally:
        target.close()
    if same:
        raise ConfigError(
            f"--to {mask_url(target_url)} is the database being transferred "
            f"({mask_url(source_url)}); give another database"
        )


def _empty_target(target, target_name, force):
    engine = engine_for(target)
    tables = [t for t in engine.tables(target) if t != DatabaseIdentity.table_name]
    if tables and not force:
        listed = ", ".join(tables[:3]) + (", ..." if len(tables) > 3 else "")
        raise ConfigError(
            f"the target {target_name} is not empty ({len(tables)} table(s): {listed}); "
            "db.transfer --force replaces its contents"
        )
    if tables:
        with engine.migration_lock(target):
            engine.drop_all_tables(target)


@contextmanager
def _failures_named(name):
    """Turn the database's errors into DatabaseFailed naming the database."""
    try:
        yield
    except peewee.DatabaseError as exc:
        raise DatabaseFailed(f"{name}: {one_line(exc)}") from exc


class Transfer:
    """One transfer, once the target is empty and marked: migrate, copy, prove, unmark."""

    def __init__(self, source, target, target_name, migrations_dir, batch, on_progress=None):
        self.source = source
        self.target = target
        self.target_name = target_name
        self.migrations_dir = migrations_dir
        self.batch = batch
        self.on_progress = on_progress or (lambda stage, done, total: None)
        self.source_engine = engine_for(source)
        self.target_engine = engine_for(target)
        precisions = (self.source_engine.datetime_precision, self.target_engine.datetime_precision)
        self.whole_seconds = min(precisions) == 0
        self.cut_fractions = precisions[1] < precisions[0]
        self.step = "starting"

    def run(self, plan):
        """Migrate the target, copy every table, prove the copy and unmark the target;
        return {table: rows copied}."""
        try:
            self.step = "migrating the target"
            self._migrate_target()
            self.step = "checking the target's tables"
            self._refuse_missing_tables(plan)
            digests = self._copy(plan)
            self._prove(plan, digests)
            self.step = "removing the incomplete mark"
            TransferMarker(self.target).clear()
        except TransferFailed:
            raise
        except KeyboardInterrupt:
            raise TransferInterrupted(
                f"interrupted while {self.step}; {self.target_name} is left marked "
                f"incomplete ({WHAT_NOW})"
            ) from None
        except Exception as exc:
            raise self._failed(one_line(exc), while_=self.step) from exc
        return {copy.table: digests[copy.table].rows for copy in plan}

    def _failed(self, reason, while_=None):
        step = f" while {while_}" if while_ else ""
        return TransferFailed(
            f"transfer to {self.target_name} failed{step}: {reason}; it is left marked "
            f"incomplete ({WHAT_NOW})"
        )

    def _migrate_target(self):
        version = Runner(self.source, self.migrations_dir).current_version()
        if version is not None:
            Runner(self.target, self.migrations_dir).migrate(to=version)
        ours, theirs = History(self.source).applied(), History(self.target).applied()
        if {v: m.checksum for v, m in ours.items()} != {v: m.checksum for v, m in theirs.items()}:
            raise self._failed(
                f"the target's migrations ({', '.join(theirs) or 'none'}) are not the "
                f"source's ({', '.join(ours) or 'none'}) with the same checksums"
            )
        if SeederHistory(self.source).exists():
            SeederHistory(self.target).ensure_table()

    def _refuse_missing_tables(self, plan):
        tables = set(self.target_engine.tables(self.target))
        for copy in plan:
            if copy.table not in tables:
                raise self._failed(
                    f"the source's table {copy.table} is not made by the migrations "
                    "(was it created by hand?)"
                )
            found = {column.name for column in self.target.get_columns(copy.table)}
            if missing := [column for column in copy.columns if column not in found]:
                raise self._failed(
                    f"the migrations make table {copy.table} without the source's "
                    f"column(s) {', '.join(missing)} (added by hand?)"
                )

    def _copy(self, plan):
        """Copy every table inside one consistent read; return {table: TableChecksum}
        of the rows read."""
        digests, done = {}, 0
        with self.source_engine.consistent_read(self.source):
            total = sum(_count(self.source, copy.table) for copy in plan)
            for copy in plan:
                self.step = f"copying table {copy.table}"
                digest = TableDigest(
                    normalisers(self.source, copy.table, copy.columns, self.whole_seconds)
                )
                written = self._written(copy)
                for rows in read_batches(
                    self.source, copy.table, copy.columns, copy.key, self.batch
                ):
                    digest.add(rows)
                    with self.target_engine.transaction(self.target):
                        self.target_engine.bulk_insert(
                            self.target, copy.table, copy.columns, written(rows)
                        )
                    done += len(rows)
                    self.on_progress(COPIED, done, total)
                digests[copy.table] = digest.result()
        self.step = "restarting the target's sequences"
        self.target_engine.restart_sequences(self.target, [copy.table for copy in plan])
        return digests

    def _written(self, copy):
        """Return a function giving the rows as the target is to receive them."""
        changes = [(position, _zero) for position in copy.counters]
        if self.cut_fractions:
            changes += [(position, without_fraction) for position in copy.datetimes]
        if not changes:
            return _unchanged

        def written(rows):
            changed = []
            for row in rows:
                row = list(row)
                for position, change in changes:
                    row[position] = change(row[position])
                changed.append(row)
            return changed

        return written

    def _prove(self, plan, digests):
        """Raise TransferFailed unless every table of the target holds what was read."""
        total, done = sum(digest.rows for digest in digests.values()), 0

        def checked(count):
            nonlocal done
            done += count
            self.on_progress(CHECKED, done, total)

        for copy in plan:
            self.step = f"checking table {copy.table}"
            ours = digests[copy.table]
            theirs = table_checksum(
                self.target, copy.table, list(copy.columns), self.batch, self.whole_seconds,
                on_rows=checked,
            )  # fmt: skip
            if theirs.rows != ours.rows:
                raise self._failed(
                    f"table {copy.table} has {ours.rows:,} rows in the source but "
                    f"{theirs.rows:,} in the target"
                )
            if theirs.digest != ours.digest:
                hint = " (its counters were counted again by the target's triggers)"
                raise self._failed(
                    f"table {copy.table} holds other values in the target than in the "
                    f"source (content checksums differ){hint if copy.counters else ''}"
                )


def _count(database, table):
    return database.execute_sql(f"SELECT COUNT(*) FROM {quoted(database, table)}").fetchone()[0]


def _zero(value):
    return 0


def _unchanged(rows):
    return rows
