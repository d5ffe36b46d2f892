"""Write the migration that brings a migrated database to the models (db.new-migration --auto).

    text = migration_text(database, "migrations", "catch up")   # None: nothing to do

The differences are db.check's (``check_database``); those written are:

- a table in the models, missing in the database: ``up`` creates it from a frozen copy of
  its model written into the file (columns, keys, defaults, CHECKs), then its indexes;
  ``down`` drops it. A table it points at gets a stub class holding only the key;
- a table in the database, not in the models: ``up`` drops it; ``down`` creates it again
  from what peewee's reflection reads of it now (columns, keys, defaults, indexes; not its
  CHECKs or triggers, and not its rows);
- a column in the models, missing in the database: ``add_column`` in ``up`` (its field
  written as literal code, e.g. ``pw.IntegerField(constraints=[pw.SQL("DEFAULT 0")])``),
  ``drop_column`` in ``down``;
- a column in the database, not in the models: ``drop_column`` in ``up``, ``add_column``
  back in ``down`` with a field of the live type's family;
- an index missing or not in the models: ``add_index`` / ``drop_index``, undone in ``down``.

``up`` runs removals (indexes, columns, tables), then creates tables, then additions
(columns, indexes); ``down`` undoes them in the mirror order. Anything else (a type,
nullability, a default, a foreign key, a trigger, a pending migration) is refused with one
line: write that migration by hand. A NOT NULL column is added with a server default and
``allow_not_null`` (no table rebuild on SQLite, which would lose the table's triggers), so
it needs a literal default in the model. The file never imports db.models: migrations are
frozen history.
"""

import json
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import peewee as pw
from playhouse.migrate import make_index_name
from playhouse.reflection import generate_models

from db.check import check_database, model_indexes, sql_literal, table_indexes, type_family
from db.codegen import INDENT, Call
from db.engines import engine_for
from db.errors import CannotGenerate, NotMigrated
from db.models import ALL_MODELS

GENERATED = ("table", "column", "index")
# The family of a live column's type (db.check.type_family) -> the field that adds it back.
LIVE_FIELDS = {
    "integer": "IntegerField",
    "real": "DoubleField",
    "datetime": "DateTimeField",
    "boolean": "BooleanField",
}
CREATED, RECREATED = "_created_tables", "_recreated_tables"

TEMPLATE = '''"""{title}

Written by invoke db.new-migration --auto from what db.check found; the fields are
literal copies of the models' as they stood (migrations never import db.models).
"""

import peewee as pw{noqa}


def up(migrator, db):
{up}


def down(migrator, db):
{down}
'''

TABLES_FUNCTION = '''

def {name}(db):
    """{doc}"""

    class Frozen(pw.Model):
        class Meta:
            database = db
{classes}
    return [{created}]
'''


@dataclass
class Direction:
    """What one of up/down does, in the order it runs."""

    removals: list = dataclass_field(default_factory=list)  # operation code, for migrator.migrate
    create: str | None = None  # the function returning the models to create
    additions: list = dataclass_field(default_factory=list)

    def body(self):
        lines = []
        if self.removals:
            lines += Call("migrator.migrate(", self.removals).lines(INDENT)
        if self.create:
            lines.append(f"    db.create_tables({self.create}(db), safe=False)")
        if self.additions:
            lines += Call("migrator.migrate(", self.additions).lines(INDENT)
        return "\n".join(lines) or "    pass"


def migration_text(database, migrations_dir, title, models=ALL_MODELS):
    """Return the source of the migration from the database to the models, or None when
    they are in step; raise CannotGenerate (or NotMigrated) for what it cannot write."""
    differences = check_database(database, migrations_dir, models)
    behind = [d.detail for d in differences if d.kind == "migration"]
    if behind:
        raise NotMigrated(f"{behind[0]}: run invoke db.migrate before db.new-migration --auto")
    for difference in differences:
        if difference.kind not in GENERATED:
            raise CannotGenerate(
                f"{difference.detail}: --auto writes only added or dropped tables, columns "
                "and indexes; write this migration by hand"
            )
    if not differences:
        return None
    declared = {model._meta.table_name: model for model in models}
    up, down, functions = _plan(database, declared, differences)
    up_code, down_code, tables_code = up.body(), down.body(), "".join(functions)
    uses_pw = "pw." in up_code + down_code + tables_code
    noqa = "" if uses_pw else "  # noqa: F401  (no field to write this time)"
    return TEMPLATE.format(title=title, up=up_code, down=down_code, noqa=noqa) + tables_code


def _plan(database, declared, differences):
    """Return the up and down Directions and the table functions the file needs."""
    added = [declared[d.table] for d in differences if d.kind == "table" and d.missing]
    dropped = [d.table for d in differences if d.kind == "table" and d.missing is False]
    removals, additions = _column_and_index_steps(database, declared, differences)
    up = Direction(removals=[u for u, _ in removals], additions=[u for u, _ in additions])
    down = Direction(
        removals=[d for _, d in reversed(additions)],
        additions=[d for _, d in reversed(removals)],
    )
    functions = []
    if dropped:
        reflected = _reflected_models(database, dropped)
        up.removals += [_drop_table(model) for model in reversed(pw.sort_models(reflected))]
        down.create = RECREATED
        functions.append(_tables_function(RECREATED, reflected))
        down.additions += [
            _add_index(index.table, tuple(index.columns), index.unique, index.name)[0]
            for model in reflected
            for index in _recreated_indexes(database, model)
        ]
    if added:
        up.create = CREATED
        functions.append(_tables_function(CREATED, added))
        # Their indexes go with them in down (MySQL refuses to drop a foreign key's index).
        up.additions += [
            _add_index(model._meta.table_name, *index)[0]
            for model in added
            for index in model_indexes(model)
        ]
        down.removals += [_drop_table(model) for model in reversed(pw.sort_models(added))]
    return up, down, functions


def _column_and_index_steps(database, declared, differences):
    """Return (removals, additions) as (up, down) code pairs in the order up runs them:
    indexes dropped before columns, columns added before indexes."""
    drop_indexes, drop_columns, add_columns, add_indexes = [], [], [], []
    for difference in differences:
        table = difference.table
        if difference.kind == "column":
            name = difference.subject
            if difference.missing:
                field = declared[table]._meta.columns[name]
                add_columns.append(_add_column(table, name, _new_column_code(table, field)))
            else:
                drop_columns.append(_drop_column(database, table, name))
        elif difference.kind == "index":
            columns, unique = difference.subject
            if difference.missing:
                add_indexes.append(_add_index(table, columns, unique))
            else:
                drop_indexes.append(_drop_index(database, table, columns, unique))
    return drop_indexes + drop_columns, add_columns + add_indexes


# --- Tables ---------------------------------------------------------------------------------


def _drop_table(model):
    return Call("migrator.drop_table(", [_code(model._meta.table_name)])


def _reflected_models(database, tables):
    """Return peewee's reflection of the live tables, as model classes."""
    models = generate_models(database, table_names=None)
    return [models[table] for table in tables]


def _recreated_indexes(database, model):
    """The live indexes to add back after the table is created again; on MySQL, not the
    index a foreign key made for itself (creating the key makes it again)."""
    table = model._meta.table_name
    keys = {(key.column,) for key in database.get_foreign_keys(table)}
    made_by_keys = engine_for(database).foreign_keys_make_indexes
    return [
        index
        for index in table_indexes(database, table)
        if not (made_by_keys and tuple(index.columns) in keys and not index.unique)
    ]


def _tables_function(name, models):
    """Return the source of ``name(db)``: frozen models of the tables, stubs of the tables
    they point at, the created ones returned."""
    created = {model._meta.table_name for model in models}
    class_names = {}
    classes = []
    for model in pw.sort_models(_with_targets(models)):
        table = model._meta.table_name
        class_names[model] = _class_name(table, class_names.values())
        stub = table not in created
        classes.append(_class_code(model, class_names, stub))
    doc = (
        "The tables up creates, as the models declared them."
        if name == CREATED
        else "The tables up drops, as peewee's reflection read them when this was written."
    )
    returned = ", ".join(class_names[m] for m in pw.sort_models(models))
    return TABLES_FUNCTION.format(name=name, doc=doc, classes="".join(classes), created=returned)


def _with_targets(models):
    """The models and the models their foreign keys point at."""
    found = list(models)
    for model in models:
        for field in model._meta.refs:
            if field.rel_model not in found:
                found.append(field.rel_model)
    return found


def _class_name(table, taken):
    if not table.isidentifier():
        raise CannotGenerate(
            f"table {table}: its name is not a Python identifier; write it by hand"
        )
    name = "".join(part[:1].upper() + part[1:] for part in table.split("_") if part) or "Table"
    while name in taken:
        name += "_"
    return name


def _class_code(model, class_names, stub):
    table = model._meta.table_name
    fields = model._meta.sorted_fields
    if stub:  # only what the foreign keys need: the key they point at
        fields = [f for f in fields if f.primary_key]
    lines = [f"\n    class {class_names[model]}(Frozen):"]
    if stub:
        lines.append("        # Not created here: only its key, which a foreign key points at.")
    for field in fields:
        code = _table_field_code(table, field, class_names, stub)
        lines += code.lines(2 * INDENT, prefix=f"{field.name} = ")
    lines += ["", "        class Meta:", f"            table_name = {_code(table)}"]
    primary_key = model._meta.primary_key
    if isinstance(primary_key, pw.CompositeKey):
        names = ", ".join(_code(name) for name in primary_key.field_names)
        lines.append(f"            primary_key = pw.CompositeKey({names})")
    elif primary_key is False and not stub:
        lines.append("            primary_key = False")
    return "\n".join(lines) + "\n"


def _table_field_code(table, field, class_names, stub):
    """A field of a created table as code: indexes come after, as add_index calls."""
    where = f"{table}.{field.column_name}"
    composite = isinstance(field.model._meta.primary_key, pw.CompositeKey)
    args = []
    if isinstance(field, pw.ForeignKeyField):
        if isinstance(field, pw.DeferredForeignKey):
            raise CannotGenerate(f"{where}: a foreign key in a cycle; write it by hand")
        target = field.rel_model
        args.append('"self"' if target is field.model else class_names[target])
        if field.rel_field is not target._meta.primary_key:
            args.append(f"field={_code(field.rel_field.name)}")
    if field.column_name != field.name:
        args.append(f"column_name={_code(field.column_name)}")
    kind = _field_kind(field)
    if field.primary_key and not composite and kind not in ("AutoField", "BigAutoField"):
        args.append("primary_key=True")
    if isinstance(field, pw.ForeignKeyField):
        if field.on_delete:
            args.append(f"on_delete={_code(field.on_delete)}")
        args.append("index=False")
    if stub:
        return Call(f"pw.{kind}(", _size_arguments(field) + args)
    arguments, _ = _field_arguments(where, field)
    if field.primary_key:  # a key is never null, whatever reflection read
        arguments = [a for a in arguments if a != "null=True"]
    return Call(f"pw.{kind}(", args + arguments)


def _field_kind(field):
    """The name of peewee's own field class the field is (reflection's may be subclasses)."""
    return next(k for k in type(field).__mro__ if getattr(pw, k.__name__, None) is k).__name__


# --- Columns --------------------------------------------------------------------------------


def _add_column(table, name, code):
    field, not_null = code
    allow = ["allow_not_null=True"] if not_null else []
    return (
        Call("migrator.add_column(", [_code(table), _code(name), field, *allow]),
        Call("migrator.drop_column(", [_code(table), _code(name)]),
    )


def _drop_column(database, table, name):
    column = next(c for c in database.get_columns(table) if c.name == name)
    add, drop = _add_column(table, name, _live_field_code(table, column))
    return drop, add


def _new_column_code(table, field):
    """Return (the field's constructor as code, whether it is NOT NULL) for add_column."""
    where = f"{table}.{field.column_name}"
    if isinstance(field, pw.ForeignKeyField):
        raise CannotGenerate(f"{where} is a foreign key: write its migration by hand")
    arguments, has_server_default = _field_arguments(where, field)
    if not field.null and not has_server_default:
        if not _is_literal(field.default):
            raise CannotGenerate(
                f"{where} is NOT NULL without a default: give it a default in the model "
                "(e.g. default=0) or null=True, then run db.new-migration --auto again"
            )
        # add_column fills the rows there are: the database needs the default too.
        default = f"pw.SQL({_code('DEFAULT ' + sql_literal(field.default))})"
        if arguments and isinstance(arguments[-1], Call):
            arguments[-1].arguments.insert(0, default)
        else:
            arguments.append(Call("constraints=[", [default], "]"))
    return Call(f"pw.{_field_kind(field)}(", arguments), not field.null


def _size_arguments(field):
    if isinstance(field, pw.CharField):
        return [f"max_length={field.max_length}"]
    if isinstance(field, pw.DecimalField):
        return [
            f"max_digits={_code(field.max_digits)}",
            f"decimal_places={_code(field.decimal_places)}",
        ]
    return []


def _field_arguments(where, field):
    """Return (the field's arguments as code, whether it has a server default): its size,
    nullability, literal default and constraints (server defaults, rules' CHECKs)."""
    args = _size_arguments(field)
    if field.null:
        args.append("null=True")
    if _is_literal(field.default):
        args.append(f"default={_code(field.default)}")
    constraints, has_server_default = [], False
    for constraint in field.constraints or ():
        if isinstance(constraint, pw.SQL) and not constraint.params:
            constraints.append(f"pw.SQL({_code(constraint.sql)})")
            has_server_default |= constraint.sql.upper().startswith("DEFAULT")
        elif getattr(constraint, "rule", None) is not None:  # a rule's CHECK (db.models)
            constraints.append(_check_code(constraint.rule.sql(field.column_name)))
        else:
            raise CannotGenerate(f"{where}: a constraint --auto cannot copy; write it by hand")
    if constraints:
        args.append(Call("constraints=[", constraints, "]"))
    return args, has_server_default


def _live_field_code(table, column):
    """Return (a field of the live column's type family as code, whether it is NOT NULL)."""
    declared = column.data_type.upper()
    if "BIGINT" in declared:
        kind = "BigIntegerField"
    elif "CHAR" in declared:
        kind = "CharField"
    else:
        kind = LIVE_FIELDS.get(type_family(declared), "TextField")
    args = ["null=True"] if column.null else []
    if column.default is not None:
        default = f"pw.SQL({_code('DEFAULT ' + str(column.default))})"
        args.append(Call("constraints=[", [default], "]"))
    elif not column.null:
        raise CannotGenerate(
            f"{table}.{column.name} is NOT NULL without a default in the database: --auto "
            "cannot write the down that adds it back; write this migration by hand"
        )
    return Call(f"pw.{kind}(", args), not column.null


# --- Indexes --------------------------------------------------------------------------------


def _add_index(table, columns, unique, name=None):
    name = name or make_index_name(table, columns)  # the name the models give it
    return (
        Call(
            "migrator.add_index(",
            [_code(table), _code(tuple(columns)), str(unique), f"name={_code(name)}"],
        ),
        Call("migrator.drop_index(", [_code(table), _code(name)]),
    )


def _drop_index(database, table, columns, unique):
    name = next(
        index.name
        for index in database.get_indexes(table)
        if tuple(index.columns) == tuple(columns) and bool(index.unique) == unique
    )
    add, drop = _add_index(table, columns, unique, name)
    return drop, add


# --- Literals -------------------------------------------------------------------------------


def _check_code(expression):
    if "%" not in expression:
        return f"pw.Check({_code(expression)})"
    # psycopg and PyMySQL read "%" as a placeholder even in DDL.
    escaped = expression.replace("%", "%%")
    return f'pw.Check({_code(escaped)} if db.param == "%s" else {_code(expression)})'


def _code(value):
    """Return a literal as ruff formats it (double quotes), so the file passes lint."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple):
        return f"({', '.join(map(_code, value))}{',' if len(value) == 1 else ''})"
    return repr(value)


def _is_literal(value):
    return isinstance(value, (bool, int, float, str))
