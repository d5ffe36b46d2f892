"""Seeders: sample data in ``seeders/``, run in numeric order, each once.

    seeder = Seeder(database, "seeders", on_event=print_progress)
    seeder.status()              # [SeederStatus(name, state, applied_at), ...]
    seeder.seed()                # SeedResult(applied=[...], skipped_changed=[...])
    seeder.seed(force=True)      # re-run every seeder

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
"""

import time
from dataclasses import dataclass, field

from db.access import as_system
from db.engines import engine_for
from db.errors import SeedFailed, SourceFileError
from db.history import SeederHistory
from db.loader import describe_failure, discover, load_module, run_statements

APPLIED, PENDING, CHANGED, MISSING = "applied", "pending", "changed", "missing"


@dataclass(frozen=True)
class SeederStatus:
    """One seeder as its file and the seeders table see it together."""

    name: str
    state: str
    applied_at: object = None


@dataclass(frozen=True)
class SeedResult:
    """What a seed run did: the seeders run, and the changed ones left alone."""

    applied: list = field(default_factory=list)
    skipped_changed: list = field(default_factory=list)


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
        files = discover(self.seeders_dir, noun="seeder")
        applied = self.history.applied()
        statuses = []
        for seeder in files:
            row = applied.get(seeder.name)
            if row is None:
                statuses.append(SeederStatus(seeder.name, PENDING))
            else:
                state = APPLIED if row.checksum == seeder.checksum else CHANGED
                statuses.append(SeederStatus(seeder.name, state, row.applied_at))
        known = {f.name for f in files}
        statuses += [
            SeederStatus(name, MISSING, row.applied_at)
            for name, row in sorted(applied.items())
            if name not in known
        ]
        return statuses

    def seed(self, force=False):
        """Run the pending seeders (every seeder with ``force``); return a SeedResult."""
        with self.engine.migration_lock(self.database):
            files = discover(self.seeders_dir, noun="seeder")
            states = {s.name: s.state for s in self.status()}
            if force:
                plan = files
            else:
                plan = [f for f in files if states[f.name] == PENDING]
            steps = [(seeder, self._load(seeder)) for seeder in plan]
            self.history.ensure_table()
            for seeder, run in steps:
                self._run(seeder, run)
            skipped = [] if force else [f.name for f in files if states[f.name] == CHANGED]
            return SeedResult([seeder.name for seeder in plan], skipped)

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
