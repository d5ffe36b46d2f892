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
from urllib.parse import parse_qsl, urlsplit

import peewee
from playhouse import db_url

from db.errors import ConfigError, ConnectionFailed

DEFAULT_SQLITE_FILE = "clonegallery.db"
BUSY_TIMEOUT_SECONDS = 60
SQLITE_PRAGMAS = {"foreign_keys": 1, "journal_mode": "wal"}
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
PASSWORD_PARAMETERS = {"password", "passwd"}


@dataclass(frozen=True)
class Settings:
    """What every command needs: the database URL and the migrations and seeders folders."""

    url: str
    migrations_dir: Path
    seeders_dir: Path = Path("seeders")


def resolve_url(configured=None, project_dir=Path(".")):
    """Return the database URL: DATABASE_URL, else the configured one, else the default."""
    url = os.environ.get("DATABASE_URL") or configured
    if url:
        return url
    return f"sqlite:///{Path(project_dir).resolve() / DEFAULT_SQLITE_FILE}"


def mask_url(url):
    """Return the URL with its password (in the user part or a query parameter) as ``***``."""
    parts = urlsplit(url)
    if parts.password is not None:
        user, _, host = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(key.lower() in PASSWORD_PARAMETERS for key, _ in pairs):
        masked = [(k, "***" if k.lower() in PASSWORD_PARAMETERS else v) for k, v in pairs]
        parts = parts._replace(query="&".join(f"{k}={v}" for k, v in masked))
    if parts == urlsplit(url):
        return url
    # Not urlunsplit: it drops the "//" of a URL without a host (sqlite:///x.db).
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{query}"


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


def check_url(url):
    """Raise ConfigError unless the URL names a database we could open or create."""
    scheme = scheme_of(url)
    if not scheme.startswith("sqlite"):
        return
    parts = urlsplit(url)
    if parts.username or parts.password or parts.port:
        raise ConfigError(
            f"{mask_url(url)}: an SQLite URL takes no user, password or port; "
            "use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = sqlite_path(url)
    if path != ":memory:":
        folder = Path(path).expanduser().resolve().parent
        if not folder.is_dir():
            raise ConfigError(
                f"cannot create the SQLite file {path}: folder {folder} does not exist"
            )


def open_database(url):
    """Return a connected peewee Database for the URL, or raise a one-line error."""
    check_url(url)
    extra = {}
    if scheme_of(url).startswith("sqlite"):
        extra = {"pragmas": SQLITE_PRAGMAS, "timeout": BUSY_TIMEOUT_SECONDS}
    try:
        database = db_url.connect(url, **extra)
        database.connect()
    except peewee.ImproperlyConfigured as exc:
        raise ConfigError(f"cannot open {mask_url(url)}: {exc}") from exc
    except peewee.DatabaseError as exc:
        raise ConnectionFailed(f"cannot open {mask_url(url)}: {exc}") from exc
    return database


def database_name(url):
    """Return the name a person knows the database by: the SQLite file name, or the
    database name on a server."""
    name = db_url.parse(url)["database"]
    return Path(name).name if scheme_of(url).startswith("sqlite") else name


def database_exists(url):
    """Return whether the database already exists (an SQLite file that is there)."""
    if not scheme_of(url).startswith("sqlite"):
        return True
    path = sqlite_path(url)
    return path == ":memory:" or Path(path).expanduser().exists()
