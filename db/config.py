"""Where the database is: the URL, and how it may be shown.

The URL comes from, in order: the ``DATABASE_URL`` environment variable, the
Invoke configuration (``db.url`` in ``invoke.yaml`` or ``INVOKE_DB_URL``), else
the SQLite file ``clonegallery.db`` in the project folder::

    url = resolve_url(configured=None, project_dir=Path("."))   # a relative SQLite path is
                                                                # taken from project_dir
    print(mask_url(url))               # never shows the password
    scheme_of(url)                     # "sqlite", "postgresql", "mysql" (else ConfigError)
    check_lasting_url(to_url, "--to")  # a URL given elsewhere, checked as resolve_url does
    resolve_read_url(configured=None)  # DATABASE_READ_URL or db.read_url: a standby, or None

Every task needs a database that outlives it: ``resolve_url`` refuses (ConfigError) an
in-memory SQLite URL (``sqlite:///:memory:``, ``sqlite://``, ``sqlite:///file::memory:``,
``?mode=memory``) and a server URL without a database name (``postgresql://app@db:5432/``).

URLs are parsed by ``playhouse.db_url``; opening one is the engines' business
(``db.engines.open_database``).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

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
    environment: str = "development"  # "production" refuses sample seeders (db/seeders.py)
    # How long a migration waits for a lock, and may run one statement ("off": no limit),
    # unless the migration says otherwise; lock timeouts are retried lock_retries times.
    lock_timeout: str = "5s"
    statement_timeout: str = "off"
    lock_retries: int = 3
    # Where the app sends its reads (a standby): DATABASE_READ_URL or db.read_url; None: the
    # database itself (see resolve_read_url and db.models.reading_from).
    read_url: str | None = None
    # Where db.replicate keeps the database's continuous protection (see db/pitr): SQLite's
    # WAL (a folder, or s3://bucket/path) shipped every replica_sync_interval, the most a
    # crash of the machine can lose; a server's base backups, taken every
    # base_backup_interval (the newest base_backups_kept kept), and its WAL or binary logs
    # (PostgreSQL: the pgBackRest repository, its stanza named db.stanza).
    replica: str | None = None
    replica_sync_interval: str = "1s"
    base_backup_interval: str = "1d"
    base_backups_kept: object = 7  # text from INVOKE_DB_*: db.pitr.kept_count reads it
    stanza: str = "clonegallery"
    # db.health's limits: {check: {warning: .., critical: ..}} (db/health/thresholds.py);
    # missing ones take their defaults.
    health: dict = field(default_factory=dict)
    # The tenant the URL is of (--tenant NAME, see db/tenants.py), for manifests and output.
    tenant: str | None = None

    def __post_init__(self):
        check_environment(self.environment)


# What db.environment may say: only production changes anything (no sample seeders), but a
# misspelt "prodution" must not quietly let the sample gallery into production.
ENVIRONMENTS = ("development", "test", "staging", "production")


def check_environment(environment):
    """Raise ConfigError unless ``environment`` is one of ENVIRONMENTS (any case)."""
    if str(environment).strip().lower() not in ENVIRONMENTS:
        raise ConfigError(f"db.environment {environment!r} is not one of {', '.join(ENVIRONMENTS)}")


def resolve_url(configured=None, project_dir=Path(".")):
    """Return the database URL: DATABASE_URL, else the configured one, else the default;
    ConfigError when it cannot name a lasting database (see check_lasting_url)."""
    if os.environ.get("DATABASE_URL"):
        url, setting = os.environ["DATABASE_URL"], "DATABASE_URL"
    elif configured:
        url, setting = configured, "db.url"
    else:
        return f"sqlite:///{Path(project_dir).resolve() / DEFAULT_SQLITE_FILE}"
    check_lasting_url(url, setting)
    return anchored(url, project_dir)


def resolve_read_url(configured=None, project_dir=Path(".")):
    """Return the URL the app reads from, a standby: DATABASE_READ_URL, else the configured
    ``db.read_url``, else None (reads go to the database itself); checked as resolve_url's."""
    if os.environ.get("DATABASE_READ_URL"):
        url, setting = os.environ["DATABASE_READ_URL"], "DATABASE_READ_URL"
    elif configured:
        url, setting = configured, "db.read_url"
    else:
        return None
    check_lasting_url(url, setting)
    return anchored(url, project_dir)


def anchored(url, project_dir):
    """Return the URL with a relative SQLite path taken from the project folder, as the
    default database and the migrations, seeders and backups folders are: whichever
    folder a task runs from, ``sqlite:///gallery.db`` is the same file."""
    parts = urlsplit(url)
    path = parts.path[1:]  # what follows sqlite:///
    if not parts.scheme.startswith("sqlite") or not path or path.startswith(("/", "~", "file:")):
        return url
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}:///{Path(project_dir).resolve() / path}{query}"


def check_lasting_url(url, setting):
    """Raise ConfigError, naming ``setting``, unless the URL names a database that outlives
    the process: a supported scheme, not an in-memory SQLite database, a database name on
    a server."""
    try:
        db_url.parse(url)  # a bad port or IPv6 address raises, quoting only that part
    except ValueError as exc:
        raise ConfigError(f"{setting} is not a valid database URL: {exc}") from None
    if scheme_of(url).startswith("sqlite"):
        if is_in_memory_sqlite(url):
            raise ConfigError(
                f"{setting} {mask_url(url)} is an in-memory SQLite database, gone when the "
                f"task ends: name a file instead, e.g. sqlite:///{DEFAULT_SQLITE_FILE}"
            )
    else:
        require_database_name(url, setting)


def is_in_memory_sqlite(url):
    """Return whether an SQLite URL opens an in-memory (or private temporary) database."""
    parsed = db_url.parse(url)
    database = parsed["database"]  # playhouse turns an empty path into ":memory:"
    if database == ":memory:" or str(parsed.get("mode", "")).lower() == "memory":
        return True
    # An SQLite URI filename (file::memory:); its query is the URL's, read above. SQLite
    # decodes the path's %XX escapes, and an empty one is a private temporary database.
    if database.lower().startswith("file:"):
        return unquote(urlsplit(database).path) in ("", ":memory:")
    return False


def require_database_name(url, setting=None):
    """Raise ConfigError unless a server URL names its database (``.../clonegallery``)."""
    if db_url.parse(url)["database"]:
        return
    parts = urlsplit(url)
    query = f"?{parts.query}" if parts.query else ""
    example = f"{parts.scheme}://{parts.netloc}/{Path(DEFAULT_SQLITE_FILE).stem}{query}"
    named = f"{setting} {mask_url(url)}" if setting else mask_url(url)
    raise ConfigError(f"{named} has no database name: add it to the URL, e.g. {mask_url(example)}")


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
    database name on a server (``clonegallery__acme`` for a tenant, see db/tenants.py)."""
    parsed = db_url.parse(url)
    name = parsed["database"]
    if scheme_of(url).startswith("sqlite"):
        return Path(name).name
    # A PostgreSQL tenant (?tenant=acme, a schema): named as MySQL names its database.
    return f"{name}__{parsed['tenant']}" if parsed.get("tenant") else name


def resolve_replica(configured, project_dir):
    """Return the configured ``db.replica``: an s3:// URL as it is, a folder taken from
    the project folder when relative (None when unset); ConfigError for another URL."""
    if not configured:
        return None
    text = str(configured)
    if "://" in text and not text.startswith("s3://"):
        raise ConfigError(f"db.replica {text!r} is neither a folder nor an s3://bucket/path URL")
    if text.startswith("s3://"):
        return text
    folder = Path(text).expanduser()
    return str(folder if folder.is_absolute() else Path(project_dir).resolve() / folder)


RECIPIENTS_VARIABLE = "CLONEGALLERY_BACKUP_RECIPIENTS"


def resolve_recipients(configured=None):
    """Return the public keys backups are encrypted to: CLONEGALLERY_BACKUP_RECIPIENTS,
    else the configured ``db.backup_recipients`` (None when neither is set)."""
    return os.environ.get(RECIPIENTS_VARIABLE) or configured
