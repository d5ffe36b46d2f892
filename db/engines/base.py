"""The Engine interface, and what engines share."""

import time
from contextlib import contextmanager
from typing import NamedTuple

import peewee
from playhouse import db_url

from db.config import mask_url, require_database_name
from db.errors import ConfigError, ConnectionFailed, one_line

LOCK_TIMEOUT_SECONDS = 600


class StandbyInfo(NamedTuple):
    """One standby a primary streams to, as the primary sees it."""

    name: str  # its application_name
    address: str | None  # the client address it connects from
    state: str  # streaming, catchup, startup...
    lag_bytes: int | None  # WAL sent to it but not replayed there yet
    lag_seconds: float | None  # its replay lag, as the primary last measured it


class Replication(NamedTuple):
    """Where a server stands in replication: a primary and its standbys, or a standby,
    its primary (host:port) and how far behind it is."""

    role: str  # "primary" or "standby"
    standbys: tuple = ()  # StandbyInfo, on a primary
    primary: str | None = None  # on a standby: the primary it streams from
    lag_bytes: int | None = None  # on a standby: WAL received but not replayed yet
    lag_seconds: float | None = None  # on a standby: age of the last replayed transaction
    halted: str | None = None  # on a standby that does not replicate now: why, in words


class Statement(NamedTuple):
    """One SQL statement and the line of its file it starts on."""

    line: int
    sql: str


class Engine:
    """The primitives the toolkit needs from one database engine."""

    name = "generic"  # how the engine is shown to people: SQLite, PostgreSQL, MySQL
    key = "generic"  # how it is named in files and settings: sqlite, postgres, mysql
    schemes = ()
    database_class = peewee.Database
    transactional_ddl = True
    row_level_security = False  # whether the database may filter a write to no row
    driver_extra = None  # the pyproject extra that installs the driver
    datetime_precision = 6  # digits of a second that its date-time columns keep
    foreign_keys_make_indexes = False  # whether a foreign key makes an index of its own
    has_standbys = False  # whether a database may be a read-only standby (replication)

    def check_url(self, url):
        """Raise ConfigError unless the URL can name a database of this engine."""

    def exists(self, url):
        raise NotImplementedError

    def connect_existing(self, url):
        """Return a connected Database when the URL's database exists, else None: the
        probe and the connection in one (on a server, one connection, not two)."""
        return self.connect(url) if self.exists(url) else None

    def create(self, url):
        raise NotImplementedError

    def drop(self, url):
        """Delete the whole database if it exists (tests and benchmarks; never db.reset)."""
        raise NotImplementedError

    def connect(self, url, **options):
        """Return a connected peewee Database, or raise one clear line."""
        try:
            # Percent-encoded user and password, as the client tools read them too.
            database = db_url.connect(url, unquote_user=True, unquote_password=True, **options)
            database.connect()
        except peewee.ImproperlyConfigured as exc:
            raise ConfigError(
                f"{self.name} needs its driver: pip install 'clonegallery-db[{self.driver_extra}]' "
                f"({exc})"
            ) from exc
        except peewee.DatabaseError as exc:
            raise ConnectionFailed(f"cannot open {mask_url(url)}: {one_line(exc)}") from exc
        return database

    def migrator(self, database):
        raise NotImplementedError

    def migration_lock(self, database, timeout=LOCK_TIMEOUT_SECONDS):
        raise NotImplementedError

    @contextmanager
    def transaction(self, database):
        with database.atomic():
            yield

    @contextmanager
    def migration_transaction(self, database):
        with database.atomic():
            yield

    def split_statements(self, sql, first_line=1):
        """Split with sqlparse (quotes, comments, dollar quoting); keep each start line."""
        import sqlparse  # its lexer compiles many patterns: only for commands that run SQL files

        statements, offset = [], 0
        for text in sqlparse.split(sql):
            if not text.strip() or _only_comments(text):
                continue
            position = sql.find(text, offset)
            offset = position + len(text)
            start = position + len(text) - len(text.lstrip())
            line = first_line + sql.count("\n", 0, start) + _leading_comment_lines(text)
            statements.append(Statement(line, _strip_leading_comments(text).strip()))
        return statements

    def tables(self, database):
        """Return the names of the database's tables (not the engine's own)."""
        return database.get_tables()

    @contextmanager
    def consistent_read(self, database):
        """Read inside one snapshot: every read sees the database as it was at the first."""
        with database.atomic():
            yield

    def identity(self, database):
        """Return what tells this database apart from every other one (two URLs may
        name the same database)."""
        raise NotImplementedError

    def restart_sequences(self, database, tables):
        """Make new rows of the tables get ids past the largest one there (after rows
        were inserted with their ids)."""

    def drop_all_tables(self, database):
        raise NotImplementedError

    def empty_all_tables(self, database, keep=()):
        raise NotImplementedError

    def bulk_insert(self, database, table, columns, rows):
        if rows:
            database.cursor().executemany(insert_statement(database, table, columns), rows)

    def finish_interrupted_restore(self, database):
        """Finish a restore killed in the middle of its swap, where one can be (MySQL:
        see db/backups/mysql.py); return whether there was one."""
        return False

    # -- the catalogue, for db.check ------------------------------------------------------

    def check_constraints(self, database, table):
        """Return the expressions of the table's CHECK constraints, as the engine keeps them."""
        raise NotImplementedError

    def triggers(self, database):
        """Return {trigger: table} of the database's triggers."""
        raise NotImplementedError

    def invalid_indexes(self, database):
        """Return (index, table) of the indexes a failed concurrent build left invalid."""
        return []

    # -- replication, for db.status and the tasks that write ----------------------------

    def replication(self, database):
        """Return the server's Replication, or None where the engine gives no such
        information."""
        return None

    def primary_of(self, database):
        """Return the primary (host:port) of a read-only standby, or None when the
        database can be written."""
        return None


class ServerEngine(Engine):
    """An engine whose databases live on a server: created and dropped over a maintenance
    connection to another database of the same server."""

    maintenance_database = None
    create_right = None  # the privilege that lets a user create databases
    current_schema = None  # the SQL that names the schema the connection works in

    def check_url(self, url):
        # Without a name, playhouse raises a ValueError that quotes the password.
        require_database_name(url)

    def exists(self, url):
        database = self.connect_existing(url)
        if database is not None:
            database.close()
        return database is not None

    def connect_existing(self, url):
        try:
            return self.connect(url)
        except ConnectionFailed as exc:
            if self.is_unknown_database(exc, url):
                return None
            raise

    def create(self, url):
        name = database_name_of(url)
        with self.maintenance(url) as maintenance:
            try:
                self.create_database(maintenance, name)
            except peewee.DatabaseError as exc:
                if self.exists(url):  # created meanwhile by a concurrent run
                    return
                raise ConfigError(
                    f"cannot create database {name!r} on {mask_url(url)}: {one_line(exc)} "
                    f"(create it by hand or grant {self.create_right})"
                ) from exc

    def drop(self, url):
        if self.exists(url):
            with self.maintenance(url) as maintenance:
                self.drop_database(maintenance, database_name_of(url))

    @contextmanager
    def maintenance(self, url):
        """Yield a connection to the server's maintenance database."""
        database = self.connect(with_database(url, self.maintenance_database))
        try:
            yield database
        finally:
            database.close()

    def is_unknown_database(self, exc, url):
        raise NotImplementedError

    def triggers(self, database):
        sql = (
            "SELECT DISTINCT trigger_name, event_object_table FROM information_schema.triggers "
            f"WHERE trigger_schema = {self.current_schema}"
        )
        return dict(database.execute_sql(sql).fetchall())

    def create_database(self, maintenance, name):
        raise NotImplementedError

    def drop_database(self, maintenance, name):
        raise NotImplementedError


def retry_until(attempt, timeout, interval, timed_out, retry_on=()):
    """Call ``attempt()`` every ``interval`` seconds until it returns true (an exception of
    a ``retry_on`` type counts as a failed attempt); once ``timeout`` seconds have passed,
    raise ``timed_out(error)`` instead, chained to ``error``: the failed attempt's
    exception, or None. For waits on other processes: a lock, a busy database."""
    deadline = time.monotonic() + timeout
    while True:
        error = None
        try:
            if attempt():
                return
        except retry_on as exc:
            error = exc
        if time.monotonic() > deadline:
            raise timed_out(error) from error
        time.sleep(interval)


def insert_statement(database, table, columns):
    """Return ``INSERT INTO table (columns) VALUES (?, ...)`` quoted for the database."""
    context = database.get_sql_context()
    context.literal("INSERT INTO ")
    context.sql(peewee.Entity(table))
    context.literal(" (")
    context.sql(peewee.CommaNodeList([peewee.Entity(column) for column in columns]))
    context.literal(") VALUES (" + ", ".join([database.param] * len(columns)) + ")")
    return context.query()[0]


def quoted(database, name):
    """Return a table or column name quoted for the database."""
    return database.get_sql_context().sql(peewee.Entity(name)).query()[0]


def with_database(url, name):
    """Return the URL with another database name (for maintenance connections)."""
    head, _, query = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


# The longest database name both servers take (PostgreSQL: 63 bytes; MySQL: 64).
MAX_DATABASE_NAME = 63


def side_database_name(name, role):
    """Return the name of a scratch database beside database ``name`` for ``role``
    (``<name>_<role>``), never ``name`` itself: a name too long to take the suffix is
    shortened and told apart by a hash of it, not cut back into the live one's."""
    import hashlib

    side = f"{name}_{role}"
    if len(side.encode()) <= MAX_DATABASE_NAME:
        return side
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = MAX_DATABASE_NAME - len(role) - len(digest) - 2
    return f"{name.encode()[:keep].decode(errors='ignore')}_{digest}_{role}"


def database_name_of(url):
    return db_url.parse(url)["database"]


def _only_comments(sql):
    return all(not line.strip() or line.strip().startswith("--") for line in sql.splitlines())


def _leading_comment_lines(text):
    count = 0
    for line in text.strip().splitlines():
        if line.strip() and not line.strip().startswith("--"):
            break
        count += 1
    return count


def _strip_leading_comments(text):
    lines = text.strip().splitlines()
    return "\n".join(lines[_leading_comment_lines(text) :])
