"""The checks of db.health, in the order they are shown.

A check is a function of a Context returning Findings (none where it means nothing: no
replica configured, an engine that does not keep the number). What a server keeps about
itself is read in db/health/server.py; what the toolkit keeps (backups, replicas,
migrations, counters) is read here. A check that fails to measure gives one UNKNOWN
finding naming why, and the others still run.
"""

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import peewee

from db.access import as_system
from db.errors import BackupError, DbError, one_line
from db.health import CRITICAL, OK, UNKNOWN, WARNING, Finding, HealthReport
from db.health import server as measure
from db.health.thresholds import read_expected_standbys, read_limits
from db.schedule import format_age, utc_moment
from db.target import Target

COUNTER_SAMPLE = 100  # parent rows whose trigger-kept counter is recounted


@dataclass
class Context:
    """What every check may read: the settings, the opened database (None when it does
    not answer), its engine, the limits and the moment the checks started."""

    settings: object
    target: object
    database: object
    limits: dict
    expected_standbys: int
    now: object

    @property
    def engine(self):
        return self.target.engine


def run_checks(settings, now=None):
    """Run every check on the configured database; return a HealthReport."""
    context = Context(
        settings,
        Target(settings.url),
        None,
        read_limits(settings.health),  # a bad setting is refused before anything is measured
        read_expected_standbys(settings.health),
        now or utc_moment(),
    )
    findings = list(with_database(context))
    for check in FILE_CHECKS:
        findings.extend(checked(check, context))
    return HealthReport(context.target.masked_url, context.engine.name, tuple(findings))


def with_database(context):
    """Yield whether the database answers, and how fast (connecting and one query), then
    the findings of the checks that read it; none of those when it does not answer."""
    started = time.perf_counter()
    try:
        if not context.target.exists:
            yield Finding(
                "response_time", CRITICAL, "does not exist", detail="invoke db.setup creates it"
            )
            return
        with context.target.opened() as database, as_system():
            database.execute_sql("SELECT 1").fetchone()
            seconds = time.perf_counter() - started
            yield judged(
                context, "response_time", seconds, f"{seconds * 1000:.0f}ms",
                metric="response_seconds",
            )  # fmt: skip
            context.database = database
            for check in DATABASE_CHECKS:
                yield from checked(check, context)
    except (DbError, peewee.DatabaseError) as exc:
        if context.database is not None:
            raise  # the checks catch their own: this is not the database failing to answer
        yield Finding("response_time", CRITICAL, "no answer", detail=one_line(exc))
    finally:
        context.database = None


def checked(check, context):
    """Return the check's findings, or one UNKNOWN finding saying why it could not measure."""
    try:
        return [finding for finding in check(context) if finding is not None]
    except (DbError, peewee.DatabaseError, OSError) as exc:
        return [Finding(check.__name__, UNKNOWN, "not measured", detail=one_line(exc))]


def judged(context, check, value, shown, detail="", metric=None, subject=""):
    """Return the Finding of ``value`` against the check's limits."""
    limit = context.limits.get(check)
    state = (limit.crossed(value) if limit else None) or OK
    return Finding(check, state, shown, value, limit, detail, metric, subject)


def enabled(context, check):
    return not context.limits[check].off


def measured(context, check, reader):
    """Return what ``reader`` (db/health/server.py) measures on the database, or None when
    its engine keeps no such number or the check is off."""
    return reader(context.engine, context.database) if enabled(context, check) else None


# --- what the toolkit keeps ------------------------------------------------------------


def migrations(context):
    """Pending migrations warn; changed, missing or failed ones are critical."""
    from db.runner import APPLIED, PENDING, Runner

    runner = Runner(context.database, context.settings.migrations_dir, engine=context.engine)
    states = [row.state for row in runner.status() if row.state != APPLIED]
    invalid = context.engine.invalid_indexes(context.database)
    if not states and not invalid:
        yield Finding("migrations", OK, "up to date", 0, metric="migrations_not_applied")
        return
    counted = [f"{states.count(s)} {s}" for s in dict.fromkeys(states)]
    if invalid:
        counted.append(f"{len(invalid)} invalid index{'es' if len(invalid) > 1 else ''}")
    state = WARNING if set(states) <= {PENDING} and not invalid else CRITICAL
    advice = "invoke db.migrate applies them" if state == WARNING else "db.status shows which"
    yield Finding(
        "migrations", state, ", ".join(counted), len(states) + len(invalid),
        detail=advice, metric="migrations_not_applied",
    )  # fmt: skip


def backup_age(context):
    """The newest verified backup of this database in the backups folder."""
    from db import backups

    if not enabled(context, "backup_age"):
        return
    owner = backups.current_owner(context.settings.url)
    folder = context.settings.backups_dir
    newest = backups.newest_verified(folder, owner)
    if newest is None:
        yield Finding(
            "backup_age", CRITICAL, "no verified backup", limit=context.limits["backup_age"],
            detail=f"in {folder}: invoke db.backup --verify takes one", metric="backup_age_seconds",
        )  # fmt: skip
        return
    age = (context.now - backups.created_moment(newest)).total_seconds()
    yield judged(context, "backup_age", age, _age(age), str(newest.path), "backup_age_seconds")


def replica_age(context):
    """How old the newest moment the continuous replica (db.replica) can restore is."""
    from db.pitr import continuous_protection

    if context.settings.replica is None or not enabled(context, "replica_age"):
        return
    try:
        span = continuous_protection(context.engine).recoverable_range(context.settings)
    except BackupError as exc:  # configured, and nothing to restore from
        yield Finding(
            "replica_age", CRITICAL, "nothing recoverable", limit=context.limits["replica_age"],
            detail=one_line(exc), metric="replica_age_seconds",
        )  # fmt: skip
        return
    age = max(0.0, (context.now - span.end).total_seconds())
    yield judged(
        context, "replica_age", age, _age(age), f"recoverable up to {span.end:%Y-%m-%d %H:%M:%S}",
        "replica_age_seconds",
    )  # fmt: skip


def counters(context):
    """The counters the triggers keep (tags.count, ...), recounted on a sample of rows."""
    from db.models import COUNTED_ROWS, bind_models

    if not enabled(context, "counters"):
        return
    bind_models(context.database)
    wrong = []
    for counter, child_key in COUNTED_ROWS:
        wrong += _miscounted(context, counter, child_key)
    yield judged(
        context, "counters", len(wrong), f"{len(wrong)} wrong", "; ".join(wrong[:3]),
        "counters_wrong",
    )  # fmt: skip


def _miscounted(context, counter, child_key):
    parent = counter.model
    random = peewee.fn.RAND() if context.engine.key == "mysql" else peewee.fn.RANDOM()
    sample = [row.id for row in parent.select(parent.id).order_by(random).limit(COUNTER_SAMPLE)]
    real = (
        child_key.model.select(peewee.fn.COUNT(peewee.SQL("*")))
        .where(child_key == parent.id)
    )  # fmt: skip
    rows = parent.select(parent.id, counter, real.alias("real")).where(parent.id.in_(sample))
    table = parent._meta.table_name
    return [
        f"{table}.{counter.column_name} of id {row.id} is {getattr(row, counter.name)}, "
        f"not {row.real}"
        for row in rows.objects()
        if getattr(row, counter.name) != row.real
    ]


# --- what the server keeps ---------------------------------------------------------------


def replication(context):
    """Standbys that should stream and do not are critical; lag against its limits."""
    state = context.engine.replication(context.database)
    if state is None:
        return
    if state.role == "standby":
        yield from _standby_lag(context, state)
        return
    yield from _primary_standbys(context, state)
    for slot in measure.inactive_slots(context.engine, context.database):
        yield Finding(
            "replication", CRITICAL, "slot inactive", detail=f"replication slot {slot!r} has no "
            "standby connected: the primary keeps its WAL until one reconnects or it is dropped",
            subject=slot,
        )  # fmt: skip


def _primary_standbys(context, state):
    streaming = [s for s in state.standbys if s.state == "streaming"]
    expected = context.expected_standbys
    if expected or state.standbys:
        missing = max(0, expected - len(streaming))
        names = ", ".join(f"{s.name or s.address} ({s.state})" for s in state.standbys)
        of_expected = f" of {expected}" if expected else ""
        yield Finding(
            "standbys", CRITICAL if missing else OK, f"{len(streaming)}{of_expected} streaming",
            len(streaming), detail=names or "no standby connected", metric="standbys_streaming",
        )  # fmt: skip
    for standby in state.standbys:
        if standby.lag_seconds is not None and enabled(context, "replication_lag"):
            yield judged(
                context, "replication_lag", standby.lag_seconds, _age(standby.lag_seconds),
                f"standby {standby.name or standby.address}", "replication_lag_seconds",
                standby.name or standby.address or "",
            )  # fmt: skip


def _standby_lag(context, state):
    if state.halted:
        yield Finding(
            "replication_lag", CRITICAL, "not replicating", detail=state.halted,
            metric="replication_lag_seconds",
        )  # fmt: skip
        return
    if state.lag_seconds is None:
        yield Finding(
            "replication_lag", UNKNOWN, "not known", detail=f"standby of {state.primary}",
            metric="replication_lag_seconds",
        )  # fmt: skip
        return
    yield judged(
        context, "replication_lag", state.lag_seconds, _age(state.lag_seconds),
        f"standby of {state.primary}", "replication_lag_seconds",
    )  # fmt: skip


def connections(context):
    """Connections in use against the server's maximum."""
    used = measured(context, "connections", measure.connections_in_use)
    if used is None:
        return
    count, maximum = used
    share = count / maximum if maximum else 0.0
    yield judged(
        context, "connections", share, f"{share:.0%}", f"{count} of {maximum}",
        "connections_used_ratio",
    )  # fmt: skip


def transaction_age(context):
    """The longest open transaction on this database (it holds back vacuum and locks)."""
    oldest = measured(context, "transaction_age", measure.oldest_transaction)
    if oldest is None:
        return
    seconds, session = oldest
    yield judged(
        context, "transaction_age", seconds, _age(seconds), session or "no open transaction",
        "longest_transaction_seconds",
    )  # fmt: skip


def idle_in_transaction(context):
    """Sessions that opened a transaction and went quiet: they hold locks all the while."""
    idle = measured(context, "idle_in_transaction", measure.idle_in_transaction)
    if idle is None:
        return
    count, seconds, session = idle
    yield judged(
        context, "idle_in_transaction", seconds, f"{count} idle, longest {_age(seconds)}",
        session or "", "idle_in_transaction_seconds",
    )  # fmt: skip


def lock_wait(context):
    """Sessions waiting for a lock, and the longest wait (db.locks shows who blocks whom)."""
    from db.locks import lock_waits

    if not enabled(context, "lock_wait") or context.engine.key == "sqlite":
        return  # SQLite's waiters retry in their busy handler: nothing lists them
    waits = sorted(
        lock_waits(context.engine, context.database), key=lambda wait: -(wait.seconds or 0)
    )
    longest = (waits[0].seconds or 0.0) if waits else 0.0
    detail = "; ".join(
        f"session {w.session} waits on {', '.join(map(str, w.blocked_by)) or 'an unknown session'}"
        for w in waits[:3]
    )
    yield judged(
        context, "lock_wait", longest, f"{len(waits)} waiting, longest {_age(longest)}",
        f"{detail} (invoke db.locks)" if detail else "", "lock_wait_seconds",
    )  # fmt: skip


def bloat(context):
    """Dead rows (PostgreSQL), free pages (SQLite), fragmentation (InnoDB): the worst table."""
    found = measured(context, "bloat", measure.bloat)
    if found is None:
        return
    share, where = found
    yield judged(context, "bloat", share, f"{share:.0%}", where, "bloat_ratio")


def cache_hit(context):
    """The share of reads served from the server's memory."""
    found = measured(context, "cache_hit", measure.cache_hits)
    if found is None:
        return
    hits, reads = found
    if reads < measure.CACHE_READS_TO_JUDGE:
        yield Finding(
            "cache_hit", OK, "too few reads to judge", detail=f"{reads:,} reads since the "
            "statistics were reset", metric="cache_hit_ratio",
        )  # fmt: skip
        return
    share = hits / reads
    yield judged(context, "cache_hit", share, f"{share:.1%}", f"{reads:,} reads", "cache_hit_ratio")


def unused_indexes(context):
    """Indexes the server saw no use of since its statistics were reset (not unique ones),
    on tables the app did read: a table not read yet tells nothing about its indexes."""
    from db.stats import stats_reader

    if not enabled(context, "unused_indexes"):
        return
    reader = stats_reader(context.engine, context.settings.url)
    if not reader.counts_usage(context.database):
        return
    reads = measure.table_reads(context.engine, context.database)
    read_tables = sorted(t for t, n in reads.items() if n >= measure.TABLE_READS_TO_JUDGE)
    unused = [
        f"{index.name} on {table}"
        for table in read_tables
        for index in reader.indexes(context.database, table)
        if index.unused
    ]
    yield judged(
        context, "unused_indexes", len(unused), f"{len(unused)} unused",
        ", ".join(unused[:5]) or f"every index of the {len(read_tables)} tables read "
        f"{measure.TABLE_READS_TO_JUDGE:,} times or more was used", "unused_indexes",
    )  # fmt: skip


def index_scans(context):
    """The app's typical queries (db.explain --builtin) that read a large table whole."""
    from db.explain import explain_builtin

    if not enabled(context, "index_scans"):
        return
    report = explain_builtin(context.database)
    scans = [f"{query.name}: {query.verdict}" for query in report.full_scans]
    yield judged(
        context, "index_scans", len(scans), f"{len(scans)} of {len(report.queries)} queries",
        "; ".join(scans[:2]) or "every typical query uses an index", "queries_full_scans",
    )  # fmt: skip


# --- the disks ---------------------------------------------------------------------------


def disk_free(context):
    """The free share of each disk where the database, its backups and replica live."""
    if not enabled(context, "disk_free"):
        return
    for role, folder in _local_folders(context):
        usage = shutil.disk_usage(folder)
        share = usage.free / usage.total if usage.total else 0.0
        yield judged(
            context, "disk_free", share, f"{share:.0%}",
            f"{role}: {folder} ({usage.free / 2**30:.1f} GiB free)", "disk_free_ratio", role,
        )  # fmt: skip


def _local_folders(context):
    """Yield (role, folder) for the places on this machine the checks can see, one per disk."""
    places = [("backups", context.settings.backups_dir)]
    if context.engine.key == "sqlite":
        from db.engines.sqlite import sqlite_path

        places.insert(0, ("database", Path(sqlite_path(context.settings.url)).parent))
    replica = context.settings.replica
    if replica and "://" not in str(replica):
        places.append(("replica", Path(replica)))
    seen = set()
    for role, folder in places:
        folder = _existing_ancestor(Path(folder))
        disk = folder.stat().st_dev
        if disk not in seen:
            seen.add(disk)
            yield role, folder


def _existing_ancestor(path):
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def _age(seconds):
    import datetime

    return format_age(datetime.timedelta(seconds=seconds))


DATABASE_CHECKS = (
    migrations, replication, connections, transaction_age, idle_in_transaction, lock_wait, bloat,
    cache_hit, counters, unused_indexes, index_scans,
)  # fmt: skip
FILE_CHECKS = (backup_age, replica_age, disk_free)
