"""Tenants: one gallery per tenant, kept apart by the engine itself.

    check_name("acme")                     # BadTenantName (exit 2): bad or reserved names
    url = tenant_url(settings.url, "acme")  # the tenant's own database, as a URL
    tenant_names(settings.url)             # the tenants there are, sorted
    create_tenant(settings, "acme")        # migrated and seeded (sample=False: essentials)
    drop_tenant(settings, "acme")
    with tenant("acme"):                   # the app's side: the models work on acme inside
        Image.visible_to(viewer)

Where a tenant of the configured database lives:

- **SQLite**: its own file, ``<stem>-tenants/<name>.db`` beside the database file
  (``clonegallery-tenants/acme.db``): two databases sharing a folder keep their own.
- **PostgreSQL**: the schema ``tenant_<name>`` of the same database, reached through the
  URL ``...?tenant=<name>`` (db/engines/postgres.py). Tasks work in that schema alone
  (``search_path``); the app's binding also acts as the tenant's role
  ``<database>__<name>``, which may use that schema and nothing else: raw SQL there
  cannot read another tenant's tables, and row-level security (migration 004) applies.
- **MySQL/MariaDB**: the database ``<database>__<name>`` on the same server.

Every task takes ``--tenant NAME`` (db/cli.py turns it into the tenant's URL); the
tenant must exist (``db.tenant-create``). ``run_for_each`` runs one piece of work per
tenant, each in a process of its own, a bounded number at once, for ``--all-tenants``.
"""

import functools
import re
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from db.config import database_name, mask_url
from db.engines import (
    MySQLEngine,
    PostgresEngine,
    SqliteEngine,
    engine_for,
    engine_for_url,
    postgres,
)
from db.engines.base import MAX_DATABASE_NAME, database_name_of, with_database
from db.engines.sqlite import sqlite_path
from db.errors import ConfigError, DatabaseMissing

NAME = re.compile(r"[a-z][a-z0-9_]{0,29}")
# Names an engine or a person would read as something else than a tenant.
RESERVED = frozenset(
    {
        "all", "default", "main", "temp", "public", "none", "tenants", "information_schema",
        "mysql", "sys", "performance_schema", "postgres", "template0", "template1",
    }
)  # fmt: skip
RESERVED_PREFIXES = ("pg_", "sqlite_")
SQLITE_FOLDER_SUFFIX = "-tenants"


class BadTenantName(ConfigError):
    """A tenant name that is malformed or reserved."""


class TenantExists(ConfigError):
    """db.tenant-create for a tenant that is there already."""


def check_name(name):
    """Return ``name`` when it can name a tenant on every engine: a lower-case letter, then
    up to 29 lower-case letters, digits or single underscores; else BadTenantName."""
    text = str(name)
    if not NAME.fullmatch(text) or "__" in text or text.endswith("_"):
        raise BadTenantName(
            f"tenant name {_shown(text)} is not allowed: use a lower-case letter, then up to "
            "29 lower-case letters, digits or single underscores (e.g. acme, studio_42)"
        )
    if text in RESERVED or text.startswith(RESERVED_PREFIXES):
        raise BadTenantName(f"tenant name {text!r} is reserved: choose another")
    return text


def _shown(text):
    return repr(text if len(text) <= 40 else text[:40] + "...")


def tenant_url(url, name):
    """Return the URL of tenant ``name`` of the database at ``url``."""
    return _tenant_url(engine_for_url(url), url, check_name(name))


@functools.singledispatch
def _tenant_url(engine, url, name):
    raise NotImplementedError(engine)


@_tenant_url.register
def _(engine: SqliteEngine, url, name):
    parts = urlsplit(url)
    file = Path(sqlite_path(url))
    tenant_file = tenants_folder(file) / f"{name}.db"
    return f"{parts.scheme}:///{tenant_file}" + (f"?{parts.query}" if parts.query else "")


@_tenant_url.register
def _(engine: MySQLEngine, url, name):
    tenant_database = f"{database_name_of(url)}__{name}"
    _check_length(tenant_database, "database name", url)
    return with_database(url, tenant_database)


@_tenant_url.register
def _(engine: PostgresEngine, url, name):
    base = postgres.split_tenant(url)[0]
    _check_length(postgres.tenant_role(database_name_of(base), name), "role name", url)
    return postgres.with_tenant(base, name)


def _check_length(derived, what, url):
    if len(derived.encode()) > MAX_DATABASE_NAME:
        raise BadTenantName(
            f"tenant {derived.rpartition('__')[2]!r} of {mask_url(url)} would need the {what} "
            f"{derived!r}, longer than the server's {MAX_DATABASE_NAME} characters: "
            "choose a shorter name"
        )


def tenants_folder(sqlite_file):
    """Return the folder of an SQLite database's tenant files, beside it."""
    file = Path(sqlite_file).expanduser().resolve()
    return file.with_name(file.stem + SQLITE_FOLDER_SUFFIX)


# -- which tenants there are ------------------------------------------------------------------


def tenant_names(url):
    """Return the names of the tenants of the database at ``url``, sorted (none when the
    database itself does not exist)."""
    return sorted(_tenant_names(engine_for_url(url), url))


@functools.singledispatch
def _tenant_names(engine, url):
    raise NotImplementedError(engine)


@_tenant_names.register
def _(engine: SqliteEngine, url):
    folder = tenants_folder(sqlite_path(url))
    files = folder.glob("*.db") if folder.is_dir() else ()
    return [file.stem for file in files if _is_name(file.stem)]


@_tenant_names.register
def _(engine: MySQLEngine, url):
    prefix = f"{database_name_of(url)}__"
    with engine.maintenance(url) as server:
        rows = server.execute_sql(
            "SELECT schema_name FROM information_schema.schemata WHERE LEFT(schema_name, %s) = %s",
            (len(prefix), prefix),
        ).fetchall()
    return [name[len(prefix) :] for (name,) in rows if _is_name(name[len(prefix) :])]


@_tenant_names.register
def _(engine: PostgresEngine, url):
    database = engine.connect_existing(postgres.split_tenant(url)[0])
    if database is None:
        return []
    try:
        return [name for name in postgres.tenant_names(database) if _is_name(name)]
    finally:
        database.close()


def _is_name(text):
    try:
        check_name(text)
    except BadTenantName:
        return False
    return True


def require_tenant(url, name):
    """Return the URL of tenant ``name``; DatabaseMissing, naming the task that creates
    it, when there is no such tenant."""
    url_of_tenant = tenant_url(url, name)
    if not engine_for_url(url_of_tenant).exists(url_of_tenant):
        raise DatabaseMissing(
            f"tenant {name!r} of {mask_url(url)} does not exist: "
            f"invoke db.tenant-create {name} creates it"
        )
    return url_of_tenant


def settings_for(settings, name):
    """Return ``settings`` pointed at tenant ``name`` (which must exist)."""
    return replace(settings, url=require_tenant(settings.url, name), tenant=name)


# -- creating and dropping ----------------------------------------------------------------------


def create_tenant(settings, name, sample=True, force=False, on_event=None):
    """Create tenant ``name``, migrated and seeded (only the essential seeders unless
    ``sample``; in production, sample ones only with ``force``, as db.setup); return the
    setup's result. TenantExists when it is there already."""
    from db import commands

    url = tenant_url(settings.url, name)
    engine = engine_for_url(url)
    if engine.exists(url):
        raise TenantExists(f"tenant {name!r} of {mask_url(settings.url)} exists already")
    if isinstance(engine, SqliteEngine):
        Path(sqlite_path(url)).parent.mkdir(mode=0o700, exist_ok=True)
    tenant_settings = replace(settings, url=url, tenant=name)
    return commands.setup(tenant_settings, sample=sample, force=force, on_event=on_event)


def drop_tenant(settings, name):
    """Drop tenant ``name`` with all its rows (its backups stay)."""
    from db.target import Target

    url = require_tenant(settings.url, name)
    Target(url, writes="db.tenant-drop").check_writable()
    engine_for_url(url).drop(url)


# -- what db.tenants shows ------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantInfo:
    """One tenant as db.tenants lists it."""

    name: str
    database: str  # the name its backups know it by (config.database_name)
    version: str | None  # the newest applied migration, None before the first
    size: int | None  # bytes on disk
    latest_backup: object  # a db.stats.BackupAge, or None


def tenant_overview(settings):
    """Return the TenantInfo of every tenant of the configured database, by name."""
    return [_tenant_info(settings, name) for name in tenant_names(settings.url)]


def _tenant_info(settings, name):
    from db.backups.owner import Owner
    from db.commands import runner_for
    from db.stats import latest_backup
    from db.target import Target

    url = tenant_url(settings.url, name)
    target = Target(url)
    with runner_for(target, settings, allow_incomplete=True) as runner:
        database = runner.database
        version = runner.current_version()
        size = _size(target.engine, database)
        backup = latest_backup(settings.backups_dir, Owner.known(database, url))
    return TenantInfo(name, database_name(url), version, size, backup)


@functools.singledispatch
def _size(engine, database):
    raise NotImplementedError(engine)


@_size.register
def _(engine: SqliteEngine, database):
    file = Path(database.database)
    return sum(p.stat().st_size for p in (file, Path(f"{file}-wal")) if p.exists())


@_size.register
def _(engine: MySQLEngine, database):
    from db.stats import MySQLStats  # a tenant is a database of its own: db.stats' size

    return MySQLStats(None).database_size(database)[0]


@_size.register
def _(engine: PostgresEngine, database):
    query = (
        "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm', 'p')"
    )
    return int(database.execute_sql(query).fetchone()[0])


# -- the app's side: the models bound to one tenant -------------------------------------------


@contextmanager
def tenant(name, database=None, password=None):
    """Make the models work on tenant ``name`` inside the block, for this thread or task
    only: of ``database``, else of the database the models are bound to. On PostgreSQL
    the connection logs in as the tenant's role (with ``password``, where the server asks
    for one), so raw SQL through it cannot reach another tenant either. DatabaseMissing
    when there is no such tenant."""
    from db.binding import database_proxy
    from db.models import reading_from

    base = database if database is not None else database_proxy.obj
    if password is not None:
        _tenant_passwords[(base.database, name)] = password
    with reading_from(_tenant_database(base, check_name(name))) as bound:
        yield bound


_bindings = weakref.WeakKeyDictionary()  # base Database -> {name: the tenant's Database}
_tenant_passwords = {}  # (database, tenant) -> the password of its PostgreSQL login role


def _tenant_database(base, name):
    """Return the (lazily connecting) Database of tenant ``name`` of ``base``.

    The Database is kept, but whether the tenant exists is asked on every entry (one
    catalogue lookup, or a file's stat): a tenant dropped since it was first bound must be
    DatabaseMissing, not a driver's error, and on SQLite not a new empty file that would
    then pass for a tenant."""
    engine = engine_for(base)
    _require_bindable(engine, base, name)
    known = _bindings.setdefault(base, {})
    if name not in known:
        known[name] = _bound_copy(engine, base, name)
    return known[name]


@functools.singledispatch
def _require_bindable(engine, base, name):
    raise NotImplementedError(engine)


@_require_bindable.register
def _(engine: SqliteEngine, base, name):
    if not (tenants_folder(base.database) / f"{name}.db").exists():
        raise _missing(name, base.database)


@_require_bindable.register
def _(engine: MySQLEngine, base, name):
    query = "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s"
    if base.execute_sql(query, (f"{base.database}__{name}",)).fetchone() is None:
        raise _missing(name, base.database)


@_require_bindable.register
def _(engine: PostgresEngine, base, name):
    query = "SELECT 1 FROM pg_namespace WHERE nspname = %s"
    if base.execute_sql(query, (postgres.tenant_schema(name),)).fetchone() is None:
        raise _missing(name, base.database)


def _missing(name, where):
    return DatabaseMissing(
        f"tenant {name!r} of {where} does not exist: invoke db.tenant-create {name} creates it"
    )


@functools.singledispatch
def _bound_copy(engine, base, name):
    raise NotImplementedError(engine)


@_bound_copy.register
def _(engine: SqliteEngine, base, name):
    file = tenants_folder(base.database) / f"{name}.db"
    return type(base)(str(file), pragmas=dict(base._pragmas), timeout=base._timeout)


@_bound_copy.register
def _(engine: MySQLEngine, base, name):
    return type(base)(f"{base.database}__{name}", **base.connect_params)


@_bound_copy.register
def _(engine: PostgresEngine, base, name):
    # Logged in as the tenant's role itself, not acting as it: a session may always
    # SET ROLE back to the user it logged in as, and that user may act as every tenant.
    role = postgres.tenant_role(base.database, name)
    login = {"user": role, "password": _tenant_passwords.get((base.database, name))}
    options = f"-c search_path={postgres.tenant_schema(name)}"
    return type(base)(base.database, **{**base.connect_params, **login, "options": options})


# -- --all-tenants: the same work on every tenant --------------------------------------------

DEFAULT_JOBS = 4


def run_for_each(names, work, jobs=DEFAULT_JOBS):
    """Yield (name, result of ``work(name)``) for every tenant as it finishes, at most
    ``jobs`` at once, each in a process of its own: one tenant's failure, crash or
    memory does not touch another's run. The processes are forked, so ``work`` may be
    any callable; what it returns must pickle. A process that dies (killed, or crashed)
    yields its tenant alone with a WorkerDied result: the tenants running beside it and
    those still to start run on as before. Should the caller stop early, the processes
    still running are waited for, not killed mid-work."""
    import sys
    from collections import deque
    from multiprocessing import get_context
    from multiprocessing.connection import wait

    if jobs < 1:  # refused before anything runs: with no tenant, as with many
        raise ConfigError(f"--jobs must be at least 1, not {jobs}")
    context = get_context("fork")
    waiting = deque(names)
    running = {}  # the result pipe's reading end -> (process, name)
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                name = waiting.popleft()
                for stream in (sys.stdout, sys.stderr):  # else the child writes it again
                    stream.flush()
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(target=_run_work, args=(work, name, writer))
                process.start()
                writer.close()  # the child's alone: its death is the reader's end of file
                running[reader] = (process, name)
            for reader in wait(list(running)):
                process, name = running.pop(reader)
                yield name, _result(reader, process)
    finally:
        for reader, (process, _) in running.items():
            _result(reader, process)


def _run_work(work, name, writer):
    """A tenant's process: send back what ``work(name)`` returns, or how it failed."""
    try:
        outcome = ("result", work(name))
    except BaseException as exc:  # whatever ended it is the parent's to report
        outcome = ("failed", f"{type(exc).__name__}: {exc}")
    try:
        writer.send(outcome)
    except Exception as exc:  # a result that does not pickle
        writer.send(("failed", f"its result could not be sent back: {type(exc).__name__}"))
    writer.close()


@dataclass(frozen=True)
class WorkerDied:
    """The result of a tenant whose worker process ended without returning one."""

    reason: str


def _result(reader, process):
    """Return the result a tenant's process sent, once it has ended; WorkerDied when it
    sent none (killed, or crashed) or its work raised."""
    try:
        kind, value = reader.recv()
    except (EOFError, OSError):
        kind, value = "died", None
    finally:
        reader.close()
        process.join()
    if kind == "result":
        return value
    if kind == "failed":
        return WorkerDied(f"its worker process failed ({value})")
    return WorkerDied(f"its worker process died ({_exit_reason(process.exitcode)})")


def _exit_reason(exitcode):
    import signal

    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"
