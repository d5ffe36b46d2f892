"""Plan and run migrations against one database.

    runner = Runner(database, "migrations", on_event=print_progress)
    runner.status()                 # [MigrationStatus(...), ...] in version order
    runner.migrate(to="002")        # names applied, oldest first
    runner.migrate(dry_run=True)    # names that would be applied; nothing runs
    runner.rollback(steps=2)        # names reverted, newest first

Everything is validated before the first statement runs: misnamed or duplicate
files, drift (an applied file that changed or is gone), a pending migration
numbered below an applied one, unknown ``--to`` versions, a missing ``up`` or
``down``. Each migration then runs in one transaction together with its history
row, under a lock that makes concurrent runs apply it exactly once.

``on_event(event, migration, duration_ms)`` reports progress: ``applying``,
``applied``, ``reverting``, ``reverted``; a step that ran no SQL at all (an unedited
skeleton) ends in ``applied-empty`` or ``reverted-empty`` instead; ``retrying`` (with the
back-off in ``duration_ms``) when a step gave up waiting for a lock and will be tried
again. The runner never prints.

Each step runs with a lock timeout and a statement timeout (db.timeouts), in a
transaction unless it says ``transaction:false`` (db.loader.StepOptions): then each
statement commits as it runs, which ``CREATE INDEX CONCURRENTLY`` needs, and a failure
part-way is recorded as failed, as on MySQL, for db.rollback or db.repair to go on.
"""

import itertools
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from db.engines import engine_for
from db.errors import (
    ConfigError,
    DriftError,
    FailedMigrationError,
    IrreversibleMigration,
    MigrationFailed,
    OutOfOrderError,
    UnknownVersion,
)
from db.history import History
from db.loader import describe_failure, discover, load_migration

APPLIED, PENDING, CHANGED, MISSING, FAILED = "applied", "pending", "changed", "missing", "failed"
# A step that gave up waiting for a lock is tried again after 1 s, 2 s, 4 s, 8 s, 8 s...
MAX_BACKOFF_SECONDS = 8
# Said of a step outside a transaction that gave up waiting: CREATE INDEX CONCURRENTLY
# waits for every older transaction to end, which the lock timeout cuts short.
NON_ATOMIC_LOCK_ADVICE = (
    "; a concurrent index build waits for every older transaction: give its marker line "
    "a longer lock_timeout"
)
# Peewee logs every statement a database runs to this logger, at DEBUG.
PEEWEE_QUERY_LOG = logging.getLogger("peewee")


@dataclass(frozen=True)
class MigrationStatus:
    """One migration as the files and the history see it together."""

    version: str
    name: str
    state: str
    applied_at: object = None
    duration_ms: int | None = None
    error: str | None = None


class Runner:
    """Apply and roll back the migrations of one folder on one database."""

    def __init__(self, database, migrations_dir, on_event=None, engine=None, timeouts=None):
        from db.timeouts import MigrationTimeouts

        self.database = database
        self.timeouts = timeouts or MigrationTimeouts()
        self.migrations_dir = migrations_dir
        self.engine = engine or engine_for(database)
        self.history = History(database)
        self.migrator = self.engine.migrator(database)
        self.on_event = on_event or _ignore_event

    def status(self):
        """Return every migration, from files and history, in version order."""
        return merge_status(discover(self.migrations_dir), self.history.applied())

    def current_version(self):
        """Return the highest version applied whole (not one that failed half-way), or
        None on an unmigrated database."""
        whole = [version for version, row in self.history.applied().items() if not row.failed]
        return max(whole, key=int) if whole else None

    def migrate(self, to=None, dry_run=False, allow_out_of_order=False):
        """Apply pending migrations (up to ``to``); return the names applied."""
        with self.engine.migration_lock(self.database):
            plan = self.plan_migrate(to, allow_out_of_order)
            if dry_run:
                return [migration.name for migration, _ in plan]
            self._ensure_history()
            for migration, steps in plan:
                self._run(migration, steps.up, steps.up_options, "applying", "applied")
            return [migration.name for migration, _ in plan]

    def rollback(self, to=None, steps=None, dry_run=False):
        """Revert applied migrations (the last one by default); return the names reverted."""
        with self.engine.migration_lock(self.database):
            plan = self._plan_rollback(to, steps)
            if dry_run:
                return [migration.name for migration, _ in plan]
            for migration, loaded in plan:
                self._run(migration, loaded.down, loaded.down_options, "reverting", "reverted")
            return [migration.name for migration, _ in plan]

    def _ensure_history(self):
        """Create the history table, waiting for a lock no longer than a step would (on
        SQLite, one lock guards the whole file)."""
        from db import timeouts
        from db.loader import StepOptions

        with timeouts.limited(self.engine, self.database, self.timeouts.for_step(StepOptions())):
            self.history.ensure_table()

    def plan_migrate(self, to=None, allow_out_of_order=False):
        """Return the pending (NumberedFile, Steps) pairs migrate would apply, validated,
        without running any (db.capture reads their SQL)."""
        files = discover(self.migrations_dir)
        applied = self.history.applied()
        self._refuse_drift(files, applied)
        _refuse_failed(applied)
        limit = _version_number(to, files) if to is not None else None
        pending = [
            f for f in files if f.version not in applied and (limit is None or f.number <= limit)
        ]
        if applied and not allow_out_of_order:
            _refuse_out_of_order(pending, max(int(v) for v in applied))
        return [(migration, load_migration(migration, self.engine)) for migration in pending]

    def _plan_rollback(self, to, steps):
        if to is not None and steps is not None:
            raise ConfigError("give either --to or --steps, not both")
        if steps is not None and steps < 1:
            raise ConfigError(f"--steps must be 1 or more, not {steps}")
        files = discover(self.migrations_dir)
        applied = self.history.applied()
        self._refuse_drift(files, applied)
        newest_first = sorted((f for f in files if f.version in applied), key=lambda f: -f.number)
        if to is not None:
            limit = _rollback_target(to, newest_first)
            chosen = [f for f in newest_first if f.number > limit]
        else:
            chosen = newest_first[: steps or 1]
        plan = []
        for migration in chosen:
            loaded = load_migration(migration, self.engine)
            if loaded.down is None:
                raise IrreversibleMigration(
                    f"{migration.path}: has no down step, so it cannot be rolled back "
                    "(add a down() function or a '-- migrate:down' section)"
                )
            plan.append((migration, loaded))
        return plan

    def _refuse_drift(self, files, applied):
        for row in merge_status(files, applied):
            if row.state == MISSING:
                raise DriftError(
                    f"migration {row.name} is applied but its file is gone from "
                    f"{self.migrations_dir}; restore the file before migrating or rolling back"
                )
            if row.state == CHANGED:
                raise DriftError(
                    f"migration {row.name} was changed after it was applied (checksum "
                    "differs); restore the applied version and put the change in a new migration"
                )

    def repair(self):
        """Forget failed runs (after the database was fixed by hand); return their names."""
        with self.engine.migration_lock(self.database):
            failed = self.history.failed()
            with self.engine.transaction(self.database):
                for row in failed:
                    self.history.record_unapplied(row.version)
            return [row.name for row in failed]

    def _run(self, migration, step, options, before, after):
        """Run one step (up or down) with its limits, trying again after a lock timeout
        while nothing of it can have been applied; record it, or record its failure."""
        self.on_event(before, migration, None)
        limits = self.timeouts.for_step(options)
        started = time.perf_counter()
        for attempt in itertools.count():
            run = StepRun(self, migration, step, options, limits, started)
            try:
                statements = run.attempt(after == "applied")
                break
            except Exception as exc:
                if not (run.may_retry(exc) and attempt < limits.retries):
                    self._fail(migration, run, exc, after, started, attempt + 1)
            backoff = min(2**attempt, MAX_BACKOFF_SECONDS)
            self.on_event("retrying", migration, backoff * 1000)
            time.sleep(backoff)
        self.on_event(after if statements else f"{after}-empty", migration, run.duration_ms)

    def _fail(self, migration, run, exc, after, started, attempts):
        """Raise MigrationFailed for a step that failed, recording it as failed when part
        of it may be applied."""
        reason = f"{migration.path.name} failed: {run.describe_failure(exc, attempts)}"
        if run.rolled_back:
            raise MigrationFailed(f"{reason} (its changes were rolled back)") from exc
        if run.left_nothing(exc):
            raise MigrationFailed(f"{reason} (nothing of it ran)") from exc
        if after == "applied":
            with self.engine.transaction(self.database):
                self.history.record_applied(migration, _elapsed_ms(started), error=reason)
        why = (
            "it ran outside a transaction"
            if not run.options.atomic
            else f"{self.engine.name} commits schema changes as it goes"
        )
        raise MigrationFailed(
            f"{reason}; {why}, so part of it may be applied: fix the database, then run "
            "invoke db.rollback (runs its down) or invoke db.repair (forgets the failed run)"
        ) from exc


class StepRun:
    """One attempt at one step: its session limits, the watch on who blocks it, and how
    many of its statements ran."""

    def __init__(self, runner, migration, step, options, limits, started):
        self.runner, self.migration, self.step = runner, migration, step
        self.options, self.limits, self.started = options, limits, started
        self.engine, self.database = runner.engine, runner.database
        self.statements = None
        self.watch = None
        self.duration_ms = None
        self.invalid_before = None  # unless rolled back on failure: invalid indexes before it ran

    @property
    def rolled_back(self):
        """Whether a failure is rolled back whole: the step ran in a transaction that
        schema changes are part of."""
        return self.options.atomic and self.engine.transactional_ddl

    def left_nothing(self, exc):
        """Whether the failure ``exc`` left nothing of the step behind: it was rolled back,
        or its first statement gave up waiting for a lock before it changed anything (a
        concurrent index build that gives up part-way leaves an invalid index)."""
        from db import timeouts

        if self.rolled_back:
            return True
        first = self.statements is not None and len(self.statements) <= 1
        return (
            first
            and timeouts.lock_timed_out(self.engine, exc)
            and self.engine.invalid_indexes(self.database) == self.invalid_before
        )

    def attempt(self, applying):
        """Run the step and record it; return how many statements it ran."""
        from db import timeouts

        history, migration = self.runner.history, self.migration
        if not self.rolled_back:
            self.invalid_before = self.engine.invalid_indexes(self.database)
        with (
            timeouts.limited(self.engine, self.database, self.limits),
            timeouts.BlockerWatch(self.engine, self.database) as self.watch,
        ):
            if self.options.atomic:
                with self.engine.migration_transaction(self.database):
                    self._run_step()
                    self._record(history, migration, applying)
            else:
                self._run_step()
                with self.engine.transaction(self.database):
                    self._record(history, migration, applying)
        return len(self.statements)

    def _run_step(self):
        with statements_counted() as self.statements:
            self.step(self.runner.migrator, self.database)

    def _record(self, history, migration, applying):
        self.duration_ms = _elapsed_ms(self.started)
        if applying:
            history.record_applied(migration, self.duration_ms)
        else:
            history.record_unapplied(migration.version)

    def may_retry(self, exc):
        """Whether the step gave up waiting for a lock and left nothing behind."""
        from db import timeouts

        return timeouts.lock_timed_out(self.engine, exc) and self.left_nothing(exc)

    def describe_failure(self, exc, attempts):
        """Return why the step failed, in one line: a lock or statement timeout says its
        limit, the tries and who blocked it."""
        from db import timeouts

        what = describe_failure(exc, self.migration)
        if timeouts.lock_timed_out(self.engine, exc):
            tries = f"{attempts} tries" if attempts > 1 else "1 try"
            blocked = self.watch.describe() if self.watch else "no blocking session was seen"
            advice = "" if self.options.atomic else NON_ATOMIC_LOCK_ADVICE
            return (
                f"{what} (no lock within lock_timeout {timeouts.describe(self.limits.lock)}, "
                f"{tries}; {blocked}{advice})"
            )
        if timeouts.statement_timed_out(self.engine, exc):
            limit = timeouts.describe(self.limits.statement)
            return f"{what} (ran past statement_timeout {limit})"
        return what


class _StatementCounter(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.count = 0
        self.thread = threading.get_ident()

    def __len__(self):
        return self.count

    def emit(self, record):
        if record.thread == self.thread:  # not another thread's (db.timeouts.BlockerWatch)
            self.count += 1


@contextmanager
def statements_counted():
    """Yield a counter whose len() is the number of SQL statements run in the block."""
    counter = _StatementCounter()
    level = PEEWEE_QUERY_LOG.level
    PEEWEE_QUERY_LOG.addHandler(counter)
    PEEWEE_QUERY_LOG.setLevel(logging.DEBUG)
    try:
        yield counter
    finally:
        PEEWEE_QUERY_LOG.removeHandler(counter)
        PEEWEE_QUERY_LOG.setLevel(level)


def merge_status(files, applied):
    """Return MigrationStatus rows for migration files and history rows, in version order."""
    by_version = {f.version: f for f in files}
    statuses = []
    for version in sorted(by_version.keys() | applied.keys(), key=int):
        migration, row = by_version.get(version), applied.get(version)
        if row is None:
            statuses.append(MigrationStatus(version, migration.name, PENDING))
            continue
        if migration is None:
            state = MISSING
        elif row.failed:
            state = FAILED
        elif migration.checksum != row.checksum:
            state = CHANGED
        else:
            state = APPLIED
        statuses.append(
            MigrationStatus(version, row.name, state, row.applied_at, row.duration_ms, row.error)
        )
    return statuses


def _elapsed_ms(started):
    return round((time.perf_counter() - started) * 1000)


def _refuse_failed(applied):
    for row in applied.values():
        if row.failed:
            raise FailedMigrationError(
                f"migration {row.name} failed on an earlier run and may be half-applied "
                f"({row.error}); fix the database, then run invoke db.rollback (runs its "
                "down) or invoke db.repair (forgets the failed run)"
            )


def _ignore_event(event, migration, duration_ms):
    pass


def _version_number(text, files):
    known = {f.number for f in files}
    number = _parse_version(text)
    if number not in known:
        raise UnknownVersion(
            f"--to {text}: no migration has that version "
            f"(known: {', '.join(f.version for f in files) or 'none'})"
        )
    return number


def _rollback_target(text, applied_newest_first):
    number = _parse_version(text)
    if number != 0 and number not in {f.number for f in applied_newest_first}:
        applied = ", ".join(f.version for f in reversed(applied_newest_first)) or "none"
        raise UnknownVersion(
            f"--to {text}: not an applied migration (applied: {applied}; 0 rolls back all)"
        )
    return number


def _parse_version(text):
    head = str(text).split("_", 1)[0]
    if not head.isdigit():
        raise UnknownVersion(f"--to {text}: a version is a number such as 002")
    return int(head)


def _refuse_out_of_order(pending, newest_applied):
    late = [f for f in pending if f.number < newest_applied]
    if late:
        raise OutOfOrderError(
            f"{late[0].path}: pending, but numbered below {newest_applied:03d} which is "
            "already applied (a merged branch?); renumber it, or run with --allow-out-of-order"
        )
