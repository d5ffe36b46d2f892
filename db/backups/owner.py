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
"""

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import peewee

from db.engines import engine_for_url, engine_named
from db.engines.base import database_name_of
from db.history import DatabaseIdentity

UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def engine_of(url):
    """Return the manifest's name of the URL's engine: its key (sqlite, postgres, mysql)."""
    return engine_for_url(url).key


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

    @classmethod
    def at(cls, url, database_id=None):
        """Return the owner at ``url`` with the given id (None: not known)."""
        engine = engine_of(url)
        if engine == "sqlite":
            path = Path(database_name_of(url)).expanduser().resolve()
            return cls(engine, None, None, str(path), database_id)
        parts = urlsplit(url)
        return cls(engine, parts.hostname, parts.port, database_name_of(url), database_id)

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
        """Return the owner a manifest names, or None when it names none."""
        recorded = (manifest or {}).get("database")
        if not isinstance(recorded, dict) or not isinstance(recorded.get("name"), str):
            return None
        port = recorded.get("port")
        return cls(
            engine_key(str(recorded.get("engine"))),
            recorded.get("host"),
            port if isinstance(port, int) else None,
            recorded["name"],
            recorded.get("id") if isinstance(recorded.get("id"), str) else None,
        )

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
        return (self.engine, self.host, self.port, self.name) == (
            other.engine,
            other.host,
            other.port,
            other.name,
        )

    @property
    def short_name(self):
        """The name a person knows the database by: a file's name, or a database's."""
        return Path(self.name).name if self.engine == "sqlite" else self.name

    def file_prefix(self):
        """Return the start of its backups' file names: the database's name, made safe
        for a file name (an SQLite file's name without its suffix)."""
        name = Path(self.name).stem if self.engine == "sqlite" else self.name
        return UNSAFE_NAME_CHARACTERS.sub("_", name).strip("._") or "database"

    def describe(self):
        """Return the database in words, e.g. ``sqlite /srv/app.db`` or
        ``postgresql gallery on db.internal:5432``."""
        if self.engine == "sqlite":
            return f"sqlite {self.name}"
        where = self.host or "localhost"
        if self.port:
            where += f":{self.port}"
        return f"{self.engine} {self.name} on {where}"
