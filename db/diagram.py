"""An entity-relationship diagram of the live schema, as Mermaid or Graphviz text.

    schema = read_schema(database)          # tables, columns, keys, as the database has them
    print(mermaid(schema))                  # erDiagram text: Markdown renders it on GitHub
    svg = render_svg(graphviz(schema))      # needs Graphviz's dot

Read by peewee's introspection (``get_tables``, ``get_columns``, ``get_foreign_keys``), so
the diagram shows what the database holds, whatever the models say; the toolkit's own
bookkeeping tables are left out.
"""

import re
import shutil
import subprocess
from typing import NamedTuple

from db.errors import ConfigError, DbError
from db.history import application_tables

GRAPHVIZ_PACKAGE = "Graphviz (Debian/Ubuntu: apt install graphviz; macOS: brew install graphviz)"


class Column(NamedTuple):
    name: str
    data_type: str
    primary_key: bool
    null: bool


class Relation(NamedTuple):
    """``table.column`` refers to ``parent.parent_column``."""

    table: str
    column: str
    parent: str
    parent_column: str
    null: bool  # whether the reference may be empty


class Schema(NamedTuple):
    tables: dict  # {table: [Column]}, in name order
    relations: list  # [Relation], sorted


def read_schema(database):
    """Return the Schema of a connected database (bookkeeping tables left out)."""
    names = application_tables(database)
    tables = {
        table: [
            Column(c.name, _type_word(c.data_type), c.primary_key, c.null)
            for c in database.get_columns(table)
        ]
        for table in names
    }
    relations = sorted(
        Relation(table, key.column, key.dest_table, key.dest_column, _nullable(tables, table, key))
        for table in names
        for key in database.get_foreign_keys(table)
        if key.dest_table in tables
    )
    return Schema(tables, relations)


def mermaid(schema):
    """Return the schema as a Mermaid ``erDiagram``."""
    lines = ["erDiagram"]
    for relation in schema.relations:
        # parent ||--o{ child: one parent, zero or more children (o| when optional)
        parent_side = "|o" if relation.null else "||"
        lines.append(
            f'    {relation.parent} {parent_side}--o{{ {relation.table} : "{relation.column}"'
        )
    for table, columns in schema.tables.items():
        lines.append(f"    {table} {{")
        for column in columns:
            keys = _key_marks(schema, table, column)
            lines.append(f"        {column.data_type} {column.name}{keys}")
        lines.append("    }")
    return "\n".join(lines) + "\n"


def graphviz(schema):
    """Return the schema as Graphviz DOT text: one record per table, one edge per key."""
    lines = [
        "digraph clonegallery {",
        "    rankdir=LR;",
        '    node [shape=plaintext, fontname="Helvetica", fontsize=10];',
        '    edge [arrowhead=crow, arrowtail=tee, dir=both, color="#555555"];',
    ]
    for table, columns in schema.tables.items():
        rows = "".join(
            f'<tr><td port="{c.name}" align="left">{c.name}{_key_marks(schema, table, c)}'
            f'</td><td align="left"><font color="#777777">{c.data_type}</font></td></tr>'
            for c in columns
        )
        lines.append(
            f'    "{table}" [label=<<table border="1" cellborder="0" cellspacing="0">'
            f'<tr><td colspan="2" bgcolor="#dde6f0"><b>{table}</b></td></tr>{rows}</table>>];'
        )
    for relation in schema.relations:
        lines.append(
            f'    "{relation.parent}":"{relation.parent_column}" -> '
            f'"{relation.table}":"{relation.column}";'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(dot_text):
    """Return the SVG that Graphviz's ``dot`` draws of DOT text."""
    dot = shutil.which("dot")
    if dot is None:
        raise ConfigError(f"an SVG diagram needs Graphviz's dot: install {GRAPHVIZ_PACKAGE}")
    result = subprocess.run(
        [dot, "-Tsvg"], input=dot_text.encode(), capture_output=True, check=False
    )
    if result.returncode != 0:
        raise DbError(f"dot failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode()


def _key_marks(schema, table, column):
    marks = []
    if column.primary_key:
        marks.append("PK")
    if any(r.table == table and r.column == column.name for r in schema.relations):
        marks.append("FK")
    return f" {', '.join(marks)}" if marks else ""


def _type_word(data_type):
    # Mermaid takes one word per type: "character varying(255)" -> "varchar",
    # "timestamp without time zone" -> "timestamp".
    text = data_type.lower().replace("character varying", "varchar")
    text = text.replace("double precision", "double")
    word = re.split(r"[\s(]", text.strip())[0]
    return re.sub(r"[^a-z0-9_]+", "_", word).strip("_") or "value"


def _nullable(tables, table, key):
    return next((c.null for c in tables[table] if c.name == key.column), True)
