"""The error family of the CloneGallery database toolkit.

Every failure a user can cause is raised as one of these, with a message worded
for the operator: it names the file, table, option or URL at fault and, where
there is one, the fix. `db/cli.py` turns them into one line on stderr (a JSON object
on stdout with ``--json``) and the class's `exit_code`; nothing else prints them.

Exit codes: 1 = an operation failed, 2 = bad input or configuration,
3 = a check found the database not in step (`db.status --check`, `db.check`,
`db.schema --check`) or wanting (`db.backups --max-age`: no recent enough verified
backup), 130 = interrupted, 141 = the reader of the output went away (``| head``).
"""


class DbError(Exception):
    """Base class of every error the toolkit reports to the user."""

    exit_code = 1


class ConfigError(DbError):
    """The database URL or a setting is unusable."""

    exit_code = 2


class DatabaseMissing(ConfigError):
    """The configured database does not exist yet (db.setup creates it)."""


class ReadOnlyStandby(ConfigError):
    """A task that writes was pointed at a read-only standby; its primary takes writes."""


class SampleRefused(ConfigError):
    """A seed run in production (db.environment) would seed sample data; --no-sample or
    --force says which is meant."""


class ConnectionFailed(DbError):
    """The database could not be opened or reached."""


class DatabaseFailed(DbError):
    """The database refused an operation outside any migration (disk full, locked...)."""


class HistoryTableError(DbError):
    """A ``migrations`` table exists but is not this toolkit's history."""


class ValidationError(DbError):
    """A model row breaks a rule of the schema (checked before saving)."""

    exit_code = 2


class PermissionDenied(DbError):
    """The acting user may not do this (db.access's rules), or no user was said to act."""


class SourceFileError(DbError):
    """A migration or seeder file is misnamed, duplicated or malformed."""

    exit_code = 2


class StatementFailed(DbError):
    """One statement of an SQL file failed; the message names its line."""


class UnknownVersion(DbError):
    """A version given on the command line matches no migration."""

    exit_code = 2


class DriftError(DbError):
    """Applied history no longer matches the migration files."""


class FailedMigrationError(DbError):
    """A migration failed part-way on an engine without transactional DDL."""


class OutOfOrderError(DbError):
    """A pending migration is numbered below one already applied."""


class IrreversibleMigration(DbError):
    """A rollback reached a migration that has no down step."""


class MigrationFailed(DbError):
    """A migration raised while running; its transaction was rolled back."""


class SeedFailed(DbError):
    """A seeder raised while running; its transaction was rolled back."""


class NotMigrated(DbError):
    """Seeding or populating needs a fully migrated database."""


class CannotGenerate(DbError):
    """db.new-migration --auto met a difference it cannot write as a migration."""


class ResetCancelled(DbError):
    """The person at the terminal did not confirm db.reset."""


class BackupError(DbError):
    """A backup could not be written, or a backup file failed verification."""


class BackupTooOld(DbError):
    """``db.backups --max-age`` found no verified backup of the database young enough."""

    exit_code = 3


class TransferFailed(DbError):
    """A transfer stopped or its copy differs from the source; the target stays marked
    incomplete."""


class TransferInterrupted(TransferFailed):
    """A transfer was interrupted (Ctrl-C); the target stays marked incomplete."""

    exit_code = 130


class IncompleteTransfer(DbError):
    """The database is the target of a transfer that did not finish."""


class ToolFailed(DbError):
    """An engine's command-line client (pg_dump, mariadb, ...) failed."""


class LockTimeout(DbError):
    """Another process held the migration lock for too long."""


class NotUpToDate(DbError):
    """A check found the database not in step: ``db.status --check`` (pending, changed
    or missing migrations), ``db.check`` (a difference from the models) or ``db.schema
    --check`` (a difference from the committed schema). Distinct from a failure (1)."""

    exit_code = 3


class BadQuery(DbError):
    """The SQL given to db.explain is not one SELECT, or the engine rejected it."""

    exit_code = 2


class CaptureFailed(DbError):
    """A pending migration could not be captured without running it."""


class UnsafeMigration(DbError):
    """A pending migration has lint findings nobody acknowledged (db.migrate --strict)."""


class AlreadyManaged(DbError):
    """db.baseline met a database whose history this toolkit already keeps."""


class NothingToAdopt(DbError):
    """db.baseline met a database without tables of its own."""


class SeedEraHistoryError(DbError):
    """The seed era's history names migrations that db.baseline cannot record."""


class SchemaDiffers(DbError):
    """The live schema is not what the migrations up to VERSION build; ``differences``
    holds each db.check Difference."""

    def __init__(self, message, differences):
        super().__init__(message)
        self.differences = differences


def one_line(exc):
    """Return the first non-empty line of an exception's message (drivers add more)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def printable(text):
    """Return ``text`` with control characters as blanks: what a file or a tool says must
    not reach a terminal as escape codes."""
    return "".join(c if c.isprintable() else " " for c in str(text)).strip()


class HealthUnknown(DbError):
    """db.health could not check at all (a bad threshold, an unwritable --prometheus file):
    UNKNOWN in the monitoring-plugin convention, whatever the cause's own code."""

    exit_code = 3
