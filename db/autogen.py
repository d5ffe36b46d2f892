"""Write the migration that brings a migrated database to the models (db.new-migration --auto).

    text = migration_text(database, "migrations", "catch up")   # None: nothing to do

The differences are db.check's (``check_database``); those written are:

- a column in the models, missing in the database: ``add_column`` in ``up`` (its field
  written as literal code, e.g. ``pw.IntegerField(constraints=[pw.SQL("DEFAULT 0")])``),
  ``drop_column`` in ``down``;
- a column in the database, not in the models: ``drop_column`` in ``up``, ``add_column``
  back in ``down`` with a field of the live type's family;
- an index missing or not in the models: ``add_index`` / ``drop_index``, undone in ``down``.

Anything else (a missing table, a type, nullability, a foreign key, a trigger, a pending
migration) is refused with one line: write that migration by hand. A NOT NULL column
is added with a server default and ``allow_not_null`` (no table rebuild on SQLite, which
would lose the table's triggers), so it needs a literal default in the model.
The file never imports db.models: migrations are frozen history.
"""

import json

import peewee as pw
from playhouse.migrate import make_index_name

from db.check import check_database, type_family
from db.errors import CannotGenerate, NotMigrated
from db.models import ALL_MODELS

GENERATED = ("column", "index")
# The family of a live column's type (db.check.type_family) -> the field that adds it back.
LIVE_FIELDS = {
    "integer": "IntegerField",
    "real": "DoubleField",
    "datetime": "DateTimeField",
    "boolean": "BooleanField",
}

TEMPLATE = '''"""{title}

Written by invoke db.new-migration --auto from what db.check found; the fields are
literal copies of the models' as they stood (migrations never import db.models).
"""

import peewee as pw{noqa}


def up(migrator, db):
    migrator.migrate(
{up}
    )


def down(migrator, db):
    migrator.migrate(
{down}
    )
'''


def migration_text(database, migrations_dir, title, models=ALL_MODELS):
    """Return the source of the migration from the database to the models, or None when
    they are in step; raise CannotGenerate (or NotMigrated) for what it cannot write."""
    differences = check_database(database, migrations_dir, models)
    behind = [d.detail for d in differences if d.kind == "migration"]
    if behind:
        raise NotMigrated(f"{behind[0]}: run invoke db.migrate before db.new-migration --auto")
    for difference in differences:
        if difference.kind == "table" and difference.detail.endswith("missing"):
            raise CannotGenerate(
                f"table {difference.table} is missing: write its migration by hand"
            )
        if difference.kind not in GENERATED:
            raise CannotGenerate(
                f"{difference.detail}: --auto writes only added or dropped columns and "
                "indexes; write this migration by hand"
            )
    if not differences:
        return None
    declared = {model._meta.table_name: model for model in models}
    up, down = _operations(database, declared, differences)
    up, down = _lines(up), _lines(reversed(down))
    noqa = "" if "pw." in up + down else "  # noqa: F401  (no field to write this time)"
    return TEMPLATE.format(title=title, up=up, down=down, noqa=noqa)


def _operations(database, declared, differences):
    """Return (up, down) as lists of operation code; down in the order up runs."""
    drop_indexes, drop_columns, add_columns, add_indexes = [], [], [], []
    for difference in differences:
        table, missing = difference.table, difference.detail.endswith("missing")
        if difference.kind == "column":
            name = difference.subject
            if missing:
                field = declared[table]._meta.columns[name]
                add_columns.append(_add_column(table, name, _model_field_code(table, field)))
            else:
                drop_columns.append(_drop_column(database, table, name))
        else:
            columns, unique = difference.subject
            if missing:
                add_indexes.append(_add_index(table, columns, unique))
            else:
                drop_indexes.append(_drop_index(database, table, columns, unique))
    steps = drop_indexes + drop_columns + add_columns + add_indexes  # drop before add
    return [up for up, _ in steps], [down for _, down in steps]


def _lines(operations):
    return "\n".join(f"        {operation}," for operation in operations)


def _add_index(table, columns, unique, name=None):
    name = name or make_index_name(table, columns)  # the name the models give it
    return (
        f"migrator.add_index({_code(table)}, {_code(tuple(columns))}, {unique}, "
        f"name={_code(name)})",
        f"migrator.drop_index({_code(table)}, {_code(name)})",
    )


def _drop_index(database, table, columns, unique):
    name = next(
        index.name
        for index in database.get_indexes(table)
        if tuple(index.columns) == tuple(columns) and bool(index.unique) == unique
    )
    add, drop = _add_index(table, columns, unique, name)
    return drop, add


def _add_column(table, name, code):
    field, not_null = code
    allow = ", allow_not_null=True" if not_null else ""
    return (
        f"migrator.add_column({_code(table)}, {_code(name)}, {field}{allow})",
        f"migrator.drop_column({_code(table)}, {_code(name)})",
    )


def _drop_column(database, table, name):
    column = next(c for c in database.get_columns(table) if c.name == name)
    add, drop = _add_column(table, name, _live_field_code(table, column))
    return drop, add


def _model_field_code(table, field):
    """Return (the field's constructor as code, whether it is NOT NULL)."""
    where = f"{table}.{field.column_name}"
    if isinstance(field, pw.ForeignKeyField):
        raise CannotGenerate(f"{where} is a foreign key: write its migration by hand")
    kind = next(k for k in type(field).__mro__ if getattr(pw, k.__name__, None) is k)
    args = []
    if isinstance(field, pw.CharField):
        args.append(f"max_length={field.max_length}")
    if isinstance(field, pw.DecimalField):
        args += [
            f"max_digits={_code(field.max_digits)}",
            f"decimal_places={_code(field.decimal_places)}",
        ]
    if field.null:
        args.append("null=True")
    literal = field.default if _is_literal(field.default) else None
    if literal is not None:
        args.append(f"default={_code(literal)}")
    constraints, has_server_default = [], False
    for constraint in field.constraints or ():
        if isinstance(constraint, pw.SQL) and not constraint.params:
            constraints.append(f"pw.SQL({_code(constraint.sql)})")
            has_server_default |= constraint.sql.upper().startswith("DEFAULT")
        elif getattr(constraint, "rule", None) is not None:  # a rule's CHECK (db.models)
            constraints.append(_check_code(constraint.rule.sql(field.column_name)))
        else:
            raise CannotGenerate(f"{where}: a constraint --auto cannot copy; write it by hand")
    if not field.null and not has_server_default:
        if literal is None:
            raise CannotGenerate(
                f"{where} is NOT NULL without a default: give it a default in the model "
                "(e.g. default=0) or null=True, then run db.new-migration --auto again"
            )
        constraints.insert(0, f"pw.SQL({_code('DEFAULT ' + _sql_literal(literal))})")
    if constraints:
        args.append(f"constraints=[{', '.join(constraints)}]")
    return f"pw.{kind.__name__}({', '.join(args)})", not field.null


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
        args.append(f"constraints=[pw.SQL({_code('DEFAULT ' + str(column.default))})]")
    elif not column.null:
        raise CannotGenerate(
            f"{table}.{column.name} is NOT NULL without a default in the database: --auto "
            "cannot write the down that adds it back; write this migration by hand"
        )
    return f"pw.{kind}({', '.join(args)})", not column.null


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


def _sql_literal(value):
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)
