"""Operations unsafe on a large live table, found in the SQL pending migrations would run.

    report = lint_migrations(engine, database, captured)   # captured: db.capture's
    report.unacknowledged                                  # the findings that fail a check

The SQL is what ``db.migrate --sql`` prints (db.capture). On PostgreSQL, Squawk
(``squawk-cli``) reads each step's statements, between BEGIN; and COMMIT; for a step
that runs in a transaction; on MySQL/MariaDB and SQLite the rules are our own, in ENGINE_RULES.
On every engine, ``update-without-where`` flags an UPDATE or DELETE of a whole table.

A table created by a pending migration of the same run (or earlier in the same one) is
new and empty: nothing about it is reported. A migration acknowledges a finding with a
comment, anywhere in the file, that gives the reason::

    -- lint: allow require-concurrent-index-creation: tags holds a few hundred rows
    # lint: allow mysql-column-type-change: runs in the Sunday window

An acknowledgement without a reason is itself a finding (``lint-allow-without-reason``).
"""

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from db.engines.mysql import MySQLEngine
from db.engines.postgres import PostgresEngine
from db.engines.sqlite import SqliteEngine
from db.errors import ToolFailed

# Squawk's rules left out, and why (README, "Linting migrations"):
SQUAWK_EXCLUDED = (
    # The runner sets lock_timeout and statement_timeout before every step itself.
    "require-timeout-settings",
    "require-lock-timeout",
    "require-statement-timeout",
    # Re-running a half-applied step: the history table records each migration once; a
    # transactional step rolls back whole, a non-transactional one is repaired by hand.
    "prefer-robust-stmts",
    # Type preferences, not locking: the types are the models' (peewee's) choice.
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "prefer-timestamptz",
    "ban-char-field",
)
SQUAWK_TIMEOUT_SECONDS = 120
ALLOWED = re.compile(
    r"^\s*(?:--|#)\s*lint:\s*allow\s+(?P<rule>[a-z0-9-]+)\s*(?::(?P<reason>.*))?$", re.MULTILINE
)
NO_REASON = "lint-allow-without-reason"
TEMPORARY_SUFFIX = "__tmp__"  # peewee's SQLite table rebuild copies into "<table>__tmp__"
NAME = r"""(?:[`"]?[\w$]+[`"]?\.)?[`"]?(?P<table>[\w$]+)[`"]?"""
TABLE_OF = [
    re.compile(pattern + NAME, re.IGNORECASE)
    for pattern in (
        r"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?",
        r"^\s*CREATE\s+(?:UNIQUE\s+|FULLTEXT\s+)?INDEX\b.*?\bON\s+(?:ONLY\s+)?",
        r"^\s*UPDATE\s+(?:ONLY\s+)?",
        r"^\s*DELETE\s+FROM\s+(?:ONLY\s+)?",
        r"^\s*OPTIMIZE\s+TABLE\s+",
        r"^\s*INSERT\s+INTO\s+",
        r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?",
        r"^\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?",
        r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TRIGGER|POLICY)\b.*?\bON\s+",
    )
]
LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
CREATES_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?" + NAME, re.I)


@dataclass(frozen=True)
class Rule:
    """One of our own rules: its name, what it matches, why it is unsafe, what to do."""

    name: str
    pattern: re.Pattern
    why: str
    instead: str
    unless: re.Pattern | None = None


def _rule(name, pattern, why, instead, unless=None):
    flags = re.IGNORECASE | re.DOTALL
    return Rule(
        name, re.compile(pattern, flags), why, instead, unless and re.compile(unless, flags)
    )


WHOLE_TABLE = _rule(
    "update-without-where",
    r"^\s*(?:UPDATE|DELETE\s+FROM)\s+(?:(?!\bWHERE\b).)*$",
    "writes every row of the table in one transaction, locking them all until it ends",
    "backfill in batches by primary key range (UPDATE ... WHERE id BETWEEN ...), each "
    "committed, in a data migration or a script",
)
ENGINE_RULES = {
    "mysql": (
        _rule(
            "mysql-index-without-inplace",
            r"^\s*(?:CREATE\s+(?:UNIQUE\s+|FULLTEXT\s+)?INDEX\b"
            r"|ALTER\s+TABLE\b.*\bADD\s+(?:UNIQUE\s+|FULLTEXT\s+)?(?:INDEX|KEY)\b)",
            "may fall back to copying the table, blocking writes, without saying so",
            "say ALGORITHM=INPLACE, LOCK=NONE on it: the server then builds it online or "
            "refuses at once",
            unless=r"\bALGORITHM\s*=\s*INPLACE\b.*\bLOCK\s*=\s*NONE\b"
            r"|\bLOCK\s*=\s*NONE\b.*\bALGORITHM\s*=\s*INPLACE\b",
        ),
        _rule(
            "mysql-column-type-change",
            r"^\s*ALTER\s+TABLE\b.*\b(?:MODIFY|CHANGE)\b",
            "MODIFY/CHANGE of a column's type or nullability copies the whole table "
            "(ALGORITHM=COPY), blocking writes for as long as that takes",
            "add a new column, backfill it in batches, switch the code, drop the old one; "
            "or run it with gh-ost / pt-online-schema-change",
        ),
        _rule(
            "mysql-column-not-last",
            r"^\s*ALTER\s+TABLE\b.*\bADD\s+(?:COLUMN\s+)?.*\b(?:FIRST|AFTER)\b",
            "a column added anywhere but at the end rebuilds the table on MySQL before "
            "8.0.29 (and is never instant on MariaDB before 10.4)",
            "add the column at the end (ALGORITHM=INSTANT)",
        ),
        _rule(
            "mysql-drop-column",
            r"^\s*ALTER\s+TABLE\b.*\bDROP\s+(?:COLUMN\s+)?(?!INDEX\b|KEY\b|FOREIGN\b|PRIMARY\b"
            r"|CONSTRAINT\b|CHECK\b)\S",
            "dropping a column rebuilds the table (instant only on MySQL 8.0.29+)",
            "stop using the column first, then drop it in a quiet window or with gh-ost",
        ),
        _rule(
            "mysql-optimize",
            r"^\s*OPTIMIZE\s+TABLE\b",
            "OPTIMIZE TABLE rebuilds the table",
            "run invoke db.optimize in a maintenance window instead of in a migration",
        ),
        WHOLE_TABLE,
    ),
    "sqlite": (
        _rule(
            "sqlite-table-rebuild",
            r"^\s*CREATE\s+TABLE\s+[`\"]?\w+" + TEMPORARY_SUFFIX,
            "peewee rebuilds the table (copy every row, drop, rename) to change a column, "
            "holding the write lock throughout: every writer waits",
            "add a new nullable column instead of changing one, or run it when writers "
            "can wait (acknowledge it for a small table)",
        ),
        _rule(
            "sqlite-create-index",
            r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\b",
            "building an index on a populated table holds the write lock: writers wait",
            "build it when writers can wait, or acknowledge it for a small table",
        ),
        WHOLE_TABLE,
    ),
    "postgres": (WHOLE_TABLE,),
}


@dataclass(frozen=True)
class Finding:
    """An unsafe operation: the migration, its line (None: unknown), the statement, the
    rule, why, what to do instead, and the reason it was acknowledged (None: it was not)."""

    migration: str
    line: int | None
    statement: str
    rule: str
    why: str
    instead: str
    acknowledged: str | None = None


@dataclass(frozen=True)
class LintReport:
    """What db.lint found: the engine's name, the migrations checked, every finding."""

    engine: str
    migrations: list
    findings: list

    @property
    def unacknowledged(self):
        return [finding for finding in self.findings if finding.acknowledged is None]


def lint_migrations(engine, database, captured, only=None):
    """Return a LintReport of the captured migrations (those named in ``only``, when
    given; the others still count for which tables are new)."""
    new_tables, findings, checked = set(), [], []
    for item in captured:
        new_tables |= _created_tables(item.statements)
        if only is not None and item.migration.version not in only:
            continue
        checked.append(item.migration.name)
        found = [
            finding
            for finding in step_findings(engine, database, item)
            if _table_of(finding.statement) not in new_tables
        ]
        findings += sorted(_acknowledged(item.migration, found), key=_position)
    return LintReport(engine.name, checked, findings)


def _position(finding):
    return (finding.line is None, finding.line or 0)


def _code(sql):
    """Return a statement without the comments that lead it (an SQL file's notes)."""
    return LEADING_COMMENTS.sub("", sql, count=1)


def _created_tables(statements):
    tables = set()
    for statement in statements:
        match = CREATES_TABLE.match(_code(statement.sql))
        if match and not match["table"].endswith(TEMPORARY_SUFFIX):
            tables.add(match["table"].lower())
    return tables


def _table_of(sql):
    """Return the (lower-case) table a statement works on, or None."""
    for pattern in TABLE_OF:
        match = pattern.match(_code(sql))
        if match:
            return match["table"].lower().removesuffix(TEMPORARY_SUFFIX)
    return None


def _acknowledged(migration, findings):
    """Return the findings with their acknowledgements, and one per reasonless one."""
    text = migration.path.read_text(encoding="utf-8")
    reasons, result = {}, []
    for match in ALLOWED.finditer(text):
        reason = (match["reason"] or "").strip()
        if reason:
            reasons[match["rule"]] = reason
            continue
        result.append(
            Finding(
                migration.path.name,
                text.count("\n", 0, match.start()) + 1,
                match.group().strip(),
                NO_REASON,
                f"acknowledges {match['rule']} without saying why",
                f"write the reason after a colon: lint: allow {match['rule']}: <why it is safe>",
            )
        )
    for finding in findings:
        reason = reasons.get(finding.rule)
        result.append(finding if reason is None else _with(finding, acknowledged=reason))
    return result


def _with(finding, **changes):
    return Finding(**{**finding.__dict__, **changes})


def _own_rules(rules, item):
    findings = []
    for statement in item.statements:
        code = _code(statement.sql)
        for rule in rules:
            if rule.pattern.search(code) and not (rule.unless and rule.unless.search(code)):
                findings.append(
                    Finding(
                        item.migration.path.name,
                        statement.line,
                        statement.sql,
                        rule.name,
                        rule.why,
                        rule.instead,
                    )
                )
    return findings


@functools.singledispatch
def step_findings(engine, database, item):
    """Return the Findings of one captured migration on ``engine``."""
    raise TypeError(f"db.lint has no rules for {engine.name}")


@step_findings.register
def _(engine: SqliteEngine, database, item):
    findings = _own_rules(ENGINE_RULES["sqlite"], item)
    # A rebuild re-creates the table's indexes: the rebuild's finding says it all.
    rebuilt = {_table_of(f.statement) for f in findings if f.rule == "sqlite-table-rebuild"}
    return [
        finding
        for finding in findings
        if not (finding.rule == "sqlite-create-index" and _table_of(finding.statement) in rebuilt)
    ]


@step_findings.register
def _(engine: MySQLEngine, database, item):
    return _own_rules(ENGINE_RULES["mysql"], item)


@step_findings.register
def _(engine: PostgresEngine, database, item):
    version = database.execute_sql("SHOW server_version").fetchone()[0].split()[0]
    return _own_rules(ENGINE_RULES["postgres"], item) + squawk(item, version)


def squawk(item, pg_version):
    """Return Squawk's Findings for one captured migration (its statements on stdin)."""
    if not item.statements:
        return []
    binary = shutil.which("squawk") or _beside_python("squawk")
    if binary is None:
        raise ToolFailed(
            "db.lint on PostgreSQL needs Squawk: pip install 'clonegallery-db[squawk]'"
        )
    text, starts = _numbered_text(item.statements, item.options.atomic)
    command = [
        binary,
        "--reporter=json",
        f"--pg-version={pg_version}",
        f"--stdin-filepath={item.migration.path.name}",
        *(f"--exclude={rule}" for rule in SQUAWK_EXCLUDED),
        # The transaction is written out (BEGIN; ... COMMIT;) rather than assumed: Squawk
        # lets a lone CREATE INDEX CONCURRENTLY pass under --assume-in-transaction.
        "--no-assume-in-transaction",
    ]
    with tempfile.TemporaryDirectory() as nowhere:  # no .squawk.toml of anyone's applies
        try:
            done = subprocess.run(
                command,
                input=text,
                capture_output=True,
                text=True,
                cwd=nowhere,
                env={"PATH": os.environ.get("PATH", ""), "HOME": nowhere},
                timeout=SQUAWK_TIMEOUT_SECONDS,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolFailed(f"squawk could not run: {exc}") from exc
    try:
        reported = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        reported = None
    if done.returncode not in (0, 1) or reported is None:
        detail = " ".join((done.stderr or done.stdout).split())[:300]
        raise ToolFailed(f"squawk failed on {item.migration.path.name}: {detail}")
    findings = []
    for violation in reported:
        statement = item.statements[_statement_at(starts, violation["line"])]
        findings.append(
            Finding(
                item.migration.path.name,
                statement.line,
                statement.sql,
                violation["rule_name"],
                violation["message"].rstrip("."),
                violation.get("help") or "see https://squawkhq.com/docs/rules",
            )
        )
    return findings


def _beside_python(name):
    """Return the script ``name`` installed beside the running Python (a venv not on PATH)."""
    import sys
    from pathlib import Path

    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else None


def _numbered_text(statements, atomic):
    """Return the statements as one SQL text, between BEGIN; and COMMIT; for a step that
    runs in a transaction, and the 0-based line each statement starts on."""
    starts, lines = [], ["BEGIN;"] if atomic else []
    for statement in statements:
        starts.append(len(lines))
        lines += (statement.sql.rstrip().rstrip(";") + ";").split("\n")
    return "\n".join([*lines, *(["COMMIT;"] if atomic else [])]) + "\n", starts


def _statement_at(starts, line):
    """Return the index of the statement that holds the 0-based ``line``."""
    return max((index for index, start in enumerate(starts) if start <= line), default=0)
