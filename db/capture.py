"""The SQL that pending migrations would run, captured without applying it (offline mode).

    with runner_for(target, settings) as runner:
        captured = capture_pending(runner, to="005")   # [CapturedMigration, ...]
    for statement in captured[0].statements:
        print(statement.sql, statement.line)

Each step runs as ``db.migrate`` would run it, but ``database.execute_sql`` is replaced,
for the step's duration, by a recorder: statements that only read (SELECT, SHOW,
DESCRIBE, PRAGMA without ``=``: the introspection peewee's migrator does) go to the real
connection, transaction control (BEGIN, SAVEPOINT, COMMIT...) passes through, and every
other statement is recorded with its parameters rendered as SQL literals by the engine's
driver, and not executed. Everything happens under the migration lock. Per engine:

- PostgreSQL: on the live database, inside a transaction that is rolled back at the end
  (belt and braces: nothing is sent that could change it anyway).
- MySQL/MariaDB (DDL commits as it runs): in a side database, ``<name>_sqlcapture``, made
  with a copy of the live tables (no rows) and dropped afterwards, where the recorded
  statements do run. Without the right to create it: on the live database, reads only,
  and a read that fails (``SHOW INDEX`` of a table a pending migration creates) finds
  nothing.
- SQLite: on an in-memory copy of the live schema (tables, indexes, triggers, views,
  no rows; a virtual table's shadow tables come with its CREATE VIRTUAL TABLE) where
  the recorded statements do run; the file itself is only read.

Where the statements run on a copy, introspection (peewee's table rebuilds, MySQL's
``DESCRIBE`` before ``MODIFY``) sees what the earlier operations left. Known limit on
PostgreSQL (and MySQL without a side database): introspection sees the live schema, not
the one earlier pending operations would leave, so a step that reads what an earlier
pending one creates may be captured differently than it runs.
"""

import functools
import re
import traceback
from contextlib import contextmanager
from dataclasses import dataclass

import peewee

from db.engines.base import quoted, side_database_name
from db.engines.mysql import MySQLEngine
from db.engines.postgres import PostgresEngine
from db.engines.sqlite import SqliteEngine
from db.errors import CaptureFailed, ConfigError, one_line
from db.schema_dump import SQLITE_NOT_SHADOW

# The first word of a statement that only reads, or only controls the transaction.
READ_WORDS = {"SELECT", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "WITH", "VALUES", "TABLE"}
TRANSACTION_WORDS = {"BEGIN", "START", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "END"}
# A SELECT that changes something all the same (a sequence moves outside transactions).
SELECT_WRITES = re.compile(r"\b(setval|nextval)\s*\(", re.IGNORECASE)
# The side database a MySQL capture runs in: the configured one's name and this.
SCRATCH_ROLE = "sqlcapture"
LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*\n?|/\*.*?\*/|\()*", re.DOTALL)


@dataclass(frozen=True)
class CapturedStatement:
    """One statement a step would send: its SQL (parameters inlined) and the line of the
    migration file it comes from (the SQL statement's, or the Python line that sent it;
    None when unknown)."""

    sql: str
    line: int | None


@dataclass(frozen=True)
class CapturedMigration:
    """A pending migration's up step: the file, how it runs (StepOptions), its statements."""

    migration: object
    options: object
    statements: list


def capture_pending(runner, to=None, allow_out_of_order=False):
    """Return a CapturedMigration per pending migration (up to ``to``), applying nothing;
    the refusals are db.migrate's (drift, failed runs, unknown ``--to``)."""
    database, engine = runner.database, runner.engine
    with engine.migration_lock(database):
        plan = runner.plan_migrate(to, allow_out_of_order)
        if not plan:
            return []
        with capture_session(engine, database) as (scratch, execute):
            migrator = engine.migrator(scratch)
            return [
                _capture_step(engine, scratch, migrator, migration, steps, execute)
                for migration, steps in plan
            ]


def _capture_step(engine, database, migrator, migration, steps, execute):
    recorder = Recorder(engine, database, migration, execute)
    with recorder.installed():
        try:
            steps.up(migrator, database)
        except CaptureFailed:
            raise
        except Exception as exc:
            raise CaptureFailed(
                f"{migration.path.name}: cannot be captured without running it: "
                f"{one_line(exc)} (--sql reads the live schema, not the one earlier pending "
                "migrations would leave: apply those first)"
            ) from exc
    return CapturedMigration(migration, steps.up_options, recorder.statements)


class Recorder:
    """Stands in for ``database.execute_sql`` while one step runs (see the module)."""

    def __init__(self, engine, database, migration, execute):
        self.database = database
        self.migration = migration
        self.execute = execute  # whether recorded statements run too (SQLite's scratch copy)
        self.statements = []
        self._sql_lines = _statement_lines(engine, migration)
        self._real = None

    @contextmanager
    def installed(self):
        self._real = self.database.execute_sql
        self.database.execute_sql = self.execute_sql
        try:
            yield self
        finally:
            del self.database.execute_sql  # the class's method again

    def execute_sql(self, sql, params=None):
        kind = statement_kind(sql)
        if kind == "transaction":
            return self._real(sql, params)
        if kind == "read":
            return self._read(sql, params)
        rendered = render_sql(self.database, sql, params or ())
        self.statements.append(CapturedStatement(rendered, self._line_of(rendered)))
        if self.execute:
            return self._real(sql, params)
        return EmptyCursor()

    def _read(self, sql, params):
        if not isinstance(self.database, peewee.MySQLDatabase):
            return self._real(sql, params)
        try:
            return self._real(sql, params)
        except peewee.DatabaseError:
            return EmptyCursor()  # e.g. SHOW INDEX of a table a pending migration creates

    def _line_of(self, sql):
        if self.migration.kind == "sql":
            return self._sql_lines.get(_normalised(sql))
        path = str(self.migration.path.resolve())
        frames = [frame for frame in traceback.extract_stack() if frame.filename == path]
        return frames[-1].lineno if frames else None


class EmptyCursor:
    """What a recorded (not executed) statement returns: no rows, nothing changed."""

    rowcount = 0
    lastrowid = None
    description = None

    def fetchone(self):
        return None

    def fetchall(self):
        return []

    def __iter__(self):
        return iter(())

    def close(self):
        pass


def statement_kind(sql):
    """Return "read", "transaction" or "write" for one SQL statement."""
    text = LEADING_NOISE.sub("", sql)
    word = (text.split(None, 1) or [""])[0].upper().rstrip(";")
    if word in TRANSACTION_WORDS:
        return "transaction"
    if word == "PRAGMA":
        return "write" if "=" in text else "read"
    if word in READ_WORDS and not SELECT_WRITES.search(text):
        return "read"
    return "write"


def _statement_lines(engine, migration):
    """Return {normalised statement: line} of an SQL migration's statements."""
    if migration.kind != "sql":
        return {}
    lines = {}
    for statement in engine.split_statements(migration.path.read_text(encoding="utf-8")):
        text = statement.sql.split("\n")
        comments = 0
        while comments < len(text) and _is_comment(text[comments]):
            comments += 1
        body = "\n".join(text[comments:])
        lines.setdefault(_normalised(body), statement.line)  # the line of its first word
    return lines


def _is_comment(line):
    return not line.strip() or line.strip().startswith("--")


def _normalised(sql):
    return " ".join(sql.rstrip().rstrip(";").split()).lower()


# -- per engine: where the steps run, and how parameters become literals --------------------


@functools.singledispatch
def capture_session(engine, database):
    """Yield (the database the steps run against, whether recorded statements execute)."""
    raise TypeError(f"--sql cannot capture migrations on {engine.name}")


@capture_session.register
@contextmanager
def _(engine: PostgresEngine, database):
    with database.atomic() as transaction:
        yield database, False
        transaction.rollback()


@capture_session.register
@contextmanager
def _(engine: MySQLEngine, database):
    # MySQL commits DDL as it goes: the statements run in a side database holding a copy
    # of the live schema, dropped afterwards; without the right to make one, the live
    # schema is only read.
    name = side_database_name(database.database, SCRATCH_ROLE)
    if name in _databases(database):
        raise ConfigError(
            f"--sql's side database {name} already exists: a capture killed earlier may have "
            "left it; check it is not someone's, drop it, then run again"
        )
    try:
        database.execute_sql(f"CREATE DATABASE {quoted(database, name)}")
    except peewee.DatabaseError:
        yield database, False  # no right to create it: the live schema is only read
        return
    scratch = type(database)(name, **database.connect_params)
    try:
        scratch.connect()
        cursor = scratch.cursor()  # no parameters: a CHECK's "%" stays as it is
        cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
        for table in engine.tables(database):
            create = database.execute_sql(f"SHOW CREATE TABLE {quoted(database, table)}")
            cursor.execute(create.fetchone()[1])
        cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
        yield scratch, True
    finally:
        scratch.close()
        engine.drop_database(database, name)


def _databases(server):
    return {name for (name,) in server.execute_sql("SHOW DATABASES").fetchall()}


@capture_session.register
@contextmanager
def _(engine: SqliteEngine, database):
    scratch = peewee.SqliteDatabase(":memory:")
    scratch.connect()
    try:
        rows = database.execute_sql(
            "SELECT type, sql FROM sqlite_master WHERE sql IS NOT NULL "
            f"AND name NOT LIKE 'sqlite_%' AND {SQLITE_NOT_SHADOW} "
            "ORDER BY type = 'table' DESC, type = 'index' DESC"
        ).fetchall()
        for _, sql in rows:
            scratch.execute_sql(sql)
        with scratch.atomic():
            yield scratch, True
    finally:
        scratch.close()


@functools.singledispatch
def _render(database, sql, params):
    raise TypeError(f"no literal rendering for {type(database).__name__}")


@_render.register
def _(database: peewee.PostgresqlDatabase, sql, params):
    import psycopg

    return psycopg.ClientCursor(database.connection()).mogrify(sql, params)


@_render.register
def _(database: peewee.MySQLDatabase, sql, params):
    return database.cursor().mogrify(sql, params)


@_render.register
def _(database: peewee.SqliteDatabase, sql, params):
    pieces = sql.split("?")
    if len(pieces) != len(params) + 1:  # a "?" inside a literal: leave the text as sent
        return sql
    quote = database.connection().execute  # SQLite writes its own literals: quote(?)
    literals = [quote("SELECT quote(?)", (value,)).fetchone()[0] for value in params]
    return "".join(piece + literal for piece, literal in zip(pieces, [*literals, ""], strict=True))


def render_sql(database, sql, params):
    """Return the statement with its parameters written in as the driver would send them."""
    return _render(database, sql, tuple(params)).strip()
