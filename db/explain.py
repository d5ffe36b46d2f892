"""The engine's query plan, read for full scans and unindexed sorts (``db.explain``).

    explained = explain(database, "SELECT * FROM images WHERE caption = 'x'")
    explained.findings     # [Finding("full scan", "images", 3000)]: a large table read whole
    report = explain_builtin(database)   # the app's typical queries, each with its plan
    report.full_scans      # the queries that read a large table whole: db.explain exits 1

Only one SELECT is explained; anything else is refused before the database sees it
(``BadQuery``), and the plan is asked inside a transaction that is rolled back, so
nothing is ever written. Each engine is read by its own ``Planner``:

- SQLite: ``EXPLAIN QUERY PLAN``; ``SCAN t`` is a full scan, ``SEARCH t USING ...`` and
  ``SCAN t USING INDEX`` use an index, ``USE TEMP B-TREE FOR ORDER BY`` is a sort;
- PostgreSQL: ``EXPLAIN (FORMAT JSON)`` walked node by node: ``Seq Scan`` is a full scan,
  ``Index Scan``, ``Index Only Scan`` and ``Bitmap Index Scan`` use an index, ``Sort`` sorts;
- MySQL / MariaDB: ``EXPLAIN``'s rows: type ``ALL`` (key NULL) is a full scan, ``Using
  filesort`` in Extra a sort.

A full scan matters when the table holds more than ``LARGE_TABLE`` rows: SQLite counts
them exactly, the servers give their planner's estimate (run ``db.optimize`` first so
the planner knows the sizes). On PostgreSQL a full scan is asked about once more with
sequential scans priced out: when an index then serves it, the planner only judged the
table cheaper to read whole at its size, and the scan is noted, not failed.

The built-in queries are built with the models, so each engine gets its own SQL, and
bound to a typical value (the middle row of the table, not the most popular one).
"""

import functools
import json
import re
from dataclasses import dataclass

import peewee

from db.engines import MySQLEngine, PostgresEngine, SqliteEngine, engine_for
from db.engines.base import quoted
from db.errors import BadQuery, one_line
from db.models import Album, AlbumImage, Image, ImageTag, Tag, User, UserLike, bind_models
from db.search import words_of

LARGE_TABLE = 1_000  # rows: a full scan of a table above this is flagged
FULL_SCAN = "full scan"
PREFERRED_SCAN = "preferred scan"  # a full scan the planner chose over an index it has
SORT = "sort"


@dataclass(frozen=True)
class Finding:
    """Something the plan does that an index could spare: a full scan or a sort."""

    kind: str  # FULL_SCAN or SORT
    table: str | None  # None: the sort of a join's rows, not of one table
    rows: int | None = None  # the table's rows (full scans)
    instead_of: str | None = None  # the index a preferred scan passed over

    def __str__(self):
        if self.kind == FULL_SCAN:
            return f"full scan of {self.table} ({self.rows:,} rows): no index serves this filter"
        if self.kind == PREFERRED_SCAN:
            return (
                f"full scan of {self.table} ({self.rows:,} rows) chosen by the planner over "
                f"{self.instead_of}, cheaper at this size"
            )
        what = f"{self.table} rows" if self.table else "the joined rows"
        return f"sorts {what} without an index"


@dataclass(frozen=True)
class Explained:
    """One query's plan as the engine printed it, the indexes it uses, what it flags."""

    name: str | None  # the built-in query's name; None for the SQL given
    sql: str
    plan: tuple  # the plan's lines, as the engine wrote them
    indexes: tuple  # the indexes the plan uses, in plan order
    findings: tuple  # Findings: full scans of large tables, sorts without an index

    @property
    def full_scans(self):
        """Return the findings that read a large table whole."""
        return [finding for finding in self.findings if finding.kind == FULL_SCAN]

    @property
    def verdict(self):
        """Return the query's verdict in words: a full scan, else the indexes it uses."""
        if self.full_scans:
            return "; ".join(str(finding) for finding in self.full_scans)
        if self.indexes:
            return f"uses an index ({', '.join(self.indexes)})"
        return "reads no large table whole (no index needed)"


@dataclass(frozen=True)
class ExplainReport:
    """What ``db.explain`` found, query by query, on one engine."""

    engine: str
    queries: tuple  # Explained

    @property
    def full_scans(self):
        """Return the queries that read a large table whole."""
        return [query for query in self.queries if query.full_scans]


def explain(database, sql, name=None):
    """Return the Explained plan of one SELECT (BadQuery for anything else)."""
    check_select(sql)
    return _explain_checked(database, sql.strip().rstrip(";").strip(), (), name)


def explain_query(database, query, name=None):
    """Return the Explained plan of a peewee SELECT built with the models."""
    return _explain_checked(database, *query.sql(), name)


def explain_builtin(database):
    """Return an ExplainReport of the app's typical queries, built with the models."""
    bind_models(database)
    queries = tuple(explain_query(database, query, name) for name, query in builtin_queries())
    return ExplainReport(engine_for(database).name, queries)


def builtin_queries():
    """Return (name, peewee query) for each of the app's typical queries."""
    tag = _middle(Tag.select(Tag.id).order_by(Tag.count, Tag.id), 0)
    album = _middle(Album.select(Album.id).order_by(Album.id), "")
    user = _middle(User.select(User.id).order_by(User.id), "")
    return [
        (
            "recent public images",
            Image.select()
            .where(Image.privacy == "public")
            .order_by(Image.uploaded_at.desc())
            .limit(20),
        ),
        (
            "images by tag",
            Image.select().join(ImageTag).where(ImageTag.tag == tag),
        ),
        (
            "an album's images",
            Image.select(Image, AlbumImage.position)
            .join(AlbumImage)
            .where(AlbumImage.album == album)
            .order_by(AlbumImage.position),
        ),
        (
            "a user's likes",
            Image.select(Image, UserLike.liked_at).join(UserLike).where(UserLike.user == user),
        ),
        (
            "trending tags",
            Tag.select().where(Tag.trending == True).order_by(Tag.count.desc()).limit(10),  # noqa: E712
        ),
        ("image search", Image.search(_middle_word(), None).limit(20)),
        (
            "tag autocomplete",
            Tag.autocomplete(_middle(Tag.select(Tag.name).order_by(Tag.id), "")[:2]),
        ),
    ]


def _middle_word():
    """Return the first word of the middle image's title: a word someone would search for."""
    title = _middle(Image.select(Image.title).order_by(Image.id), "")
    return (words_of(title) or ["photo"])[0]


def _middle(query, default):
    """Return the id of the middle row of ``query``: a typical value, not an extreme one."""
    count = query.count()
    row = query.offset(count // 2).limit(1).scalar() if count else None
    return default if row is None else row


# -- refusing what is not one SELECT -------------------------------------------------------

_LITERALS_AND_COMMENTS = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|--[^\n]*|/\*.*?\*/", re.DOTALL
)


def check_select(sql):
    """Raise BadQuery unless ``sql`` is a single SELECT statement."""
    code = _LITERALS_AND_COMMENTS.sub(" ", sql or "").strip().rstrip(";").strip()
    words = re.findall(r"[A-Za-z_]+", code)
    first = words[0].upper() if words else ""
    if first != "SELECT" or not code.lstrip("( \n\t").upper().startswith("SELECT"):
        shown = first or "an empty statement"
        raise BadQuery(f"db.explain explains SELECT statements only, not {shown}: nothing was run")
    if ";" in code:
        raise BadQuery("db.explain explains one SELECT at a time: remove the ';' between them")
    if "INTO" in (word.upper() for word in words):
        raise BadQuery("SELECT ... INTO writes rows: db.explain explains plain SELECTs only")


# -- asking the engine ---------------------------------------------------------------------


def _explain_checked(database, sql, params, name):
    planner = planner_for(engine_for(database))
    try:
        with database.atomic() as transaction:
            planner.read_only(database)
            plan, steps = planner.plan(database, sql, params)
            rows = {
                step.table: planner.rows(database, step)
                for step in steps
                if step.kind in (FULL_SCAN, PREFERRED_SCAN) and step.table
            }
            transaction.rollback()
    except peewee.DatabaseError as exc:
        raise BadQuery(f"{planner.engine} refused the query: {one_line(exc)}") from exc
    return Explained(name, sql, tuple(plan), _indexes(steps), _findings(steps, rows))


def _indexes(steps):
    names = [step.index for step in steps if step.kind == "index" and step.index]
    return tuple(dict.fromkeys(names))


def _findings(steps, rows):
    findings = []
    for step in steps:
        if step.kind == FULL_SCAN and step.table and (rows.get(step.table) or 0) > LARGE_TABLE:
            findings.append(Finding(FULL_SCAN, step.table, rows[step.table]))
        elif step.kind == PREFERRED_SCAN and (rows.get(step.table) or 0) > LARGE_TABLE:
            findings.append(Finding(PREFERRED_SCAN, step.table, rows[step.table], step.index))
        elif step.kind == SORT:
            findings.append(Finding(SORT, step.table))
    return tuple(dict.fromkeys(findings))


@dataclass(frozen=True)
class Step:
    """One step of a plan, in the engines' common words."""

    kind: str  # FULL_SCAN, PREFERRED_SCAN, SORT, or "index"
    table: str | None = None  # the real table (aliases resolved), when known
    index: str | None = None  # the index used (for a PREFERRED_SCAN: the one passed over)


class Planner:
    """How one engine explains a query: its plan lines and the Steps read from them."""

    engine = "generic"

    def read_only(self, database):
        """Make the explaining transaction read-only where the engine can."""

    def plan(self, database, sql, params):
        """Return (plan lines, Steps) for the query."""
        raise NotImplementedError

    def rows(self, database, step):
        """Return how many rows the step's table holds."""
        sql = f"SELECT COUNT(*) FROM {quoted(database, step.table)}"
        return database.execute_sql(sql).fetchone()[0]


class SqlitePlanner(Planner):
    """``EXPLAIN QUERY PLAN``; tables counted exactly."""

    engine = "SQLite"
    _STEP = re.compile(r"^(SCAN|SEARCH) (?:TABLE )?(\S+)(?: AS (\S+))?(?: USING (.*))?$")

    def plan(self, database, sql, params):
        rows = database.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        aliases = table_aliases(sql)
        tables = set(database.get_tables())
        depth = {}
        lines, steps = [], []
        for node, parent, _, detail in rows:
            depth[node] = depth.get(parent, -1) + 1
            lines.append("  " * depth[node] + detail)
            steps.append(self._step(detail, aliases, tables))
        scanned = {step.table for step in steps if step.table}
        if len(scanned) == 1:  # a sort's rows are the one table's
            steps = [
                Step(SORT, next(iter(scanned))) if step.kind == SORT else step for step in steps
            ]
        return lines, [step for step in steps if step.kind]

    def _step(self, detail, aliases, tables):
        if detail.startswith("USE TEMP B-TREE FOR") and "ORDER BY" in detail:
            return Step(SORT)
        match = self._STEP.match(detail)
        if not match:
            return Step(None)
        _, name, alias, using = match.groups()
        table = aliases.get(alias or name, alias or name)
        table = table if table in tables else None  # a subquery or CTE, not a table
        if using is None:
            return Step(FULL_SCAN, table)
        index = re.match(r"(?:COVERING )?INDEX (\S+)", using)
        if index:
            name = index.group(1)
            return Step("index", table, f"primary key of {table}" if "autoindex" in name else name)
        return Step("index", table, f"primary key of {table}")  # INTEGER PRIMARY KEY


class PostgresPlanner(Planner):
    """``EXPLAIN (FORMAT JSON)`` walked node by node; table sizes from the statistics."""

    engine = "PostgreSQL"
    SCANS = frozenset({"Index Scan", "Index Only Scan", "Bitmap Index Scan"})

    def read_only(self, database):
        database.execute_sql("SET TRANSACTION READ ONLY")

    def plan(self, database, sql, params):
        lines, steps = self._plan(database, sql, params)
        if any(step.kind == FULL_SCAN for step in steps):
            # Is an index there that the planner passed over (a small table is cheaper
            # to read whole)? Ask again with sequential scans priced out, in this
            # rolled-back transaction only: what it then uses is the index passed over.
            database.execute_sql("SET LOCAL enable_seqscan = off")
            _, forced = self._plan(database, sql, params)
            database.execute_sql("SET LOCAL enable_seqscan = on")
            steps = [self._passed_over(step, forced) for step in steps]
        return lines, steps

    def _passed_over(self, step, forced):
        if step.kind != FULL_SCAN:
            return step
        if any(other.kind == FULL_SCAN and other.table == step.table for other in forced):
            return step
        used = [other.index for other in forced if other.table == step.table and other.index]
        return Step(PREFERRED_SCAN, step.table, used[0]) if used else step

    def _plan(self, database, sql, params):
        (document,) = database.execute_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchone()
        if isinstance(document, str):
            document = json.loads(document)
        root = document[0]["Plan"]
        aliases = {}
        self._aliases(root, aliases)
        lines, steps = [], []
        self._walk(root, 0, aliases, lines, steps)
        return lines, steps

    def _aliases(self, node, aliases):
        if "Relation Name" in node:
            aliases[node.get("Alias", node["Relation Name"])] = node["Relation Name"]
        for child in node.get("Plans", ()):
            self._aliases(child, aliases)

    def _walk(self, node, depth, aliases, lines, steps, heap=None):
        kind = node["Node Type"]
        # A Bitmap Index Scan names no table: its Bitmap Heap Scan parent does.
        table = node.get("Relation Name") or (heap if kind == "Bitmap Index Scan" else None)
        index = node.get("Index Name")
        line = (
            kind
            + (f" on {node['Relation Name']}" if "Relation Name" in node else "")
            + (f" using {index}" if index else "")
        )
        if kind == "Sort":
            line += f" by {', '.join(node.get('Sort Key', ()))}"
        lines.append("  " * depth + f"{line} (rows={node.get('Plan Rows')})")
        if kind == "Seq Scan":
            steps.append(Step(FULL_SCAN, table))
        elif kind in self.SCANS:
            steps.append(Step("index", table, index))
        elif kind == "Sort":
            steps.append(Step(SORT, self._sorted_table(node, aliases)))
        for child in node.get("Plans", ()):
            self._walk(child, depth + 1, aliases, lines, steps, node.get("Relation Name"))

    def _sorted_table(self, node, aliases):
        keyed = {
            aliases.get(key.split(".", 1)[0]) for key in node.get("Sort Key", ()) if "." in key
        }
        keyed.discard(None)
        if not keyed:  # unqualified keys: the relations below the sort
            below = {}
            self._aliases(node, below)
            keyed = set(below.values())
        return keyed.pop() if len(keyed) == 1 else None

    def rows(self, database, step):
        (estimate,) = database.execute_sql(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (step.table,)
        ).fetchone()
        if estimate is None or estimate < 0:  # never analyzed: count
            return super().rows(database, step)
        return int(estimate)


class MySQLPlanner(Planner):
    """``EXPLAIN``'s rows; table sizes are the planner's estimates (its ``rows``)."""

    engine = "MySQL"

    def plan(self, database, sql, params):
        cursor = database.execute_sql(f"EXPLAIN {sql}", params)
        columns = [column[0].lower() for column in cursor.description]
        aliases = table_aliases(sql)
        tables = set(database.get_tables())
        lines, steps = [], []
        self.estimates = {}
        for values in cursor.fetchall():
            row = dict(zip(columns, values, strict=True))
            name = row.get("table")
            table = aliases.get(name, name)
            table = table if table in tables else None
            extra = row.get("extra") or ""
            lines.append(
                f"{name or '-'}: type {row.get('type')}, key {row.get('key') or 'NULL'}, "
                f"rows {row.get('rows')}" + (f", {extra}" if extra else "")
            )
            if row.get("type") == "ALL" and not row.get("key"):
                steps.append(Step(FULL_SCAN, table))
                self.estimates[table] = int(row.get("rows") or 0)
            elif row.get("key"):
                key = row["key"]
                steps.append(
                    Step("index", table, f"primary key of {table}" if key == "PRIMARY" else key)
                )
            if "Using filesort" in extra:
                steps.append(Step(SORT, table))
        return lines, steps

    def rows(self, database, step):
        return self.estimates.get(step.table, 0)


@functools.singledispatch
def planner_for(engine):
    """Return the Planner that reads ``engine``'s query plans."""
    raise TypeError(f"db.explain has no planner for {engine.name}")


@planner_for.register
def _(engine: SqliteEngine):
    return SqlitePlanner()


@planner_for.register
def _(engine: PostgresEngine):
    return PostgresPlanner()


@planner_for.register
def _(engine: MySQLEngine):
    return MySQLPlanner()


_FROM_OR_JOIN = re.compile(
    r"\b(?:FROM|JOIN)\s+[`\"\[]?(\w+)[`\"\]]?(?:\s+(?:AS\s+)?[`\"\[]?(\w+)[`\"\]]?)?",
    re.IGNORECASE,
)
_NOT_ALIASES = {
    "where", "join", "inner", "left", "right", "full", "cross", "on", "using", "order",
    "group", "limit", "having", "union", "natural", "outer", "window", "offset", "for",
}  # fmt: skip


def table_aliases(sql):
    """Return {alias: table} for the tables named after FROM and JOIN in ``sql``."""
    aliases = {}
    for table, alias in _FROM_OR_JOIN.findall(sql):
        aliases[table] = table
        if alias and alias.lower() not in _NOT_ALIASES:
            aliases[alias] = table
    return aliases
