"""Where the database is: the URL, and how it may be shown.

The URL comes from, in order: the ``DATABASE_URL`` environment variable, the
Invoke configuration (``db.url`` in ``invoke.yaml`` or ``INVOKE_DB_URL``), else
the SQLite file ``clonegallery.db`` in the project folder::

    url = resolve_url(configured=None, project_dir=Path("."))
    print(mask_url(url))               # never shows the password
    scheme_of(url)                     # "sqlite", "postgresql", "mysql" (else ConfigError)

URLs are parsed by ``playhouse.db_url``; opening one is the engines' business
(``db.engines.open_database``).
"""

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from playhouse import db_url

from db.errors import ConfigError

DEFAULT_SQLITE_FILE = "clonegallery.db"
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
PASSWORD_PARAMETERS = {"password", "passwd"}


@dataclass(frozen=True)
class Settings:
    """What every command needs: the database URL and the migrations and seeders folders."""

    url: str
    migrations_dir: Path
    seeders_dir: Path = Path("seeders")
    backups_dir: Path = Path("backups")
    backup_recipients: object = None  # age/SSH public keys: text, or a list of texts
    backup_identity: Path | None = None  # the file of the key that decrypts backups


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


def database_name(url):
    """Return the name a person knows the database by: the SQLite file name, or the
    database name on a server."""
    name = db_url.parse(url)["database"]
    return Path(name).name if scheme_of(url).startswith("sqlite") else name


RECIPIENTS_VARIABLE = "CLONEGALLERY_BACKUP_RECIPIENTS"


def resolve_recipients(configured=None):
    """Return the public keys backups are encrypted to: CLONEGALLERY_BACKUP_RECIPIENTS,
    else the configured ``db.backup_recipients`` (None when neither is set)."""
    return os.environ.get(RECIPIENTS_VARIABLE) or configured
