"""Compare the live database with the models and the migration files with the history.

    differences = check_database(database, "migrations")   # [Difference(...), ...]
    # [] when in step; else e.g. Difference("column", "images", "images.karma: column
    # not in the models"), Difference("migration", None, "migration 004_x: pending")

What is compared, table by table (the bookkeeping tables migrations, seeders and
transfer_incomplete are left out), through peewee's introspection:

- tables and columns, present on one side only;
- each column's type, loosely: its family (integer, text, real, datetime, boolean), as the
  engine declares the model's field type and as it reports the column's;
- nullability and the primary key's columns;
- server defaults (``DEFAULT ...`` in the models), in a form the engines' renderings share
  (see ``_comparable_default``);
- indexes, unique or not, by their column lists (names differ between engines);
- foreign keys as column -> table.column, with their ON DELETE rule where the model
  declares one (peewee reads the rule on every engine);
- the triggers: those the applied migrations create on this engine, by name (see
  ``expected_objects``), against the engine's catalogue;
- the indexes the applied migrations create beyond the models (006's partial and
  covering ones), by name: present, and left out of the models' comparison;
- migration 005's derived search objects (db.search: ``image_search``, FTS5's tables,
  the autocomplete indexes and the triggers that keep them) are not the models': they
  are neither compared with them nor reported as additions;
- indexes a failed ``CREATE INDEX CONCURRENTLY`` left invalid (PostgreSQL);
- every migration whose state is not ``applied`` (db.runner's status).

A CHECK constraint's text is not compared, only that a column with a rule has one: the
engines rewrite the expressions in their own words, so a loose comparison would be
guesswork (tests/test_schema.py proves the migrations and the models agree on them).
"""

import dataclasses
import re
from dataclasses import dataclass

import peewee

from db.engines import engine_for
from db.history import application_tables
from db.loader import discover, load_module
from db.models import ALL_MODELS
from db.report import invalid_index_line
from db.runner import APPLIED, CHANGED, FAILED, MISSING, PENDING, Runner
from db.search import DERIVED_INDEXES, is_derived_trigger

# How each state that is not "applied" reads in a difference line.
MIGRATION_STATES = {
    PENDING: "pending",
    CHANGED: "changed after it was applied",
    MISSING: "applied, but its file is gone",
    FAILED: "failed half-way (fix the database, then invoke db.rollback or db.repair)",
}
# Words of a declared type -> its family, first match wins (MySQL's BOOL is TINYINT(1)).
TYPE_FAMILIES = (
    (("BOOL", "TINYINT"), "boolean"),
    (("INT", "SERIAL"), "integer"),
    (("CHAR", "TEXT", "CLOB", "UUID"), "text"),
    (("REAL", "FLOA", "DOUB", "NUMERIC", "DECIMAL"), "real"),
    (("DATE", "TIME"), "datetime"),
)
SEQUENCE_DEFAULT = re.compile(r"nextval\(", re.IGNORECASE)
DEFAULT_CAST = re.compile(r"::[\w ]+(\[\])?")
TRIGGER_TABLE = re.compile(r"\bON\s+[`\"]?(\w+)", re.IGNORECASE)
CREATED = re.compile(r"^\s*CREATE\s+(?:UNIQUE\s+)?(TRIGGER|INDEX)\b", re.IGNORECASE)
EXPRESSION = "(expression)"  # an index's column that is an expression (peewee reads None)
MODELS = "the models"  # what check_database compares the database with, in its lines


@dataclass(frozen=True)
class Difference:
    """One way the database is not in step: ``detail`` is the line a person acts on."""

    # table, column, type, null, default, primary key, index, check, foreign key, trigger, migration
    kind: str
    table: str | None
    detail: str
    # What db.autogen acts on, for kinds column (its name) and index ((columns, unique)).
    subject: object = dataclasses.field(default=None, compare=False, repr=False)
    # For tables, columns and indexes: True when only the models have it, False when only
    # the database has it.
    missing: bool | None = dataclasses.field(default=None, compare=False, repr=False)


def check_database(database, migrations_dir, models=ALL_MODELS):
    """Return the Differences between the database and the models and migrations."""
    engine = engine_for(database)
    statuses = Runner(database, migrations_dir, engine=engine).status()
    wanted = {model._meta.table_name: model_shape(database, model) for model in models}
    wanted_triggers, migration_indexes = expected_objects(engine, migrations_dir, statuses)
    beyond_models = migration_indexes.keys() | DERIVED_INDEXES
    differences = schema_differences(database, engine, wanted, MODELS, beyond_models)
    differences += index_differences(migration_indexes, database, wanted.keys())
    live_triggers = {
        name: table
        for name, table in engine.triggers(database).items()
        if name in wanted_triggers or not is_derived_trigger(name)
    }
    differences += trigger_differences(wanted_triggers, live_triggers)
    differences += [
        Difference("invalid index", table, invalid_index_line(index, table))
        for index, table in engine.invalid_indexes(database)
    ]
    differences += [
        Difference("migration", None, f"migration {m.name}: {MIGRATION_STATES[m.state]}")
        for m in statuses
        if m.state != APPLIED
    ]
    return differences


def schema_differences(database, engine, wanted, source, unnamed_indexes=frozenset()):
    """Return the Differences between the database's tables and ``wanted`` ({table:
    TableShape}, as ``source`` declares them: the models, or what migrations build);
    the indexes named in ``unnamed_indexes`` are left out (``source`` cannot say them)."""
    differences = []
    live = set(application_tables(database))
    for table in sorted(live | wanted.keys()):
        if table not in live:
            differences.append(Difference("table", table, f"table {table}: missing", None, True))
        elif table not in wanted:
            detail = f"table {table}: not in {source}"
            differences.append(Difference("table", table, detail, None, False))
        else:
            found = live_shape(database, engine, table, unnamed_indexes)
            differences += shape_differences(table, wanted[table], found, source)
    return differences


@dataclass(frozen=True)
class ColumnShape:
    """One column as check compares it: type family, nullability, server default."""

    family: str
    null: bool
    default: str | None  # SQL text, as declared or as the engine reports it
    # The models' literal Python default as SQL: a live default equal to it stands in.
    stand_in: str | None = None


@dataclass(frozen=True)
class TableShape:
    """One table as check compares it, read from a model or from a live database."""

    columns: dict  # name -> ColumnShape, in the table's order
    primary_key: list
    indexes: frozenset  # (columns, unique) pairs
    checked: frozenset  # the columns some CHECK constraint mentions
    # (column, parent table, parent column) -> ON DELETE rule (None: not compared)
    foreign_keys: dict


def model_shape(database, model):
    """Return the TableShape a model declares, in the words of ``database``'s engine."""
    field_types = database._field_types  # the engine's declared type per peewee field type
    columns = {
        field.column_name: ColumnShape(
            type_family(field_types.get(field.field_type, field.field_type)),
            field.null,
            _model_default(field),
            _python_literal(field),
        )
        for field in model._meta.sorted_fields
    }
    return TableShape(
        columns,
        [f.column_name for f in model._meta.get_primary_keys()],
        frozenset(model_indexes(model)),
        frozenset(f.column_name for f in model._meta.sorted_fields if getattr(f, "rules", None)),
        {
            (f.column_name, f.rel_model._meta.table_name, f.rel_field.column_name): f.on_delete
            for f in model._meta.sorted_fields
            if isinstance(f, peewee.ForeignKeyField)
        },
    )


def live_shape(database, engine, table, leave_out=frozenset()):
    """Return the TableShape of a table of the live database, read from its catalogue;
    the indexes named in ``leave_out`` are not part of it."""
    columns = {
        column.name: ColumnShape(type_family(column.data_type), column.null, _live_default(column))
        for column in database.get_columns(table)
    }
    return TableShape(
        columns,
        database.get_primary_keys(table),
        frozenset(
            (index_columns(i), i.unique)
            for i in table_indexes(database, table)
            if i.name not in leave_out
        ),
        frozenset(_columns_with_checks(database, engine, table, columns)),
        {
            (key.column, key.dest_table, key.dest_column): (key.on_delete or "NO ACTION").upper()
            for key in database.get_foreign_keys(table)
        },
    )


def shape_differences(table, wanted, found, source=None):
    """Return the Differences of one table: ``found`` in the database, ``wanted`` as
    ``source`` (the models by default) declares it."""
    source = source or MODELS
    differences = []

    def add(kind, detail, subject=None, missing=None):
        differences.append(Difference(kind, table, detail, subject, missing))

    for name in sorted(found.columns.keys() - wanted.columns.keys()):
        add("column", f"{table}.{name}: column not in {source}", name, missing=False)
    for name, want in wanted.columns.items():
        column = found.columns.get(name)
        if column is None:
            add("column", f"{table}.{name}: column missing", name, missing=True)
            continue
        if want.family != column.family:
            add(
                "type",
                f"{table}.{name}: {want.family} in {source}, {column.family} in the database",
            )
        if want.null != column.null:
            wanted_null, found_null = _nullability(want.null), _nullability(column.null)
            add("null", f"{table}.{name}: {wanted_null} in {source}, {found_null} in the database")
        if _comparable_default(want.default) != _comparable_default(column.default) and not (
            want.stand_in is not None
            and column.default is not None
            and _comparable_default(want.stand_in) == _comparable_default(column.default)
        ):
            wanted_default = _default_words(want.default)
            found_default = _default_words(column.default)
            add(
                "default",
                f"{table}.{name}: {wanted_default} in {source}, {found_default} in the database",
            )

    if found.primary_key != wanted.primary_key:
        wanted_key = ", ".join(wanted.primary_key)
        found_key = ", ".join(found.primary_key) or "none"
        add(
            "primary key",
            f"{table}: primary key ({wanted_key}) in {source}, ({found_key}) in the database",
        )

    for index in sorted(wanted.indexes - found.indexes):
        add("index", f"{_index_words(table, *index)} missing", index, missing=True)
    for index in sorted(found.indexes - wanted.indexes):
        add("index", f"{_index_words(table, *index)} not in {source}", index, missing=False)

    for name in wanted.columns:
        if name in wanted.checked and name in found.columns and name not in found.checked:
            add("check", f"{table}.{name}: CHECK constraint missing")

    wanted_keys, live_keys = wanted.foreign_keys, found.foreign_keys
    for key in sorted(wanted_keys.keys() - live_keys.keys()):
        add("foreign key", f"foreign key {_reference(table, key)} missing")
    for key in sorted(live_keys.keys() - wanted_keys.keys()):
        add("foreign key", f"foreign key {_reference(table, key)} not in {source}")
    for key in sorted(wanted_keys.keys() & live_keys.keys()):
        wanted_rule, live_rule = wanted_keys[key], live_keys[key]
        # A model without on_delete leaves the rule to the engine's default: nothing to compare.
        if wanted_rule is not None and wanted_rule.upper() != live_rule:
            rules = f"ON DELETE {wanted_rule.upper()} in {source}, {live_rule} in the database"
            add("foreign key", f"foreign key {_reference(table, key)}: {rules}")
    return differences


def type_family(declared):
    """Return the engine-neutral family of a declared SQL type (its text, upper-cased)."""
    text = declared.upper()
    for words, family in TYPE_FAMILIES:
        if any(word in text for word in words):
            return family
    return text.lower()


def _model_default(field):
    """The field's server default as SQL text (``pw.SQL("DEFAULT ...")``), or None."""
    for constraint in field.constraints or ():
        sql = getattr(constraint, "sql", None)
        if isinstance(sql, str) and sql.upper().startswith("DEFAULT "):
            return sql[len("DEFAULT ") :].strip()
    return None


def _python_literal(field):
    """The field's literal Python default (bool, number, text) as SQL, or None: a live
    default may stand in for it (db.new-migration --auto adds a NOT NULL column that
    way, to fill the rows there are)."""
    python = field.default
    return sql_literal(python) if isinstance(python, (bool, int, float, str)) else None


def sql_literal(value):
    """Return a Python literal (bool, number, text) as SQL."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _live_default(column):
    default = column.default
    if default is None or SEQUENCE_DEFAULT.match(str(default)):
        return None  # a PostgreSQL serial's nextval(...) is the key, not a default
    return str(default)


def _comparable_default(sql):
    """Each engine's rendering of one default, brought to one form: lower case, no casts
    (PostgreSQL's ``'public'::character varying``), no call parentheses (MariaDB's
    ``current_timestamp()``), booleans as 0/1 (MySQL keeps them as integers)."""
    if sql is None:
        return None
    text = DEFAULT_CAST.sub("", sql.strip()).lower()
    text = text.removesuffix("()").strip("()")
    return {"false": "0", "true": "1"}.get(text, text)


def _default_words(sql):
    return "no DEFAULT" if sql is None else f"DEFAULT {DEFAULT_CAST.sub('', sql)}"


def _nullability(null):
    return "nullable" if null else "NOT NULL"


def model_indexes(model):
    """Return the model's indexes as (columns, unique) pairs."""
    return [
        (tuple(field.column_name for field in index._expressions), bool(index._unique))
        for index in model._meta.fields_to_index()
    ]


def table_indexes(database, table):
    """Return the live table's indexes (peewee's IndexMetadata), less its primary key's."""
    primary_key = database.get_primary_keys(table)
    return [
        index
        for index in database.get_indexes(table)
        if not (index.unique and list(index.columns) == primary_key)
    ]


def index_columns(index):
    """Return a live index's columns as a tuple, an expression as EXPRESSION (peewee
    reads None for it on SQLite), so that indexes can be compared and sorted."""
    return tuple(EXPRESSION if column is None else column for column in index.columns)


def index_differences(wanted, database, tables):
    """Return a Difference per index of ``wanted`` ({index: table}, made by the applied
    migrations) that the database lacks; tables that are missing altogether are left to
    schema_differences."""
    live = set(application_tables(database))
    present = {
        index.name
        for table in set(wanted.values()) & live & set(tables)
        for index in database.get_indexes(table)
    }
    return [
        Difference("index", table, f"index {name} on {table}: missing", None, True)
        for name, table in sorted(wanted.items())
        if table in live and name not in present
    ]


def _index_words(table, columns, unique):
    return f"{'unique index' if unique else 'index'} {table}({', '.join(columns)})"


def _reference(table, key):
    column, parent, parent_column = key
    return f"{table}.{column} -> {parent}.{parent_column}"


def expected_objects(engine, migrations_dir, statuses):
    """Return ({trigger: table}, {index: table}) that the applied migrations create on
    this engine.

    A migration declares them as migrations 003 and 006 do: a ``DIALECTS`` dict of
    functions returning (name, CREATE, DROP) triples per engine; each CREATE TRIGGER and
    CREATE INDEX counts. Reading them from the files is exact for every engine and needs
    no reference database; PostgreSQL's trigger functions (named ``name()``) and other
    statements are left out.
    """
    dialect = engine.key
    recorded = {m.version for m in statuses if m.state in (APPLIED, CHANGED, FAILED)}
    created = {"TRIGGER": {}, "INDEX": {}}
    for migration in discover(migrations_dir):
        if migration.kind != "py" or migration.version not in recorded:
            continue
        dialects = getattr(load_module(migration), "DIALECTS", None)
        if not isinstance(dialects, dict) or dialect not in dialects:
            continue
        for name, create, _ in dialects[dialect]():
            kind, table = CREATED.match(create), TRIGGER_TABLE.search(create)
            if kind and table and not name.endswith("()"):
                created[kind[1].upper()][name] = table[1]
    return created["TRIGGER"], created["INDEX"]


def _columns_with_checks(database, engine, table, columns):
    """Return the columns that some CHECK constraint of the table mentions."""
    expressions = engine.check_constraints(database, table)
    return {
        name
        for name in columns
        if any(re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", e) for e in expressions)
    }


def trigger_differences(wanted, live, source="the migrations"):
    """Return the Differences between the triggers ``wanted`` and ``live`` ({trigger: table})."""
    differences = [
        Difference("trigger", wanted[name], f"trigger {name} on {wanted[name]}: missing")
        for name in sorted(wanted.keys() - live.keys())
    ]
    differences += [
        Difference("trigger", live[name], f"trigger {name} on {live[name]}: not in {source}")
        for name in sorted(live.keys() - wanted.keys())
    ]
    return differences
