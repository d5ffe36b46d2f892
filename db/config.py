"""Where the database is and how to open it.

The URL comes from, in order: the ``DATABASE_URL`` environment variable, the
Invoke configuration (``db.url`` in ``invoke.yaml`` or ``INVOKE_DB_URL``), else
the SQLite file ``clonegallery.db`` in the project folder::

    url = resolve_url(configured=None, project_dir=Path("."))
    database = open_database(url)      # a connected peewee Database
    print(mask_url(url))               # never shows the password

URLs are parsed by ``playhouse.db_url``. SQLite connections run with foreign
keys on, the WAL journal and a busy timeout, so a writer waits for another
instead of failing with "database is locked".
"""

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import peewee
from playhouse import db_url

from db.errors import ConfigError, ConnectionFailed

DEFAULT_SQLITE_FILE = "clonegallery.db"
BUSY_TIMEOUT_SECONDS = 60
SQLITE_PRAGMAS = {"foreign_keys": 1, "journal_mode": "wal"}
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


@dataclass(frozen=True)
class Settings:
    """What every command needs: the database URL and the migrations folder."""

    url: str
    migrations_dir: Path


def resolve_url(configured=None, project_dir=Path(".")):
    """Return the database URL: DATABASE_URL, else the configured one, else the default."""
    url = os.environ.get("DATABASE_URL") or configured
    if url:
        return url
    return f"sqlite:///{Path(project_dir).resolve() / DEFAULT_SQLITE_FILE}"


def mask_url(url):
    """Return the URL with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***@"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=userinfo + host))


def scheme_of(url):
    """Return the URL's scheme, or raise ConfigError when it is not one we support."""
    scheme = urlsplit(url).scheme
    if scheme not in db_url.schemes or scheme.split("+")[0] not in SUPPORTED_SCHEMES:
        raise ConfigError(
            f"unsupported database URL scheme {scheme!r} in {mask_url(url)}: "
            "use sqlite:///PATH, postgresql://USER@HOST/NAME or mysql://USER@HOST/NAME"
        )
    return scheme


def sqlite_path(url):
    """Return the file path of an SQLite URL (``:memory:`` for an in-memory one)."""
    return db_url.parse(url)["database"]


def open_database(url):
    """Return a connected peewee Database for the URL, or raise a one-line error."""
    scheme = scheme_of(url)
    database = _sqlite_database(url) if scheme.startswith("sqlite") else db_url.connect(url)
    try:
        database.connect()
    except peewee.DatabaseError as exc:
        raise ConnectionFailed(f"cannot open {mask_url(url)}: {exc}") from exc
    return database


def _sqlite_database(url):
    path = sqlite_path(url)
    if path != ":memory:":
        folder = Path(path).expanduser().resolve().parent
        if not folder.is_dir():
            raise ConfigError(
                f"cannot create the SQLite file {path}: folder {folder} does not exist"
            )
    return db_url.connect(url, pragmas=SQLITE_PRAGMAS, timeout=BUSY_TIMEOUT_SECONDS)


def database_exists(url):
    """Return whether the database already exists (an SQLite file that is there)."""
    if not scheme_of(url).startswith("sqlite"):
        return True
    path = sqlite_path(url)
    return path == ":memory:" or Path(path).expanduser().exists()
