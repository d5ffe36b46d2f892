"""Adopt a database that already has the schema: ``invoke db.baseline VERSION``.

    adoption = adopt(target, database, "migrations", "seeders", "003")
    adoption.recorded        # ["001_initial_schema", "002_add_indexes", "003_add_triggers"]
    adoption.kept            # the seed era's history rows carried over: ["001", "002", "003"]

A database made by hand, by another tool or by the seed's original scripts has the
schema but not this toolkit's history, so ``db.migrate`` would build it a second time.
``adopt`` builds what the migrations up to VERSION build in a scratch database on the
same engine (SQLite: a temporary file; PostgreSQL, MySQL: ``<name>_baseline`` on the same
server, dropped afterwards whatever happens), compares the live schema with it through
db.check's comparison (``compare_with_migrations``: tables, columns by type family,
nullability, defaults, primary keys, indexes, foreign keys, CHECKs, triggers) and, only
when nothing differs, records migrations 001..VERSION as applied, marked as a baseline
(the history's ``baseline`` column holds where the schema came from). Otherwise it raises
SchemaDiffers, which carries the differences, and changes nothing.

The seed era's bookkeeping is recognised and converted in the same step: its
``migrations(version, description[, applied_at...])`` table (no checksum) and its
``seeders(name[, applied_at...])`` table. Their rows are kept: a migration's description
becomes its baseline note, its time its ``applied_at``; a seeder row is mapped to this
project's seeder of the same number (``001_users_seeder`` -> ``001_users``) so that
``db.seed`` does not seed the sample data a second time (one without a counterpart stays
under its own name, shown as missing by db.status). A seed-era row beyond VERSION, or
without a migration file, is refused.

Order of the writes, for engines whose DDL commits at once (MySQL): the new tables are
made under staged names (``migrations_baseline_new``) and filled, then swapped in with one
atomic ``RENAME TABLE`` that also moves the seed era's aside (``migrations_seed_era``),
which are dropped last. A run killed at any point leaves either the seed era's tables
(and staged ones the next run drops) or the new history (and aside ones the next run
drops): never neither. Elsewhere the whole conversion is one transaction.
"""

import datetime
import functools
import re
import tempfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from db.check import live_shape, schema_differences, trigger_differences
from db.config import mask_url
from db.engines import MySQLEngine, SqliteEngine
from db.engines.base import (
    ServerEngine,
    database_name_of,
    quoted,
    side_database_name,
    with_database,
)
from db.errors import (
    AlreadyManaged,
    ConfigError,
    NothingToAdopt,
    SchemaDiffers,
    SeedEraHistoryError,
    UnknownVersion,
)
from db.history import History, SeederHistory, application_tables
from db.loader import discover
from db.runner import Runner

ADOPTED_NOTE = "adopted by db.baseline"
SEED_ERA_NOTE = "seed era"
STAGED_SUFFIX = "_baseline_new"  # the new history, made and filled before the swap
ASIDE_SUFFIX = "_seed_era"  # the seed era's tables, moved aside by the swap, dropped last
SCRATCH_ROLE = "baseline"
# Where the seed era's tables may have kept a row's time, first found wins.
SEED_ERA_TIMES = ("applied_at", "executed_at", "seeded_at", "run_at", "created_at")
SEED_ERA_NAMES = ("name", "seeder", "filename")
LEADING_NUMBER = re.compile(r"^\s*(\d+)")


@dataclass(frozen=True)
class Adoption:
    """What db.baseline did."""

    version: str
    recorded: list  # the migrations recorded as a baseline, oldest first
    kept: list = field(default_factory=list)  # versions of the seed era's rows carried over
    seeders: list = field(default_factory=list)  # seeder rows carried over, by their new name
    finished: bool = False  # True: an interrupted run was finished, nothing else was done


@dataclass(frozen=True)
class SeedEraRow:
    """One row of a seed-era bookkeeping table."""

    label: str  # the version or the seeder's name, as stored
    number: int | None
    note: str | None
    applied_at: datetime.datetime | None


def chosen_migrations(migrations_dir, version):
    """Return the migration files 001..``version``; raise UnknownVersion for a version
    that is not a number or names no migration."""
    files = discover(migrations_dir)
    head = str(version).split("_", 1)[0]
    if not head.isdigit():
        raise UnknownVersion(f"db.baseline {version}: a version is a number such as 003")
    if int(head) not in {f.number for f in files}:
        known = ", ".join(f.version for f in files) or "none"
        raise UnknownVersion(
            f"db.baseline {version}: no migration has that version (known: {known})"
        )
    return [f for f in files if f.number <= int(head)]


def adopt(target, database, migrations_dir, seeders_dir, version):
    """Record migrations 001..``version`` as applied (a baseline) on ``database`` (the
    opened ``target``) once its schema is what they build; return an Adoption."""
    chosen = chosen_migrations(migrations_dir, version)
    version = chosen[-1].version
    engine = target.engine
    with engine.migration_lock(database):
        if _finish_interrupted(database):
            return Adoption(version, [], finished=True)
        legacy_migrations = _seed_era_table(database, History.table_name, ("version",))
        legacy_seeders = _seed_era_table(database, SeederHistory.table_name, SEED_ERA_NAMES)
        if legacy_migrations is None and History(database).rows():
            raise AlreadyManaged(
                f"{target.masked_url} already has this toolkit's migration history: "
                "nothing to adopt; use invoke db.migrate"
            )
        kept = legacy_migrations and _seed_era_rows(database, History.table_name, "version")
        _refuse_unknown_versions(kept or [], chosen, migrations_dir)
        if not application_tables(database):
            raise NothingToAdopt(
                f"{target.masked_url} has no tables of its own: nothing to adopt; "
                "run invoke db.setup to build it"
            )
        differences = compare_with_migrations(target, database, migrations_dir, version)
        if differences:
            raise SchemaDiffers(
                f"the schema of {target.masked_url} is not what the migrations up to "
                f"{version} build ({len(differences)} difference(s) above); nothing changed",
                differences,
            )
        seeded = []
        if legacy_seeders is not None:
            rows = _seed_era_rows(database, SeederHistory.table_name, legacy_seeders)
            seeded = _seeder_rows(rows, discover(seeders_dir, noun="seeder"))
        migrations = _migration_rows(kept or [], chosen)
        if legacy_migrations is None and legacy_seeders is None:
            history = History(database)
            with engine.transaction(database):
                history.ensure_table()
                for migration, note, applied_at in migrations:
                    history.record_baseline(migration, note, applied_at)
        else:
            _convert_seed_era(engine, database, migrations, seeded)
        return Adoption(
            version,
            [migration.name for migration, _, _ in migrations],
            [row.label for row in kept or []],
            [seeder.name for seeder, _ in seeded],
        )


def compare_with_migrations(target, database, migrations_dir, version):
    """Return the Differences between the live schema and what the migrations up to
    ``version`` build on the same engine (in a scratch database, dropped afterwards)."""
    source = f"the migrations up to {version}"
    engine = target.engine
    with scratch_database(engine, target) as scratch:
        Runner(scratch, migrations_dir, engine=engine).migrate(to=version)
        wanted = {
            table: live_shape(scratch, engine, table) for table in application_tables(scratch)
        }
        wanted_triggers = engine.triggers(scratch)
    differences = schema_differences(database, engine, wanted, source)
    return differences + trigger_differences(wanted_triggers, engine.triggers(database), source)


@contextmanager
def scratch_database(engine, target):
    """Yield a new, empty database of the target's engine, connected; drop it afterwards
    (one made by hand beforehand is emptied instead, for the next run)."""
    with scratch_url(engine, target.url) as url:
        made_by_hand = _empty_scratch_made_by_hand(engine, url)
        if not made_by_hand:
            try:
                engine.create(url)
            except ConfigError:
                raise ConfigError(
                    f"db.baseline runs the migrations in a scratch database beside the live "
                    f"one, {mask_url(url)}, and may not create it: grant the right to create "
                    "databases, or create it empty by hand (it is then emptied, not dropped)"
                ) from None
        scratch = engine.connect(url)
        try:
            yield scratch
        finally:
            if made_by_hand:
                engine.drop_all_tables(scratch)
            scratch.close()
            if not made_by_hand:
                engine.drop(url)


def _empty_scratch_made_by_hand(engine, url):
    """Return whether an empty database is at ``url`` (made by hand for an account that
    may not create databases), to be used; refuse one with tables: a run killed earlier
    may have left it, but it may as well be someone's, and is never dropped unasked."""
    scratch = engine.connect_existing(url)
    if scratch is None:
        return False
    try:
        tables = engine.tables(scratch)
    finally:
        scratch.close()
    if tables:
        raise ConfigError(
            f"db.baseline's scratch database {mask_url(url)} already exists and has tables "
            f"({', '.join(sorted(tables)[:3])}...): a db.baseline killed earlier may have left "
            "it; check it is not someone's, drop it, then run again"
        )
    return True


@functools.singledispatch
def scratch_url(engine, url):
    """A context manager yielding the URL of a scratch database beside ``url``'s."""
    raise TypeError(f"db.baseline has no scratch database on {engine.name}")


@scratch_url.register
@contextmanager
def _(engine: SqliteEngine, url):
    with tempfile.TemporaryDirectory(prefix="clonegallery-baseline-") as folder:
        yield f"sqlite:///{Path(folder) / 'scratch.db'}"


@scratch_url.register
@contextmanager
def _(engine: ServerEngine, url):
    # Named as the live one's side databases are, so that an account with rights on
    # ``<name>_%`` only may make it; the migration lock keeps the name to one run.
    name = side_database_name(database_name_of(url), SCRATCH_ROLE)
    yield with_database(url, name)


# -- the seed era ----------------------------------------------------------------------------


def _seed_era_table(database, table, names):
    """Return the column (of ``names``) that keys a seed-era bookkeeping table: one named
    ``table`` without a checksum column; None when there is no such table."""
    if not database.table_exists(table):
        return None
    columns = {column.name for column in database.get_columns(table)}
    if "checksum" in columns:
        return None
    return next((name for name in names if name in columns), None)


def _seed_era_rows(database, table, key):
    """Return the SeedEraRows of a seed-era table keyed by column ``key``."""
    columns = {column.name for column in database.get_columns(table)}
    note = "description" if "description" in columns else None
    when = next((name for name in SEED_ERA_TIMES if name in columns), None)
    selected = [key, note or key, when or key]
    sql = (
        f"SELECT {', '.join(quoted(database, c) for c in selected)} FROM {quoted(database, table)}"
    )
    rows = []
    for label, described, moment in database.execute_sql(sql).fetchall():
        label = str(label).strip()
        number = LEADING_NUMBER.match(label)
        rows.append(
            SeedEraRow(
                label,
                int(number[1]) if number else None,
                str(described).strip() if note and described else None,
                _naive_utc(moment) if when else None,
            )
        )
    return sorted(rows, key=lambda row: (row.number is None, row.number or 0, row.label))


def _naive_utc(moment):
    """Return a seed-era time as the history stores it (naive UTC), or None."""
    if isinstance(moment, str):
        try:
            moment = datetime.datetime.fromisoformat(moment.strip())
        except ValueError:
            return None
    if not isinstance(moment, datetime.datetime):
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment


def _refuse_unknown_versions(rows, chosen, migrations_dir):
    files = {f.number: f for f in discover(migrations_dir)}
    newest = chosen[-1]
    problems = []
    for row in rows:
        if row.number is None:
            problems.append(f"{row.label!r} has no version number")
        elif row.number not in files:
            problems.append(f"{row.label} has no migration file in {migrations_dir}")
        elif row.number > newest.number:
            problems.append(f"{row.label} is beyond {newest.version}")
    if problems:
        raise SeedEraHistoryError(
            f"the seed era's migrations table records what db.baseline {newest.version} "
            f"cannot: {'; '.join(problems)}; nothing changed"
        )


def _migration_rows(kept, chosen):
    """Return (migration, note, applied_at) for each chosen migration: the seed era's
    description and time where it recorded one."""
    by_number = {row.number: row for row in kept}
    rows = []
    for migration in chosen:
        row = by_number.get(migration.number)
        if row is None:
            rows.append((migration, ADOPTED_NOTE, None))
        else:
            note = f"{SEED_ERA_NOTE}: {row.note}" if row.note else SEED_ERA_NOTE
            rows.append((migration, note, row.applied_at))
    return rows


@dataclass(frozen=True)
class _CarriedSeeder:
    """A seed-era seeder row without a seeder file of its number: kept by its own name."""

    name: str
    checksum: str = ""


def _seeder_rows(rows, files):
    """Return (seeder file or _CarriedSeeder, applied_at) for each seed-era seeder row."""
    by_number = {f.number: f for f in files}
    carried = []
    for row in rows:
        seeder = by_number.get(row.number)
        if seeder is None:
            seeder = _CarriedSeeder(Path(row.label).stem)
        carried.append((seeder, row.applied_at))
    return carried


def _bookkeeping(table_class, name, database):
    """Return a ``table_class`` bookkeeping table of ``database`` named ``name``."""
    renamed = type(table_class.__name__, (table_class,), {"table_name": name})
    return renamed(database)


def _convert_seed_era(engine, database, migrations, seeded):
    """Replace the seed era's tables by this toolkit's history, their rows carried over."""
    tables = [(History, History.table_name)]
    if seeded or database.table_exists(SeederHistory.table_name):
        tables.append((SeederHistory, SeederHistory.table_name))
    staged = {name: _bookkeeping(cls, name + STAGED_SUFFIX, database) for cls, name in tables}
    # One transaction where DDL is transactional; on MySQL each step below commits, in an
    # order that a killed run leaves for the next one to finish (see the module's notes).
    whole = engine.transaction(database) if engine.transactional_ddl else nullcontext()
    with whole:
        for table in staged.values():
            table.drop_table()
            table.Record.create_table()
        with engine.transaction(database):
            history = staged[History.table_name]
            for migration, note, applied_at in migrations:
                history.record_baseline(migration, note, applied_at)
            for seeder, applied_at in seeded:
                staged[SeederHistory.table_name].record(seeder, applied_at)
        renames = []
        for name, table in staged.items():
            if database.table_exists(name):
                renames.append((name, name + ASIDE_SUFFIX))
            renames.append((table.table_name, name))
        rename_tables(engine, database, renames)
        for name in staged:
            database.execute_sql(f"DROP TABLE IF EXISTS {quoted(database, name + ASIDE_SUFFIX)}")


def _finish_interrupted(database):
    """Drop what a killed conversion left (see the module's notes); return whether the
    new history was already in place (then there is nothing else to do)."""
    names = (History.table_name, SeederHistory.table_name)
    for name in names:
        database.execute_sql(f"DROP TABLE IF EXISTS {quoted(database, name + STAGED_SUFFIX)}")
    aside = [name + ASIDE_SUFFIX for name in names if database.table_exists(name + ASIDE_SUFFIX)]
    if not aside:
        return False
    for name in aside:
        database.execute_sql(f"DROP TABLE {quoted(database, name)}")
    return True


@functools.singledispatch
def rename_tables(engine, database, renames):
    """Rename tables, (old, new) in order."""
    migrator = engine.migrator(database)
    for old, new in renames:
        migrator.migrate(migrator.rename_table(old, new))


@rename_tables.register
def _(engine: MySQLEngine, database, renames):
    # One RENAME TABLE renames them all atomically: no moment with neither history.
    pairs = ", ".join(f"{quoted(database, old)} TO {quoted(database, new)}" for old, new in renames)
    database.execute_sql(f"RENAME TABLE {pairs}")
