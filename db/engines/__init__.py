"""What differs between database engines, behind one small interface.

The toolkit needs these things from an engine, and only these:

- ``check_url(url)``, ``exists(url)``, ``create(url)``, ``connect(url)``: reaching the
  database (``open_database(url, create)`` below combines them);
- ``migrator(database)``: the ``playhouse.migrate`` SchemaMigrator that migrations receive;
- ``migration_lock(database)``: a lock held while planning and applying (migrations or
  seeders), which dies with the process that holds it, so concurrent runs do the work once;
- ``transaction(database)``: a unit of writes that waits for other writers;
- ``migration_transaction(database)``: one migration and its history row, all or nothing
  where the engine can (``transactional_ddl``);
- ``split_statements(sql, first_line)``: an SQL file's text as Statements (line, sql);
- ``drop_all_tables(database)`` / ``empty_all_tables(database, keep)``: for ``db.reset``;
- ``bulk_insert(database, table, columns, rows)``: many rows at once, for ``db.populate``;
- for ``db.transfer``: ``tables(database)`` (the database's own tables, not the engine's),
  ``consistent_read(database)`` (one snapshot for many reads), ``identity(database)``
  (which database a connection really reaches), ``restart_sequences(database, tables)``
  (new rows get ids past the copied ones) and ``datetime_precision``.

And the catalogue's ``check_constraints`` and ``triggers`` (db.check), and
``finish_interrupted_restore`` (what a killed MySQL restore leaves). The features whose
work differs most per engine (stats, explain, optimize, schema, backups) keep each
engine's part beside the others and pick it with ``functools.singledispatch`` on the
Engine's class: never by its name, and no engine module imports a feature.

``engine_for(database)``, ``engine_for_url(url)`` and ``engine_named(key)`` pick the
engine: ``sqlite.py``, ``postgres.py``, ``mysql.py``. Its ``key`` (sqlite, postgres,
mysql) is its one name in files, settings and tests; ``name`` is for people.
"""

from db.config import scheme_of
from db.engines.base import Engine, Statement
from db.engines.mysql import MySQLEngine
from db.engines.postgres import PostgresEngine
from db.engines.sqlite import SqliteEngine

ENGINES = (SqliteEngine, PostgresEngine, MySQLEngine)

__all__ = [
    "ENGINES",
    "Engine",
    "MySQLEngine",
    "PostgresEngine",
    "SqliteEngine",
    "Statement",
    "database_exists",
    "engine_for",
    "engine_for_url",
    "engine_named",
    "open_database",
]


def engine_for(database):
    """Return the Engine for a peewee Database."""
    for engine_class in ENGINES:
        if isinstance(database, engine_class.database_class):
            return engine_class()
    raise TypeError(f"no engine for {type(database).__name__}")


def engine_named(name):
    """Return the Engine a file or setting names by its key (sqlite, postgres, mysql) or
    by a URL scheme (postgresql: how manifests before format 3 named it); None if none."""
    for engine_class in ENGINES:
        if name in (engine_class.key, *engine_class.schemes):
            return engine_class()
    return None


def engine_for_url(url):
    """Return the Engine for a database URL (ConfigError for an unsupported scheme)."""
    scheme = scheme_of(url).split("+")[0]
    return next(engine_class() for engine_class in ENGINES if scheme in engine_class.schemes)


def database_exists(url):
    """Return whether the database of the URL exists (without creating it)."""
    engine = engine_for_url(url)
    engine.check_url(url)
    return engine.exists(url)


def open_database(url, create=True):
    """Return a connected peewee Database for the URL, creating it first if asked."""
    engine = engine_for_url(url)
    engine.check_url(url)
    if create and not engine.exists(url):
        engine.create(url)
    return engine.connect(url)
