"""The ``migrations`` table: which migrations are applied, and nothing else.

    history = History(database)
    history.ensure_table()
    history.applied()                  # {"001": AppliedMigration(...), ...}
    history.record_applied(migration_file, duration_ms=12)
    history.record_unapplied("003")

The runner calls these inside the migration's own transaction, so a history
row exists exactly when the migration's changes were committed.
"""

import datetime
from dataclasses import dataclass

import peewee

from db.errors import HistoryTableError

TABLE_NAME = "migrations"


@dataclass(frozen=True)
class AppliedMigration:
    """One row of the history table."""

    version: str
    name: str
    checksum: str
    applied_at: datetime.datetime
    duration_ms: int


class History:
    """Read and write the history table of one database."""

    def __init__(self, database):
        class MigrationRecord(peewee.Model):
            version = peewee.CharField(max_length=32, primary_key=True)
            name = peewee.CharField(max_length=255)
            checksum = peewee.CharField(max_length=64)
            applied_at = peewee.DateTimeField()
            duration_ms = peewee.IntegerField()

            class Meta:
                table_name = TABLE_NAME

        MigrationRecord._meta.set_database(database)
        self.database = database
        self.Record = MigrationRecord

    def exists(self):
        """Return whether the history table exists."""
        return self.Record.table_exists()

    def ensure_table(self):
        """Create the history table if it does not exist."""
        self.Record.create_table(safe=True)

    def applied(self):
        """Return the applied migrations by version, oldest first."""
        if not self.exists():
            return {}
        self._refuse_foreign_table()
        rows = self.Record.select().order_by(self.Record.version)
        return {
            row.version: AppliedMigration(
                version=row.version,
                name=row.name,
                checksum=row.checksum,
                applied_at=row.applied_at,
                duration_ms=row.duration_ms,
            )
            for row in rows
        }

    def _refuse_foreign_table(self):
        expected = {field.column_name for field in self.Record._meta.sorted_fields}
        found = {column.name for column in self.database.get_columns(TABLE_NAME)}
        if not expected <= found:
            raise HistoryTableError(
                f"the database already has a table named {TABLE_NAME!r} that is not this "
                f"toolkit's history (it lacks {', '.join(sorted(expected - found))}); "
                "rename or drop it, then run db.setup"
            )

    def record_applied(self, migration, duration_ms):
        """Record ``migration`` (a NumberedFile) as applied."""
        self.Record.create(
            version=migration.version,
            name=migration.name,
            checksum=migration.checksum,
            applied_at=datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None),
            duration_ms=duration_ms,
        )

    def record_unapplied(self, version):
        """Remove the history row of ``version``."""
        self.Record.delete().where(self.Record.version == version).execute()

    def drop_table(self):
        """Drop the history table (used when the database is reset)."""
        self.Record.drop_table(safe=True)
