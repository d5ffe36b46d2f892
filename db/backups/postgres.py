"""PostgreSQL backups: ``pg_dump`` custom format, ``pg_restore`` into a fresh database,
swapped in by two renames in one transaction.

The manifest's row counts come from the very snapshot that ``pg_dump`` copies: we open
a REPEATABLE READ transaction, export its snapshot, hand it to ``pg_dump --snapshot``
and count the rows in it while pg_dump runs. The password reaches the tools through a
private ``PGPASSFILE``, never the command line or ``PGPASSWORD`` (visible to ``ps`` on
some systems).

``pg_restore`` runs the SQL an archive holds, and a crafted archive can hold any SQL
(``COPY ... TO PROGRAM``, ``ALTER ROLE``, ``CREATE ROLE``...). A superuser therefore
never loads one itself: a temporary role (NOSUPERUSER, NOCREATEDB, NOCREATEROLE, random
password) is made the owner of the database being loaded, logs in, loads and reads the
loaded copy (``pg_restore --role`` would be no sandbox: the archive could RESET ROLE);
then everything it owns is given to the configured role, settings it may have put on the
database are cleared, and it is dropped. A role that is not a superuser loads as itself.
"""

import secrets
from contextlib import contextmanager

import peewee

from db.backups.files import file_digest
from db.backups.manifest import new_manifest
from db.backups.servers import ServerBackups, schema_version, table_rows
from db.clients import (
    POSTGRES_CLIENT_PACKAGE,
    find_tool,
    libpq_environment,
    run_tool,
    running_tool,
    with_credentials,
)
from db.engines import engine_for_url
from db.engines.base import database_name_of, quoted, retry_until
from db.errors import BackupError, ConnectionFailed, one_line

# The temporary roles that load backups: this prefix and random letters.
LOADER_PREFIX = "clonegallery_load_"


class PostgresBackups(ServerBackups):
    engine = "postgres"
    suffix = ".pgdump"

    def dump(self, database, url, partial, compress):
        # The custom format is compressed by pg_dump itself, so --compress adds nothing.
        pg_dump = find_tool("pg_dump", package=POSTGRES_CLIENT_PACKAGE)
        with _exported_snapshot(database) as snapshot, libpq_environment(url) as env:
            command = [pg_dump, "--format=custom", f"--snapshot={snapshot}"]
            # Into the file we opened, not --file: a pg_dump that outlives this run (a
            # stop signal while it was starting) writes into no file of the folder.
            with open(partial, "r+b") as output, running_tool(command, env, stdout=output):
                # Counted in the same snapshot while pg_dump copies it.
                counts, version = table_rows(database), schema_version(database)
        return new_manifest(partial, self.engine, version, counts, digest=file_digest(partial))

    @contextmanager
    def loading_account(self, url):
        """Yield the URL of a temporary role that owns the database of ``url`` and nothing
        else, when the configured role is a superuser (else ``url`` itself); afterwards
        give what it owns to the configured role and drop it."""
        engine = engine_for_url(url)
        with engine.maintenance(url) as server:
            role = _temporary_owner(server, database_name_of(url))
        if role is None:
            yield url
            return
        user, password = role
        loader = with_credentials(url, user, password)
        try:
            _check_login(engine, loader, user)
            yield loader
        finally:
            _hand_back(engine, url, user)

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


def _temporary_owner(server, name):
    """Make a role that may log in and do nothing but own the database ``name``, when the
    connected role is a superuser; return its (user, password), else None."""
    (superuser,) = server.execute_sql(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if not superuser:
        return None
    _drop_leftover_roles(server)
    user, password = LOADER_PREFIX + secrets.token_hex(6), secrets.token_urlsafe(24)
    # The server is sent the SCRAM verifier, not the password (which it might log).
    verifier = server.connection().pgconn.encrypt_password(
        password.encode(), user.encode(), b"scram-sha-256"
    )
    role = quoted(server, user)
    with server.atomic():  # the role is never seen owning nothing, so never mistaken
        server.execute_sql(
            f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            f"NOBYPASSRLS PASSWORD '{verifier.decode()}'"
        )
        server.execute_sql(f"ALTER DATABASE {quoted(server, name)} OWNER TO {role}")
    return user, password


def _drop_leftover_roles(server):
    """Drop the loading roles that a killed run left behind. A role in use owns its
    database from the moment it exists (both made in one transaction) until it is handed
    back, just before it is dropped; one that owns none is a leftover."""
    leftovers = server.execute_sql(
        "SELECT rolname FROM pg_roles r WHERE starts_with(rolname, %s) "
        "AND NOT EXISTS (SELECT FROM pg_database d WHERE d.datdba = r.oid)",
        (LOADER_PREFIX,),
    ).fetchall()
    for (name,) in leftovers:
        try:
            with server.atomic():
                server.execute_sql(f"DROP ROLE IF EXISTS {quoted(server, name)}")
        except peewee.DatabaseError:
            pass  # it still holds something somewhere: left for the operator


def _check_login(engine, loader, user):
    """Raise one clear line when the temporary role cannot log in (pg_hba.conf)."""
    try:
        engine.connect(loader).close()
    except ConnectionFailed as exc:
        raise BackupError(
            f"the temporary role {user} that loads backups (a superuser never loads one "
            f"itself) cannot log in: {one_line(exc.__cause__ or exc)}; let pg_hba.conf "
            "accept password logins from this host, or configure a role that is not a "
            "superuser"
        ) from exc


def _hand_back(engine, url, user):
    """Give what ``user`` owns to the configured role, clear the settings it may have put
    on the database (they would apply to whoever connects), and drop it."""
    name = database_name_of(url)
    with engine.maintenance(url) as server:
        exists = server.execute_sql(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if exists:
            server.execute_sql(f"ALTER DATABASE {quoted(server, name)} RESET ALL")
    if exists:
        database = engine.connect(url)
        try:
            role = quoted(database, user)
            with database.atomic():  # it owns the database until this commits
                database.execute_sql(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
                database.execute_sql(f"DROP OWNED BY {role}")
        finally:
            database.close()
    with engine.maintenance(url) as server:
        server.execute_sql(f"DROP ROLE IF EXISTS {quoted(server, user)}")


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
            f"({one_line(error) if error else 'still in use'}); stop the app and retry; "
            "nothing restored"
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
