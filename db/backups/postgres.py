"""PostgreSQL backups: ``pg_dump`` custom format, ``pg_restore`` into a fresh database,
swapped in by two renames in one transaction.

The manifest's row counts come from the very snapshot that ``pg_dump`` copies: we open
a REPEATABLE READ transaction, export its snapshot, count, and hand the snapshot to
``pg_dump --snapshot``. The password reaches the tools through a private ``PGPASSFILE``,
never the command line or ``PGPASSWORD`` (visible to ``ps`` on some systems).
"""

from contextlib import contextmanager

import peewee

from db.backups.manifest import new_manifest
from db.backups.servers import ServerBackups, schema_version, table_rows
from db.clients import POSTGRES_CLIENT_PACKAGE, find_tool, libpq_environment, run_tool
from db.engines import engine_for_url
from db.engines.base import database_name_of, quoted, retry_until
from db.errors import BackupError


class PostgresBackups(ServerBackups):
    engine = "postgresql"
    suffix = ".pgdump"

    def dump(self, database, url, partial, compress):
        # The custom format is compressed by pg_dump itself, so --compress adds nothing.
        pg_dump = find_tool("pg_dump", package=POSTGRES_CLIENT_PACKAGE)
        with _exported_snapshot(database) as snapshot, libpq_environment(url) as env:
            counts, version = table_rows(database), schema_version(database)
            command = [pg_dump, "--format=custom", f"--snapshot={snapshot}", f"--file={partial}"]
            run_tool(command, env)
        return new_manifest(partial, self.engine, version, counts)

    def load(self, url, path, manifest):
        pg_restore = find_tool("pg_restore", package=POSTGRES_CLIENT_PACKAGE)
        command = [
            pg_restore,
            "--exit-on-error",
            "--single-transaction",
            "--no-owner",
            "--no-privileges",
            f"--dbname={database_name_of(url)}",
            str(path),
        ]
        with libpq_environment(url) as env:
            run_tool(command, env)

    def swap(self, url, fresh_url, timeout):
        engine = engine_for_url(url)
        live, fresh = database_name_of(url), database_name_of(fresh_url)
        retired_url = self.side_database(url, "retired")
        engine.drop(retired_url)
        retired = database_name_of(retired_url)
        with engine.maintenance(url) as maintenance:
            _rename_when_unused(maintenance, live, fresh, retired, timeout, engine.exists(url))
        engine.drop(retired_url)


def _rename_when_unused(maintenance, live, fresh, retired, timeout, live_exists):
    # ALTER DATABASE ... RENAME fails while anyone is connected to that database; both
    # renames sit in one transaction, so the live name always names a whole database.
    def rename():
        with maintenance.atomic():
            if live_exists:
                maintenance.execute_sql(_rename(maintenance, live, retired))
            maintenance.execute_sql(_rename(maintenance, fresh, live))
        return True

    retry_until(
        rename,
        timeout,
        interval=0.2,
        timed_out=lambda error: BackupError(
            f"database {live} is in use by other connections for more than {timeout} s "
            f"({error}); stop the app and retry; nothing restored"
        ),
        retry_on=peewee.OperationalError,
    )


def _rename(database, old, new):
    return f"ALTER DATABASE {quoted(database, old)} RENAME TO {quoted(database, new)}"


@contextmanager
def _exported_snapshot(database):
    """Hold a REPEATABLE READ transaction and yield its exported snapshot's name."""
    database.execute_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield database.execute_sql("SELECT pg_export_snapshot()").fetchone()[0]
    finally:
        database.execute_sql("ROLLBACK")
