"""The bookkeeping tables: ``migrations`` (what is applied) and ``seeders`` (what is seeded).

    history = History(database)            # the migrations table
    history.ensure_table()
    history.applied()                      # {"001": AppliedMigration(...), ...}
    history.record_applied(migration_file, duration_ms=12)
    history.record_unapplied("003")

    seeded = SeederHistory(database)       # the seeders table
    seeded.applied()                       # {"001_users": SeededFile(...), ...}
    seeded.record(seeder_file)

Runners write these inside the same transaction as the work they record, so a
row exists exactly when that work was committed.
"""

import datetime
from dataclasses import dataclass

import peewee

from db.errors import HistoryTableError


@dataclass(frozen=True)
class AppliedMigration:
    """One row of the migrations table."""

    version: str
    name: str
    checksum: str
    applied_at: datetime.datetime
    duration_ms: int


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
        """Create the table if it does not exist."""
        self.Record.create_table(safe=True)

    def drop_table(self):
        """Drop the table if it exists."""
        self.Record.drop_table(safe=True)

    def rows(self):
        """Return every row (none when the table does not exist yet)."""
        if not self.exists():
            return []
        self._refuse_foreign_table()
        return list(self.Record.select())

    def _refuse_foreign_table(self):
        expected = {field.column_name for field in self.Record._meta.sorted_fields}
        found = {column.name for column in self.database.get_columns(self.table_name)}
        if not expected <= found:
            raise HistoryTableError(
                f"the database already has a table named {self.table_name!r} that is not this "
                f"toolkit's history (it lacks {', '.join(sorted(expected - found))}); "
                "rename or drop it, then run db.setup"
            )


class History(BookkeepingTable):
    """The ``migrations`` table: which migrations are applied."""

    table_name = "migrations"

    def fields(self):
        return {
            "version": peewee.CharField(max_length=32, primary_key=True),
            "name": peewee.CharField(max_length=255),
            "checksum": peewee.CharField(max_length=64),
            "applied_at": peewee.DateTimeField(),
            "duration_ms": peewee.IntegerField(),
        }

    def applied(self):
        """Return the applied migrations by version, oldest first."""
        rows = sorted(self.rows(), key=lambda row: int(row.version))
        return {
            row.version: AppliedMigration(
                row.version, row.name, row.checksum, row.applied_at, row.duration_ms
            )
            for row in rows
        }

    def record_applied(self, migration, duration_ms):
        """Record ``migration`` (a NumberedFile) as applied."""
        self.Record.create(
            version=migration.version,
            name=migration.name,
            checksum=migration.checksum,
            applied_at=utc_now(),
            duration_ms=duration_ms,
        )

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

    def record(self, seeder):
        """Record ``seeder`` (a NumberedFile) as run now, in its current version."""
        self.Record.delete().where(self.Record.name == seeder.name).execute()
        self.Record.create(name=seeder.name, checksum=seeder.checksum, applied_at=utc_now())

    def clear(self):
        """Forget every seeder run, so that db.seed runs them all again."""
        if self.exists():
            self.Record.delete().execute()
