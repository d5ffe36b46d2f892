"""Whose backup is this: the database a backup was taken of, recorded in its manifest.

    owner = Owner.of(database, url)          # gives the database an id if it has none
    manifest["database"] = owner.as_manifest()
    owner.owns(manifest)                     # True for its own backups only
    Owner.from_manifest(manifest).describe() # "postgresql gallery on 127.0.0.1:5432"

Many databases may share one backups folder (a laptop with a test and a dev database,
a server with several), so every task that looks at backups — listing, retention,
db.stats' latest backup — sees only those of the configured database. A backup is
known as a database's own by the database's id (a random UUID kept in the database
itself, see db.history.DatabaseIdentity), so a renamed SQLite file or a moved server
still finds its backups; a manifest without an id (older backups) is matched by where
the database is: engine, host, port and name (for SQLite, the file's absolute path).

A tenant (db/tenants.py) is a database of its own here: its backups name it by its own
id (kept in its own schema on PostgreSQL) and its own name (``<database>__<tenant>``, as
config.database_name names it; for SQLite its file), and the manifest's ``tenant`` says
which tenant it was (None: the default database). A manifest is input anyone with the
folder may have written: a ``tenant`` that is no tenant's name (db.tenants.check_name)
makes it name no database at all.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import peewee

from db import tenants
from db.config import database_name
from db.engines import engine_for_url, engine_named, postgres
from db.engines.base import database_name_of
from db.engines.sqlite import sqlite_path
from db.history import DatabaseIdentity

UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def engine_of(url):
    """Return the manifest's name of the URL's engine: its key (sqlite, postgres, mysql)."""
    return engine_for_url(url).key


def tenant_of(url):
    """Return the name of the tenant whose database ``url`` is, or None for a database
    that is no tenant's (read from where tenants live, see db/tenants.py)."""
    engine = engine_of(url)
    if engine == "postgres":
        found = postgres.split_tenant(url)[1]
    elif engine == "mysql":
        base, separator, found = database_name_of(url).rpartition("__")
        found = found if separator and base else None
    else:
        file = Path(sqlite_path(url)).expanduser().resolve()
        in_folder = file.parent.name.endswith(tenants.SQLITE_FOLDER_SUFFIX)
        found = file.stem if in_folder and file.suffix == ".db" else None
    return found if found is not None and _is_tenant_name(found) else None


def manifest_tenant(manifest):
    """Return the tenant a manifest names (None: the default database); ValueError when
    its ``tenant`` is there but no tenant's name."""
    recorded = (manifest or {}).get("tenant")
    if recorded is None:
        return None
    if not isinstance(recorded, str) or not _is_tenant_name(recorded):
        shown = recorded if isinstance(recorded, str) else type(recorded).__name__
        raise ValueError(f"the manifest's tenant {str(shown)[:40]!r} is not a tenant's name")
    return recorded


def _is_tenant_name(text):
    try:
        tenants.check_name(text)
    except tenants.BadTenantName:
        return False
    return True


def engine_key(name):
    """Return the key of the engine a manifest names, in any spelling it was ever
    written in (postgresql before format 3); an unknown name as it is."""
    engine = engine_named(name)
    return engine.key if engine else name


@dataclass(frozen=True)
class Owner:
    """A database, as its backups' manifests name it."""

    engine: str
    host: str | None
    port: int | None
    name: str  # the database's name on its server, or an SQLite file's absolute path
    id: str | None
    tenant: str | None = None  # the tenant it is (db/tenants.py), None: the default database

    @classmethod
    def at(cls, url, database_id=None):
        """Return the owner at ``url`` with the given id (None: not known)."""
        engine, tenant = engine_of(url), tenant_of(url)
        if engine == "sqlite":
            path = Path(database_name_of(url)).expanduser().resolve()
            return cls(engine, None, None, str(path), database_id, tenant)
        # A PostgreSQL tenant is a schema: named <database>__<tenant>, as on MySQL.
        parts = urlsplit(url)
        return cls(engine, parts.hostname, parts.port, database_name(url), database_id, tenant)

    @classmethod
    def of(cls, database, url):
        """Return the owner of the open ``database``, giving it an id if it has none and
        the connection may (a read-only account backs up too: its backups are then known
        by where the database is)."""
        try:
            return cls.at(url, DatabaseIdentity(database).ensure())
        except peewee.DatabaseError:
            return cls.at(url)

    @classmethod
    def known(cls, database, url):
        """Return the owner of the open ``database`` without writing to it (its id may be
        None: no backup was ever taken of it)."""
        return cls.at(url, DatabaseIdentity(database).read())

    @classmethod
    def from_manifest(cls, manifest):
        """Return the owner a manifest names, or None when it names none (or a tenant
        that cannot be one)."""
        recorded = (manifest or {}).get("database")
        if not isinstance(recorded, dict) or not isinstance(recorded.get("name"), str):
            return None
        try:
            tenant = manifest_tenant(manifest)
        except ValueError:
            return None
        port = recorded.get("port")
        return cls(
            engine_key(str(recorded.get("engine"))),
            recorded.get("host"),
            port if isinstance(port, int) else None,
            recorded["name"],
            recorded.get("id") if isinstance(recorded.get("id"), str) else None,
            tenant,
        )

    def manifest_fields(self):
        """Return what a backup's manifest records of its database: ``database`` and
        ``tenant``."""
        return {"database": self.as_manifest(), "tenant": self.tenant}

    def as_manifest(self):
        return {
            "engine": self.engine,
            "host": self.host,
            "port": self.port,
            "name": self.name,
            "id": self.id,
        }

    def owns(self, manifest):
        """Return whether a backup's manifest names this database."""
        other = Owner.from_manifest(manifest)
        return other is not None and self.is_same(other)

    def is_same(self, other):
        """Return whether ``other`` is this database: the same id where both have one,
        else the same place."""
        if self.id and other.id:
            return self.id == other.id
        return self.same_place(other)

    def same_place(self, other):
        return (self.engine, self.host, self.port, self.name, self.tenant) == (
            other.engine,
            other.host,
            other.port,
            other.name,
            other.tenant,
        )

    @property
    def short_name(self):
        """The name a person knows the database by: a file's name, or a database's."""
        return Path(self.name).name if self.engine == "sqlite" else self.name

    def file_prefix(self):
        """Return the start of its backups' file names: the database's name, made safe
        for a file name (an SQLite file's name without its suffix)."""
        name = Path(self.name).stem if self.engine == "sqlite" else self.name
        if self.engine == "sqlite" and self.tenant:  # <stem>-tenants/acme.db: <stem>__acme
            folder = Path(self.name).parent.name.removesuffix(tenants.SQLITE_FOLDER_SUFFIX)
            name = f"{folder}__{self.tenant}"
        return UNSAFE_NAME_CHARACTERS.sub("_", name).strip("._") or "database"

    def describe(self):
        """Return the database in words, e.g. ``sqlite /srv/app.db`` or
        ``postgresql gallery on db.internal:5432``, ``... (tenant acme)`` for a tenant."""
        of_tenant = f" (tenant {self.tenant})" if self.tenant else ""
        if self.engine == "sqlite":
            return f"sqlite {self.name}{of_tenant}"
        where = self.host or "localhost"
        if self.port:
            where += f":{self.port}"
        return f"{self.engine} {self.name} on {where}{of_tenant}"
