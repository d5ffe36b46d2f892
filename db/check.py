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
  ``expected_triggers``), against the engine's catalogue;
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
from db.runner import APPLIED, CHANGED, FAILED, MISSING, PENDING, Runner

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
    differences = []
    live = set(application_tables(database))
    declared = {model._meta.table_name: model for model in models}
    for table in sorted(live | declared.keys()):
        if table not in live:
            differences.append(Difference("table", table, f"table {table}: missing", None, True))
        elif table not in declared:
            detail = f"table {table}: not in the models"
            differences.append(Difference("table", table, detail, None, False))
        else:
            differences += _table_differences(database, engine, declared[table])
    differences += _trigger_differences(database, engine, migrations_dir, statuses)
    differences += [
        Difference("migration", None, f"migration {m.name}: {MIGRATION_STATES[m.state]}")
        for m in statuses
        if m.state != APPLIED
    ]
    return differences


def type_family(declared):
    """Return the engine-neutral family of a declared SQL type (its text, upper-cased)."""
    text = declared.upper()
    for words, family in TYPE_FAMILIES:
        if any(word in text for word in words):
            return family
    return text.lower()


def _table_differences(database, engine, model):
    table = model._meta.table_name
    differences = []

    def add(kind, detail, subject=None, missing=None):
        differences.append(Difference(kind, table, detail, subject, missing))

    fields = {field.column_name: field for field in model._meta.sorted_fields}
    columns = {column.name: column for column in database.get_columns(table)}
    field_types = database._field_types  # the engine's declared type per peewee field type
    for name in sorted(columns.keys() - fields.keys()):
        add("column", f"{table}.{name}: column not in the models", name, missing=False)
    for name, field in fields.items():
        column = columns.get(name)
        if column is None:
            add("column", f"{table}.{name}: column missing", name, missing=True)
            continue
        wanted = type_family(field_types.get(field.field_type, field.field_type))
        found = type_family(column.data_type)
        if wanted != found:
            add("type", f"{table}.{name}: {wanted} in the models, {found} in the database")
        if field.null != column.null:
            wanted, found = _nullability(field.null), _nullability(column.null)
            add("null", f"{table}.{name}: {wanted} in the models, {found} in the database")
        wanted, found = _model_default(field), _live_default(column)
        if _comparable_default(wanted) != _comparable_default(found) and not _fills_in(
            field, found
        ):
            wanted, found = _default_words(wanted), _default_words(found)
            add("default", f"{table}.{name}: {wanted} in the models, {found} in the database")

    primary_key = database.get_primary_keys(table)
    wanted_key = [f.column_name for f in model._meta.get_primary_keys()]
    if primary_key != wanted_key:
        wanted, found = ", ".join(wanted_key), ", ".join(primary_key) or "none"
        add(
            "primary key",
            f"{table}: primary key ({wanted}) in the models, ({found}) in the database",
        )

    wanted_indexes = set(model_indexes(model))
    live_indexes = {
        (tuple(index.columns), index.unique) for index in table_indexes(database, table)
    }
    for index in sorted(wanted_indexes - live_indexes):
        add("index", f"{_index_words(table, *index)} missing", index, missing=True)
    for index in sorted(live_indexes - wanted_indexes):
        add("index", f"{_index_words(table, *index)} not in the models", index, missing=False)

    checked_columns = _columns_with_checks(database, engine, table, columns)
    for name, field in fields.items():
        if getattr(field, "rules", None) and name in columns and name not in checked_columns:
            add("check", f"{table}.{name}: CHECK constraint missing")

    wanted_keys = {
        (f.column_name, f.rel_model._meta.table_name, f.rel_field.column_name): f.on_delete
        for f in model._meta.sorted_fields
        if isinstance(f, peewee.ForeignKeyField)
    }
    live_keys = {
        (key.column, key.dest_table, key.dest_column): key.on_delete
        for key in database.get_foreign_keys(table)
    }
    for key in sorted(wanted_keys.keys() - live_keys.keys()):
        add("foreign key", f"foreign key {_reference(table, key)} missing")
    for key in sorted(live_keys.keys() - wanted_keys.keys()):
        add("foreign key", f"foreign key {_reference(table, key)} not in the models")
    for key in sorted(wanted_keys.keys() & live_keys.keys()):
        wanted_rule, live_rule = wanted_keys[key], (live_keys[key] or "NO ACTION").upper()
        # A model without on_delete leaves the rule to the engine's default: nothing to compare.
        if wanted_rule is not None and wanted_rule.upper() != live_rule:
            rules = f"ON DELETE {wanted_rule.upper()} in the models, {live_rule} in the database"
            add("foreign key", f"foreign key {_reference(table, key)}: {rules}")
    return differences


def _model_default(field):
    """The field's server default as SQL text (``pw.SQL("DEFAULT ...")``), or None."""
    for constraint in field.constraints or ():
        sql = getattr(constraint, "sql", None)
        if isinstance(sql, str) and sql.upper().startswith("DEFAULT "):
            return sql[len("DEFAULT ") :].strip()
    return None


def _fills_in(field, found):
    """A live default may stand in for a literal Python default the models give (db.new-
    migration --auto adds a NOT NULL column that way, to fill the rows there are)."""
    python = field.default
    literal = isinstance(python, (bool, int, float, str)) and found is not None
    return literal and _comparable_default(sql_literal(python)) == _comparable_default(found)


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


def _index_words(table, columns, unique):
    return f"{'unique index' if unique else 'index'} {table}({', '.join(columns)})"


def _reference(table, key):
    column, parent, parent_column = key
    return f"{table}.{column} -> {parent}.{parent_column}"


def expected_triggers(engine, migrations_dir, statuses):
    """Return {trigger: table} that the applied migrations create on this engine.

    A migration that creates triggers declares them as migration 003 does: a
    ``DIALECTS`` dict of functions returning (name, CREATE, DROP) triples per engine.
    Reading them from the files is exact for every engine and needs no reference
    database; PostgreSQL's trigger functions (named ``name()``) are left out.
    """
    dialect = engine.key
    recorded = {m.version for m in statuses if m.state in (APPLIED, CHANGED, FAILED)}
    expected = {}
    for migration in discover(migrations_dir):
        if migration.kind != "py" or migration.version not in recorded:
            continue
        dialects = getattr(load_module(migration), "DIALECTS", None)
        if not isinstance(dialects, dict) or dialect not in dialects:
            continue
        for name, create, _ in dialects[dialect]():
            match = TRIGGER_TABLE.search(create)
            if not name.endswith("()") and match:
                expected[name] = match[1]
    return expected


def _columns_with_checks(database, engine, table, columns):
    """Return the columns that some CHECK constraint of the table mentions."""
    expressions = engine.check_constraints(database, table)
    return {
        name
        for name in columns
        if any(re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", e) for e in expressions)
    }


def _trigger_differences(database, engine, migrations_dir, statuses):
    wanted = expected_triggers(engine, migrations_dir, statuses)
    live = engine.triggers(database)
    differences = [
        Difference("trigger", wanted[name], f"trigger {name} on {wanted[name]}: missing")
        for name in sorted(wanted.keys() - live.keys())
    ]
    differences += [
        Difference("trigger", live[name], f"trigger {name} on {live[name]}: not in the migrations")
        for name in sorted(live.keys() - wanted.keys())
    ]
    return differences
