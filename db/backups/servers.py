"""What PostgreSQL and MySQL backups share: restores that load into a fresh database
before swapping it in, and the checks of a loaded backup (the client tools they run are
in db/clients.py).

A server backup is verified the only way a dump can be: by loading it into a scratch
database on the configured server and comparing what arrived with the manifest.
A restore loads into a fresh database the same way, so the live one is untouched until
the restored copy has proved sound; then the engine swaps them (see each subclass).

A backup file is untrusted input, so it is loaded, and the loaded copy read, by an
account that can reach nothing but the database being loaded (``loading_account``, see
each subclass). What can be read from the loaded copy is read from it and compared with
the manifest, never taken from it: the tables, their row counts, the schema version.
"""

from contextlib import contextmanager

import peewee

from db.backups.owner import engine_of
from db.backups.sqlite import CLONEGALLERY_TABLES, count_problems
from db.config import database_name, mask_url
from db.content import orphans
from db.engines import engine_for_url
from db.engines.base import quoted, with_database
from db.errors import BackupError, ConfigError, DbError, ToolFailed, one_line
from db.history import History

MAX_NAME = 63  # PostgreSQL's limit on a database name; MySQL allows 64


class ServerBackups:
    """The backup steps of one server engine; subclasses supply the tools and the swap."""

    engine = None  # the manifest's engine name
    suffix = None

    def dump(self, database, url, partial, compress):
        raise NotImplementedError

    def loading_account(self, url):
        """Return a context manager yielding the URL of the database of ``url`` as the
        account that may load an untrusted backup into it (and read what it loaded)."""
        raise NotImplementedError

    def load(self, url, path, manifest):
        """Load the backup ``path`` into the (empty) database of ``url``."""
        raise NotImplementedError

    def swap(self, url, fresh_url, timeout):
        """Put the database of ``fresh_url`` in the place of the live one of ``url``."""
        raise NotImplementedError

    def check(self, path, manifest, url):
        """Load the backup into a scratch database; return the problems found."""
        self._require_server(url, "verify")
        scratch = self.side_database(url, "verify")
        with self.fresh_database(scratch), self.loading_account(scratch) as loader:
            try:
                self.load(loader, path, manifest)
            except (BackupError, ToolFailed) as exc:
                return [str(exc)]
            return self.loaded_problems(loader, manifest)

    def restore(self, url, path, manifest, safety_folder, take_safety, timeout=30, adopt=None):
        """Load into a fresh database and check it, and run ``adopt(database)`` on it
        (when given; as the loading account, since what the copy holds is not trusted
        yet); then take the safety backup of the live one (``take_safety()``) and swap
        the fresh one in; return the safety backup."""
        self._require_server(url, "restore")
        fresh = self.side_database(url, "restoring")
        with self.fresh_database(fresh):
            self.load_checked(fresh, path, manifest, adopt)
            safety = take_safety()
            self.swap(url, fresh, timeout)
        return safety

    def load_checked(self, fresh, path, manifest, adopt=None):
        """Load the backup into the fresh database of ``fresh`` as the loading account,
        check it and run ``adopt`` on it; raise BackupError ending "nothing restored"."""
        with self.loading_account(fresh) as loader:
            try:
                self.load(loader, path, manifest)
            except (BackupError, ToolFailed) as exc:
                raise BackupError(f"{path}: {exc}; nothing restored") from exc
            problems = self.loaded_problems(loader, manifest)
            if problems:
                raise BackupError(f"{path}: {problems[0]}; nothing restored")
            if adopt is not None:
                _run_on(self.loaded_url(loader, manifest), adopt)

    def loaded_url(self, url, manifest):
        """Return the URL that reads what a backup loaded into the database of ``url``
        (PostgreSQL: the tenant's schema, for a tenant's backup)."""
        return url

    def loaded_problems(self, url, manifest):
        """Check a database loaded from a backup: our tables, schema version, row counts,
        foreign keys."""
        database = engine_for_url(url).connect(self.loaded_url(url, manifest))
        try:
            counts = table_rows(database)
            missing = [t for t in CLONEGALLERY_TABLES if t not in counts]
            if missing:
                return [f"not a CloneGallery database (no {', '.join(missing)} table)"]
            return (
                version_problems(schema_version(database), manifest)
                + count_problems(counts, manifest)
                + orphan_problems(database)
            )
        except (DbError, peewee.DatabaseError, ValueError) as exc:
            return [f"cannot read what the backup loaded: {one_line(exc)}"]
        finally:
            database.close()

    @contextmanager
    def fresh_database(self, url):
        """Create the database of ``url`` (dropping a leftover of a killed run first);
        drop it afterwards unless it was swapped in."""
        engine = engine_for_url(url)
        engine.drop(url)
        engine.create(url)
        try:
            yield
        finally:
            engine.drop(url)

    def side_database(self, url, role):
        """Return the URL of a database beside the live one, named for its role: a
        tenant's (``<database>__<tenant>``) joined by ``__``, which no tenant's name
        holds, so that db.tenants never lists it as a tenant."""
        name = database_name(url)
        joiner = "__" if "__" in name else "_"
        return with_database(self.database_url(url), f"{name}{joiner}{role}"[:MAX_NAME])

    def database_url(self, url):
        """Return the URL of the whole database ``url`` is in (PostgreSQL: without the
        tenant's schema)."""
        return url

    def _require_server(self, url, action):
        if engine_of(url) != self.engine:
            raise ConfigError(
                f"to {action} a {self.engine} backup, configure a {self.engine} database "
                f"(DATABASE_URL is {mask_url(url)})"
            )


def _run_on(url, job):
    """Call ``job(database)`` with a connection to the database of ``url``."""
    database = engine_for_url(url).connect(url)
    try:
        job(database)
    finally:
        database.close()


def table_rows(database):
    """Return {table: rows} of every table of a connected database."""
    return {
        table: database.execute_sql(f"SELECT COUNT(*) FROM {quoted(database, table)}").fetchone()[0]
        for table in sorted(database.get_tables())
    }


def schema_version(database):
    """Return the latest applied migration of a connected database (None: none)."""
    versions = sorted(History(database).applied(), key=int)
    return versions[-1] if versions else None


def version_problems(loaded, manifest):
    """Return a line when the schema version loaded differs from the manifest's."""
    claimed = manifest.get("schema_version")
    if loaded == claimed:
        return []
    return [
        f"schema version {loaded or 'none'} in the backup, the manifest says {claimed or 'none'}"
    ]


def orphan_problems(database):
    """Return one line per foreign key whose rows point at no parent row."""
    return [
        f"{table}.{column}: {count} rows point at no parent row"
        for table, column, count in orphans(database)
    ]
