"""Seeders: the data in ``seeders/``, run in numeric order, each once.

    seeder = Seeder(database, "seeders", on_event=print_progress)
    seeder.status()              # [SeederStatus(name, state, applied_at, kind), ...]
    seeder.seed()                # SeedResult(applied=[...], skipped_changed=[...])
    seeder.seed(force=True)      # re-run every seeder
    seeder.seed(sample=False)    # only the essential ones; the sample ones are skipped
    seeder.seed(refuse_sample=True)  # SampleRefused, before anything runs, if a sample
                                     # seeder would run (db.environment: production)

Files are named like migrations (``NNN_description.py`` or ``.sql``). A Python
seeder defines ``run(db)``; the application models (``db.models``) are bound to
the database while it runs. An SQL seeder is a list of statements. Each seeder
runs in its own transaction, together with its row in the ``seeders`` table
(name, checksum, applied_at); one that fails is rolled back and names its file
(and line, for SQL), while the ones before it stay applied.

Seeders must be idempotent, so that ``--force`` re-runs them without a single
duplicate row: insert with ``on_conflict_ignore()`` (or look rows up first). So
``--force`` adds what is missing but does not overwrite rows that exist; to
restore the sample data exactly, run ``db.reset --data-only`` then ``db.seed``.
Beware that ``on_conflict_ignore()`` and ``insert_many`` skip the models'
validation, and that SQLite's ``INSERT OR IGNORE`` silently drops rows breaking a
CHECK or NOT NULL rule (MySQL's ``INSERT IGNORE`` even foreign keys): seeders
count what they wrote in tests. A seeder whose file changed after it ran shows
as ``changed`` and is re-run only with ``force``.

A seeder is **essential** (every environment needs its rows) or **sample** (the
demo gallery). It says which at the top of its file::

    kind = "essential"           # a Python seeder: a module-level string literal
    -- seeder: essential         -- an SQL seeder: a comment line before its first statement

A seeder that says neither is sample, so that nothing unmarked reaches a production
database; any other value is refused, naming the file. The kind is read from the
text, without running the file, so ``status()`` runs no seeder code.
"""

import ast
import re
import time
from dataclasses import dataclass, field

from db.access import as_system
from db.engines import engine_for
from db.errors import SampleRefused, SeedFailed, SourceFileError
from db.history import SeederHistory
from db.loader import describe_failure, discover, load_module, run_statements

APPLIED, PENDING, CHANGED, MISSING = "applied", "pending", "changed", "missing"
ESSENTIAL, SAMPLE = "essential", "sample"
KINDS = (ESSENTIAL, SAMPLE)
# The environment (Settings.environment, db.environment) in which sample seeders are
# refused unless asked for (--force).
PRODUCTION = "production"
SQL_KIND_LINE = re.compile(r"^--\s*seeder:(?P<kind>.*)$", re.MULTILINE)


@dataclass(frozen=True)
class SeederStatus:
    """One seeder as its file and the seeders table see it together; ``kind`` is
    essential or sample (None for a missing file)."""

    name: str
    state: str
    applied_at: object = None
    kind: str | None = SAMPLE


@dataclass(frozen=True)
class SeedResult:
    """What a seed run did: the seeders run, the changed ones left alone, and the
    sample ones left out (``sample=False``)."""

    applied: list = field(default_factory=list)
    skipped_changed: list = field(default_factory=list)
    skipped_sample: list = field(default_factory=list)


@dataclass(frozen=True)
class SeedPlan:
    """What a seed run would do: the seeder files to run, in order, with their kinds,
    and the names of the changed and sample seeders it leaves alone."""

    run: list
    kinds: dict
    skipped_changed: list
    skipped_sample: list

    @property
    def sample(self):
        """Return the names of the sample seeders the plan would run."""
        return [seeder.name for seeder in self.run if self.kinds[seeder.name] == SAMPLE]

    def refuse_sample(self):
        """Raise SampleRefused, naming them, if the plan would run a sample seeder."""
        if self.sample:
            raise SampleRefused(
                f"db.environment is {PRODUCTION} and {', '.join(self.sample)} "
                f"{'is a sample seeder' if len(self.sample) == 1 else 'are sample seeders'}: "
                "pass --no-sample to skip them or --force to seed them anyway; nothing changed"
            )


def refuses_sample(environment):
    """Return whether seeding in ``environment`` (db.environment) refuses sample seeders."""
    return str(environment).strip().lower() == PRODUCTION


def seeder_kind(seeder):
    """Return a seeder file's kind, essential or sample (unmarked: sample), read from its
    text; raise SourceFileError naming the file for any other value."""
    text = seeder.path.read_text(encoding="utf-8")
    if seeder.kind == "sql":
        return _sql_kind(seeder, text)
    return _python_kind(seeder, text)


def _python_kind(seeder, text):
    """Return the module-level ``kind = "..."`` of a Python seeder, else SAMPLE."""
    try:
        tree = ast.parse(text, filename=str(seeder.path))
    except SyntaxError as exc:
        raise SourceFileError(f"{seeder.path}, line {exc.lineno}: {exc.msg}") from None
    kind = SAMPLE
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if any(isinstance(target, ast.Name) and target.id == "kind" for target in targets):
            where = f"{seeder.path}, line {node.lineno}"
            value = node.value.value if isinstance(node.value, ast.Constant) else None
            if not isinstance(value, str):
                raise SourceFileError(
                    f"{where}: kind is the string 'essential' or 'sample', written as it is"
                )
            kind = _checked_kind(where, "kind", value)
    return kind


def _sql_kind(seeder, text):
    """Return the kind of an SQL seeder's ``-- seeder: KIND`` line, else SAMPLE."""
    lines = text.splitlines()
    # The head of the file: the blank and comment lines before its first statement.
    head = next(
        (n for n, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("--")),
        len(lines),
    )
    kind = SAMPLE
    marked = False
    for match in SQL_KIND_LINE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        where = f"{seeder.path}, line {line}"
        if marked or line > head:
            raise SourceFileError(
                f"{where}: a seeder has one '-- seeder: essential|sample' line, before its "
                "first statement"
            )
        kind, marked = _checked_kind(where, "seeder:", match.group("kind").strip()), True
    return kind


def _checked_kind(where, name, value):
    if value not in KINDS:
        raise SourceFileError(f"{where}: {name} is essential or sample, not {value!r}")
    return value


class Seeder:
    """Run the seeders of one folder on one database."""

    def __init__(self, database, seeders_dir, on_event=None, engine=None):
        self.database = database
        self.seeders_dir = seeders_dir
        self.engine = engine or engine_for(database)
        self.history = SeederHistory(database)
        self.on_event = on_event or (lambda event, seeder, duration_ms: None)

    def status(self):
        """Return every seeder, from files and the seeders table, in order."""
        return self._status(discover(self.seeders_dir, noun="seeder"))

    def _status(self, files):
        applied = self.history.applied()
        statuses = []
        for seeder in files:
            row, kind = applied.get(seeder.name), seeder_kind(seeder)
            if row is None:
                statuses.append(SeederStatus(seeder.name, PENDING, kind=kind))
            else:
                state = APPLIED if row.checksum == seeder.checksum else CHANGED
                statuses.append(SeederStatus(seeder.name, state, row.applied_at, kind))
        known = {f.name for f in files}
        statuses += [
            SeederStatus(name, MISSING, row.applied_at, kind=None)
            for name, row in sorted(applied.items())
            if name not in known
        ]
        return statuses

    def plan(self, force=False, sample=True):
        """Return the SeedPlan of the pending seeders (every seeder with ``force``), the
        sample ones left out unless ``sample``."""
        files = discover(self.seeders_dir, noun="seeder")
        statuses = {s.name: s for s in self._status(files)}
        kinds = {f.name: statuses[f.name].kind for f in files}
        due = files if force else [f for f in files if statuses[f.name].state == PENDING]
        changed = [] if force else [f.name for f in files if statuses[f.name].state == CHANGED]
        if sample:
            return SeedPlan(due, kinds, changed, [])
        return SeedPlan(
            [f for f in due if kinds[f.name] == ESSENTIAL],
            kinds,
            [name for name in changed if kinds[name] == ESSENTIAL],
            [f.name for f in due if kinds[f.name] == SAMPLE],
        )

    def seed(self, force=False, sample=True, refuse_sample=False):
        """Run the pending seeders (every seeder with ``force``; only the essential ones
        without ``sample``); with ``refuse_sample``, raise SampleRefused before anything
        runs if a sample seeder would. Return a SeedResult."""
        with self.engine.migration_lock(self.database):
            plan = self.plan(force=force, sample=sample)
            if refuse_sample:
                plan.refuse_sample()
            steps = [(seeder, self._load(seeder)) for seeder in plan.run]
            self.history.ensure_table()
            for seeder, run in steps:
                self._run(seeder, run)
            applied = [seeder.name for seeder in plan.run]
            return SeedResult(applied, plan.skipped_changed, plan.skipped_sample)

    def _load(self, seeder):
        if seeder.kind == "sql":
            text = seeder.path.read_text(encoding="utf-8")
            statements = self.engine.split_statements(text)
            return lambda db: run_statements(seeder, statements, db)
        run = getattr(load_module(seeder), "run", None)
        if not callable(run):
            raise SourceFileError(f"{seeder.path}: defines no run(db) function")
        return run

    def _run(self, seeder, run):
        from db.models import ALL_MODELS  # what seeders write through; not what status reads

        self.on_event("seeding", seeder, None)
        started = time.perf_counter()
        try:
            # Seeders are maintenance code: their writes skip the access rules (db.access).
            with (
                self.engine.transaction(self.database),
                self.database.bind_ctx(ALL_MODELS),
                as_system(),
            ):
                run(self.database)
                self.history.record(seeder)
        except Exception as exc:
            raise SeedFailed(
                f"{seeder.path.name} failed: {describe_failure(exc, seeder)} "
                "(that seeder was rolled back; the ones before it stay applied)"
            ) from exc
        self.on_event("seeded", seeder, round((time.perf_counter() - started) * 1000))
