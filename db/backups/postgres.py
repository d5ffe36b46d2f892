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

A tenant (``?tenant=acme``) is the schema ``tenant_acme`` of a database others share, so:

- its backup is ``pg_dump --schema=tenant_acme``: that schema alone, never ``public`` or
  another tenant; the manifest says ``"tenant": "acme"``;
- it is verified, and restored, by loading it into a fresh database as above (the schema
  is created there by the archive) and reading that schema; a tenant's archive must hold
  that one schema and nothing else besides the fresh database's empty ``public``;
- the archive's grants to the tenant's role (``<database>__acme``) are not loaded
  (``--no-privileges``, as every restore here: that role may not exist where it is
  loaded, and the archive's grants are not trusted); a restore grants them again;
- a restore replaces that one schema of the live database: the checked copy's schema is
  renamed ``restoring_tenant_acme`` in the fresh database, dumped and loaded into the live
  database under that name, then, after the safety backup (of the tenant alone), one
  transaction renames the live schema away, the restored one into its place, and drops
  the old one; functions whose ``search_path`` named the backup's schema now name the
  tenant's (a backup of tenant a restored into b must not read a's tables); the tenant's
  role gets its rights on the restored tables again. Other schemas are never touched;
- a tenant's backup is not restored into the default database (``db.restore`` without
  ``--tenant`` replaces the whole database, every tenant in it): one line says so.
"""

import re
import secrets
import tempfile
from contextlib import contextmanager
from pathlib import Path

import peewee

from db.backups.files import file_digest
from db.backups.manifest import new_manifest
from db.backups.owner import manifest_tenant
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
from db.engines.postgres import (
    create_tenant_schema,
    split_tenant,
    tenant_role,
    tenant_schema,
    with_tenant,
)
from db.errors import BackupError, ConnectionFailed, ToolFailed, one_line, printable

# The temporary roles that load backups: this prefix and random letters.
LOADER_PREFIX = "clonegallery_load_"
# A tenant's restored schema while it waits in the live database, and the one it replaces.
STAGING_PREFIX, RETIRED_PREFIX = "restoring_", "retired_"
# A search_path entry we rewrite: a plain identifier (anything else is replaced whole).
PLAIN_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]*")


class PostgresBackups(ServerBackups):
    engine = "postgres"
    suffix = ".pgdump"

    def dump(self, database, url, partial, compress):
        # The custom format is compressed by pg_dump itself, so --compress adds nothing.
        base, tenant = split_tenant(url)
        with _exported_snapshot(database) as snapshot, libpq_environment(base) as env:
            command = _dump_command(snapshot, tenant_schema(tenant) if tenant else None)
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

    def database_url(self, url):
        return split_tenant(url)[0]

    def loaded_url(self, url, manifest):
        tenant = manifest_tenant(manifest)
        return with_tenant(url, tenant) if tenant else url

    def loaded_problems(self, url, manifest):
        try:
            tenant = manifest_tenant(manifest)
        except ValueError as exc:
            return [str(exc)]
        if tenant is not None:
            problems = _schema_problems(engine_for_url(url), url, tenant)
            if problems:
                return problems
        return super().loaded_problems(url, manifest)

    def restore(self, url, path, manifest, safety_folder, take_safety, timeout=30, adopt=None):
        """A tenant's: replace its schema alone (see the module's docstring)."""
        base, tenant = split_tenant(url)
        try:
            backup_of = manifest_tenant(manifest)
        except ValueError as exc:
            raise BackupError(f"{path}: {exc}; nothing restored") from None
        if tenant is None:
            if backup_of is not None:
                raise BackupError(
                    f"{path} is a backup of tenant {backup_of}: restore it into a tenant "
                    f"(--tenant NAME), not into the whole database {database_name_of(base)}; "
                    "nothing restored"
                )
            return super().restore(url, path, manifest, safety_folder, take_safety, timeout, adopt)
        self._require_server(url, "restore")
        source = tenant_schema(backup_of) if backup_of else "public"
        staging = STAGING_PREFIX + tenant_schema(tenant)
        fresh = self.side_database(url, "restoring")
        with self.fresh_database(fresh):
            self.load_checked(fresh, path, manifest, adopt)
            with _staged_schema(self, fresh, base, source, staging):
                safety = take_safety()
                _swap_schema(base, tenant, staging, source, timeout)
        return safety

    def swap(self, url, fresh_url, timeout):
        engine = engine_for_url(url)
        live, fresh = database_name_of(url), database_name_of(fresh_url)
        retired_url = self.side_database(url, "retired")
        engine.drop(retired_url)
        retired = database_name_of(retired_url)
        with engine.maintenance(url) as maintenance:
            _rename_when_unused(maintenance, live, fresh, retired, timeout, engine.exists(url))
        engine.drop(retired_url)


def _dump_command(snapshot=None, schema=None):
    """Return pg_dump's command line: custom format, of ``snapshot`` and of ``schema``
    alone when given."""
    pg_dump = find_tool("pg_dump", package=POSTGRES_CLIENT_PACKAGE)
    command = [pg_dump, "--format=custom"]
    if snapshot:
        command.append(f"--snapshot={snapshot}")
    if schema:
        # pg_dump reads --schema as a pattern; our schema names hold no pattern characters.
        command.append(f"--schema={schema}")
    return command


def _schema_problems(engine, url, tenant):
    """Return a line when what a tenant's backup loaded into the database of ``url`` is
    not that tenant's schema alone (beside the fresh database's own ``public``)."""
    wanted = tenant_schema(tenant)
    database = engine.connect(url)
    try:
        schemas = [
            name
            for (name,) in database.execute_sql(
                "SELECT nspname FROM pg_namespace WHERE nspname <> 'information_schema' "
                "AND NOT starts_with(nspname, 'pg_') ORDER BY 1"
            ).fetchall()
        ]
        public_used = database.execute_sql(
            "SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public')"
        ).fetchone()[0]
    finally:
        database.close()
    others = [name for name in schemas if name not in (wanted, "public")]
    if public_used:
        others.insert(0, "public")
    if others:
        listed = ", ".join(printable(name)[:40] for name in others[:3])
        return [f"a backup of tenant {tenant} holds other schemas than {wanted} ({listed})"]
    if wanted not in schemas:
        return [f"a backup of tenant {tenant} holds no schema {wanted}"]
    return []


@contextmanager
def _staged_schema(backups, fresh, base, source, staging):
    """Put the checked copy's schema ``source`` of the fresh database ``fresh`` into the
    live database ``base`` as the schema ``staging``, and yield; afterwards drop
    ``staging`` there if it is still there (the swap did not take it)."""
    engine = engine_for_url(base)
    _run(engine, fresh, f'ALTER SCHEMA "{source}" RENAME TO "{staging}"')
    _run(engine, base, f'DROP SCHEMA IF EXISTS "{staging}" CASCADE')  # a killed run's
    try:
        try:
            with tempfile.TemporaryDirectory(prefix="clonegallery-tenant-") as folder:
                archive = Path(folder) / "tenant.pgdump"
                with libpq_environment(fresh) as env, open(archive, "wb") as output:
                    run_tool(_dump_command(schema=staging), env, stdout=output)
                backups.load(base, archive, None)
        except (BackupError, ToolFailed) as exc:
            raise BackupError(
                f"the checked copy could not be moved into place: {exc}; nothing restored"
            ) from exc
        yield
    finally:
        _run(engine, base, f'DROP SCHEMA IF EXISTS "{staging}" CASCADE')


def _run(engine, url, *statements):
    """Run ``statements`` in one transaction on the database of ``url``."""
    database = engine.connect(url)
    try:
        with database.atomic():
            for statement in statements:
                database.execute_sql(statement)
    finally:
        database.close()


def _swap_schema(base, tenant, staging, source, timeout):
    """In one transaction: the live tenant's schema renamed away and dropped, the staged
    one renamed into its place, its functions' search_path moved from ``source`` to it,
    and the tenant's role given its rights on it again."""
    schema, retired = tenant_schema(tenant), RETIRED_PREFIX + tenant_schema(tenant)
    engine = engine_for_url(base)
    database = engine.connect(base)

    def swap():
        with database.atomic():
            # Dropping the old tables waits for whoever reads them: so long, no longer.
            database.execute_sql(f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms'")
            database.execute_sql(f'DROP SCHEMA IF EXISTS "{retired}" CASCADE')
            database.execute_sql(f'ALTER SCHEMA "{schema}" RENAME TO "{retired}"')
            database.execute_sql(f'ALTER SCHEMA "{staging}" RENAME TO "{schema}"')
            database.execute_sql(f'DROP SCHEMA "{retired}" CASCADE')
            _repoint_search_paths(database, schema, source)
            _grant_tenant_rights(database, tenant)
        return True

    try:
        retry_until(
            swap,
            timeout,
            interval=0.2,
            timed_out=lambda error: BackupError(
                f"tenant {tenant}'s tables are in use for more than {timeout} s "
                f"({one_line(error) if error else 'still in use'}); stop the app and retry; "
                "nothing restored"
            ),
            retry_on=peewee.OperationalError,
        )
    finally:
        database.close()


def _repoint_search_paths(database, schema, source):
    """Make the functions of ``schema`` whose fixed search_path names ``source`` (the
    schema the backup was taken of) name ``schema`` instead: a tenant's SECURITY DEFINER
    functions must read its own tables, not those of the tenant the backup came from."""
    rows = database.execute_sql(
        "SELECT p.oid::regprocedure::text, substr(c, 13) FROM pg_proc p "
        "CROSS JOIN unnest(p.proconfig) c "
        "WHERE p.pronamespace = %s::regnamespace AND starts_with(c, 'search_path=')",
        (schema,),
    ).fetchall()
    for function, setting in rows:
        entries = [entry.strip() for entry in setting.split(",")]
        if all(PLAIN_IDENTIFIER.fullmatch(entry) for entry in entries):
            moved = [schema if entry == source else entry for entry in entries]
        else:  # quoted names we will not take apart: what our migrations fix it to
            moved = [schema, "pg_temp"]
        if moved != entries:
            listed = ", ".join(quoted(database, entry) for entry in moved)
            database.execute_sql(f"ALTER FUNCTION {function} SET search_path = {listed}")


def _grant_tenant_rights(database, tenant):
    """Give the tenant's role (db.tenants) its rights on the restored schema again: the
    archive's grants were not loaded."""
    create_tenant_schema(database, tenant)  # usage and default privileges, as created
    schema = quoted(database, tenant_schema(tenant))
    role = quoted(database, tenant_role(database.database, tenant))
    database.execute_sql(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}"
    )
    database.execute_sql(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")


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
