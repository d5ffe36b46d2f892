"""The bookkeeping tables: ``migrations`` (what is applied) and ``seeders`` (what is seeded).

    history = History(database)            # the migrations table
    history.ensure_table()
    history.applied()                      # {"001": AppliedMigration(...), ...}
    history.record_applied(migration_file, duration_ms=12)
    history.record_unapplied("003")

    seeded = SeederHistory(database)       # the seeders table
    seeded.applied()                       # {"001_users": SeededFile(...), ...}
    seeded.record(seeder_file)

    marker = TransferMarker(database)      # the transfer_incomplete table
    marker.mark("sqlite:///clonegallery.db")   # db.transfer, before it copies
    marker.read()                          # IncompleteTransferInfo(...), or None
    marker.clear()                         # once the copy is proved, or by db.reset

    DatabaseIdentity(database).ensure()    # the database_identity table: "3f2c…" (kept for good)

Runners write these inside the same transaction as the work they record, so a
row exists exactly when that work was committed.
"""

import datetime
import uuid
from dataclasses import dataclass

import peewee
from playhouse.migrate import SchemaMigrator

from db.engines import engine_for
from db.errors import HistoryTableError
from db.search import is_derived


@dataclass(frozen=True)
class AppliedMigration:
    """One row of the migrations table."""

    version: str
    name: str
    checksum: str
    applied_at: datetime.datetime
    duration_ms: int
    error: str | None = None  # set when the run failed half-way (engines without transactional DDL)
    baseline: str | None = None  # set when db.baseline recorded it, not a run: its note

    @property
    def failed(self):
        return self.error is not None


@dataclass(frozen=True)
class SeededFile:
    """One row of the seeders table."""

    name: str
    checksum: str
    applied_at: datetime.datetime


def utc_now():
    """Return the current time as naive UTC, as the tables store it."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class BookkeepingTable:
    """A table of the toolkit's own, as a peewee model made for one database."""

    table_name = None
    optional_columns = ()  # added after the first release: old tables get them on ensure_table

    def __init__(self, database):
        meta = type("Meta", (), {"table_name": self.table_name, "database": database})
        attributes = {**self.fields(), "Meta": meta, "__module__": __name__}
        self.Record = type(f"{self.table_name.title()}Record", (peewee.Model,), attributes)
        self.database = database

    def fields(self):
        """Return the table's columns as {name: peewee Field}."""
        raise NotImplementedError

    def exists(self):
        """Return whether the table exists."""
        return self.Record.table_exists()

    def ensure_table(self):
        """Create the table if it does not exist; add columns an older version lacks."""
        if not self.exists():
            self.Record.create_table()
            return
        migrator = SchemaMigrator.from_database(self.database)
        for column in self._missing_columns():
            migrator.migrate(migrator.add_column(self.table_name, column, self.fields()[column]))

    def drop_table(self):
        """Drop the table if it exists."""
        self.Record.drop_table(safe=True)

    def rows(self):
        """Return every row (none when the table does not exist yet)."""
        if not self.exists():
            return []
        self._refuse_foreign_table()
        missing = set(self._missing_columns())
        present = [f for f in self.Record._meta.sorted_fields if f.column_name not in missing]
        return list(self.Record.select(*present))

    def _missing_columns(self):
        found = self._column_names()
        return [column for column in self.optional_columns if column not in found]

    def _column_names(self):
        """Return the names of the table's columns, as a query of it describes them: on
        PostgreSQL the catalogue's information_schema grows with every tenant's schema,
        and reading it would make each tenant's run slower than the one before."""
        query = peewee.Table(self.table_name).select(peewee.SQL("*")).where(peewee.SQL("1 = 0"))
        cursor = self.database.execute(query)
        return {description[0] for description in cursor.description}

    def _refuse_foreign_table(self):
        expected = {
            field.column_name
            for field in self.Record._meta.sorted_fields
            if field.column_name not in self.optional_columns
        }
        found = self._column_names()
        if not expected <= found:
            # The seed's scripts kept migrations(version, description): db.baseline adopts it.
            seed_era = {"version", "description"} <= found
            raise HistoryTableError(
                f"the database already has a table named {self.table_name!r} that is not this "
                f"toolkit's history (it lacks {', '.join(sorted(expected - found))}); "
                + (
                    "if it is the seed era's, invoke db.baseline VERSION adopts the database"
                    if seed_era
                    else "rename or drop it, then run db.setup"
                )
            )


class History(BookkeepingTable):
    """The ``migrations`` table: which migrations are applied."""

    table_name = "migrations"
    optional_columns = ("error", "baseline")

    def fields(self):
        return {
            "version": peewee.CharField(max_length=32, primary_key=True),
            "name": peewee.CharField(max_length=255),
            "checksum": peewee.CharField(max_length=64),
            "applied_at": peewee.DateTimeField(),
            "duration_ms": peewee.IntegerField(),
            "error": peewee.TextField(null=True),
            "baseline": peewee.TextField(null=True),
        }

    def applied(self):
        """Return the applied migrations by version, oldest first."""
        rows = sorted(self.rows(), key=lambda row: int(row.version))
        return {
            row.version: AppliedMigration(
                row.version,
                row.name,
                row.checksum,
                row.applied_at,
                row.duration_ms,
                row.error,
                row.baseline,
            )
            for row in rows
        }

    def record_applied(self, migration, duration_ms, error=None):
        """Record ``migration`` (a NumberedFile) as applied, or as failed part-way with
        ``error`` (it may then be half-applied)."""
        self.record_unapplied(migration.version)
        self.Record.create(
            version=migration.version,
            name=migration.name,
            checksum=migration.checksum,
            applied_at=utc_now(),
            duration_ms=duration_ms,
            error=error,
        )

    def record_baseline(self, migration, note, applied_at=None):
        """Record ``migration`` (a NumberedFile) as applied by adoption (db.baseline), not
        run: ``note`` says where its schema came from."""
        self.record_unapplied(migration.version)
        self.Record.create(
            version=migration.version,
            name=migration.name,
            checksum=migration.checksum,
            applied_at=applied_at or utc_now(),
            duration_ms=0,
            baseline=note,
        )

    def failed(self):
        """Return the migrations recorded as failed."""
        return [row for row in self.applied().values() if row.failed]

    def record_unapplied(self, version):
        """Remove the history row of ``version``."""
        self.Record.delete().where(self.Record.version == version).execute()


class SeederHistory(BookkeepingTable):
    """The ``seeders`` table: which seeder files have been run, and in which version."""

    table_name = "seeders"

    def fields(self):
        return {
            "name": peewee.CharField(max_length=255, primary_key=True),
            "checksum": peewee.CharField(max_length=64),
            "applied_at": peewee.DateTimeField(),
        }

    def applied(self):
        """Return the seeded files by name."""
        return {row.name: SeededFile(row.name, row.checksum, row.applied_at) for row in self.rows()}

    def record(self, seeder, applied_at=None):
        """Record ``seeder`` (a NumberedFile) as run now (or at ``applied_at``), in its
        current version."""
        self.Record.delete().where(self.Record.name == seeder.name).execute()
        self.Record.create(
            name=seeder.name, checksum=seeder.checksum, applied_at=applied_at or utc_now()
        )

    def clear(self):
        """Forget every seeder run, so that db.seed runs them all again."""
        if self.exists():
            self.Record.delete().execute()


@dataclass(frozen=True)
class IncompleteTransferInfo:
    """Where an unfinished transfer came from, and when it started."""

    source: str  # the source's URL, masked
    started_at: datetime.datetime | None


class TransferMarker(BookkeepingTable):
    """The ``transfer_incomplete`` table: present in a transfer's target until the copy
    is proved equal to its source, so that a half-made copy is never taken for good."""

    table_name = "transfer_incomplete"

    def fields(self):
        return {"source": peewee.TextField(), "started_at": peewee.DateTimeField()}

    def mark(self, source):
        """Mark the database as an unfinished transfer from ``source`` (a masked URL)."""
        self.ensure_table()
        self.Record.create(source=source, started_at=utc_now())

    def read(self):
        """Return the unfinished transfer this database is the target of, or None."""
        if not self.exists():
            return None
        rows = self.rows()
        if not rows:
            # The table alone marks it: a process killed between creating it and
            # writing its row leaves it empty.
            return IncompleteTransferInfo("an unknown source", None)
        return IncompleteTransferInfo(rows[0].source, rows[0].started_at)

    def clear(self):
        """Remove the mark."""
        self.drop_table()


class DatabaseIdentity(BookkeepingTable):
    """The ``database_identity`` table: one random id that names this database for good,
    wherever it is (a renamed file, a moved server), so that its backups are known as its
    own. A restore keeps the id of the database it replaces."""

    table_name = "database_identity"

    def fields(self):
        return {
            "id": peewee.CharField(max_length=36, primary_key=True),
            "created_at": peewee.DateTimeField(),
        }

    def read(self):
        """Return the database's id, or None when it has none yet."""
        if not self.exists():
            return None
        rows = self.rows()
        return rows[0].id if rows else None

    def ensure(self):
        """Return the database's id, giving it one first if it has none."""
        current = self.read()
        if current is not None:
            return current
        with engine_for(self.database).transaction(self.database):  # waits for writers
            self.ensure_table()
            if not self.Record.select().exists():  # a concurrent run may have given one
                self.Record.create(id=str(uuid.uuid4()), created_at=utc_now())
        return self.read()

    def write(self, database_id):
        """Make ``database_id`` this database's id (a restored copy takes the replaced
        database's); nothing changes when it is already."""
        if self.read() == database_id:
            return
        with engine_for(self.database).transaction(self.database):
            self.ensure_table()
            self.Record.delete().execute()
            self.Record.create(id=database_id, created_at=utc_now())


# The toolkit's own tables: not part of the app's schema (diagrams and checks skip them).
BOOKKEEPING_TABLES = frozenset(
    {
        History.table_name,
        SeederHistory.table_name,
        TransferMarker.table_name,
        DatabaseIdentity.table_name,
    }
)


# Tables the tools we drive keep in the database they work on: Litestream's
# _litestream_seq and _litestream_lock in a replicated SQLite file (db.replicate).
TOOL_TABLE_PREFIXES = ("_litestream_",)


def application_tables(database):
    """Return the names of the application's tables, sorted: neither the engine's own
    (sqlite_stat1, sqlite_sequence...), nor the toolkit's bookkeeping, nor a driven tool's
    (TOOL_TABLE_PREFIXES), nor the search tables derived from the others (db.search).
    The one place that decides what is the app's: checks, diagrams and generated
    migrations ask it."""
    engine = engine_for(database)
    return sorted(
        t
        for t in engine.tables(database)
        if t not in BOOKKEEPING_TABLES
        and not t.startswith(TOOL_TABLE_PREFIXES)
        and not is_derived(t)
    )
