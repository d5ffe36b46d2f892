"""Everything the tasks show a person or a pipeline, formatted in one place."""

import datetime
import json

from db.errors import printable
from db.schedule import format_age

PROGRESS_LINES = 10  # without a terminal, a line per tenth of the work


# The runner's events for a step that ran no SQL statement at all (an unedited skeleton,
# or a migration with nothing to do on this engine), and the step each one names.
EMPTY_STEP = {"applied-empty": "up", "reverted-empty": "down"}


def progress_line(event, migration, duration_ms):
    """Return one progress line for a runner event."""
    if duration_ms is None:
        return f"{event} {migration.name} ..."
    if event == "retrying":
        seconds = duration_ms // 1000
        return f"{migration.name} waited too long for a lock; trying again in {seconds} s"
    if event in EMPTY_STEP:
        done = event.removesuffix("-empty")
        return f"{done} {migration.name} ({duration_ms} ms; its {EMPTY_STEP[event]} ran no SQL)"
    return f"{event} {migration.name} ({duration_ms} ms)"


def migrated(names, dry_run=False, noun="migrations"):
    """Return the closing line of db.migrate / db.setup."""
    if not names:
        return "already up to date: no pending migrations"
    if dry_run:
        return f"dry run: would apply {len(names)} {noun}: {', '.join(names)} (nothing changed)"
    return f"applied {len(names)} {noun}"


def rolled_back(names, dry_run=False):
    """Return the closing line of db.rollback."""
    if not names:
        return "nothing to roll back: no migration is applied"
    if dry_run:
        return f"dry run: would roll back {', '.join(names)} (nothing changed)"
    return f"rolled back {len(names)} migration(s)"


def seeded(result):
    """Return the closing lines of db.seed."""
    lines = [f"seeded {len(result.applied)} seeder(s)" if result.applied else "nothing to seed"]
    lines += [
        f"skipped {name}: changed since it was seeded (db.seed --force re-runs it)"
        for name in result.skipped_changed
    ]
    lines += _skipped_sample(result.skipped_sample)
    return "\n".join(lines)


def set_up(result):
    """Return the closing line of db.setup."""
    if not result.migrations and not result.seeders:
        line = "already set up: nothing to do"
    else:
        line = (
            f"set up: applied {len(result.migrations)} migration(s), "
            f"ran {len(result.seeders)} seeder(s)"
        )
    return "\n".join([line, *_skipped_sample(result.skipped_sample)])


def _skipped_sample(names):
    """Return the line naming the sample seeders --no-sample left out (none if none)."""
    if not names:
        return []
    return [f"skipped {len(names)} sample seeder(s) (--no-sample): {', '.join(names)}"]


def reset_done(tables, data_only):
    """Return the closing line of db.reset."""
    if not tables:
        return "nothing to reset: the database has no tables"
    if data_only:
        return f"emptied {len(tables)} table(s); schema and migration history kept"
    return f"dropped {len(tables)} table(s); db.setup rebuilds the database"


def repaired(names):
    """Return the closing line of db.repair."""
    if not names:
        return "nothing to repair: no failed migration is recorded"
    return f"forgot the failed run of {', '.join(names)}; db.migrate will run it again"


def backed_up(result):
    """Return the closing lines of db.backup."""
    info = result.backup
    lines = [f"backup: {info.path} ({_backup_summary(info)})"]
    lines += [f"pruned: {path}" for path in result.pruned]
    return "\n".join(lines)


def restored(result):
    """Return the closing lines of db.restore."""
    lines = []
    if result.safety:
        lines.append(f"safety backup of the replaced database: {result.safety.path}")
    lines.append(
        f"restored {result.path} (schema {result.manifest['schema_version']}, "
        f"{sum(result.manifest['row_counts'].values()):,} rows); db.migrate brings it forward"
    )
    return "\n".join(lines)


def verified(info):
    """Return the closing line of db.verify."""
    return f"OK: {info.path} ({_backup_summary(info)})"


def backups_table(listing):
    """Return db.backups: one line per backup, newest first; with --all, whose each is."""
    infos, everyone = listing.backups, listing.owner is None
    if not infos:
        return "no backups" if everyone else f"no backups of {listing.owner.describe()}"
    heading = f"{'created (UTC)':<20} {'size':>10} {'schema':<7} {'verified':<9} file"
    lines = [heading + ("  database" if everyone else "")]
    for info in infos:
        manifest = info.manifest or {}
        # A manifest is a file anyone with the folder may have written: shown, not obeyed.
        created = printable(manifest.get("created_at") or "?")[:19].replace("T", " ")
        size = _size(info.path.stat().st_size)
        schema = printable(manifest.get("schema_version") or "-")[:7]
        state = "yes" if info.verified else ("no manifest" if not info.manifest else "no")
        line = f"{created:<20} {size:>10} {schema!s:<7} {state:<9} {info.path.name}"
        if everyone:
            from db.backups.owner import Owner  # db.backups: only where backups are shown

            owner = Owner.from_manifest(info.manifest)
            line += f"  {printable(owner.describe()) if owner else '?'}"
        lines.append(line)
    return "\n".join(lines)


def recent_enough(info, limit):
    """Return the line of db.backups --max-age when the newest verified backup is young
    enough."""
    return f"OK: the newest verified backup is younger than {format_age(limit)}: {info.path.name}"


def restore_question(plan):
    """Return what db.restore asks to confirm: the backup, and whose it is when it is not
    the configured database's own."""
    question = f"replace {plan.target.short_name} with {plan.path}"
    if plan.foreign:
        whose = printable(plan.backup_of.describe()) if plan.backup_of else "an unknown database"
        question += f", a backup of another database ({whose})"
    return question


def _backup_summary(info):
    manifest = info.manifest
    rows = sum(manifest["row_counts"].values())
    verified_note = ", verified" if info.verified else ""
    size = _size(manifest["size"])
    if manifest.get("compressed") and manifest.get("content_size"):
        size += f" zstd of {_size(manifest['content_size'])}"
    if manifest.get("encrypted"):
        size += ", age-encrypted"
    return f"{size}, {rows:,} rows, schema {manifest['schema_version']}{verified_note}"


def _size(count):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"


def status_table(report):
    """Return db.status as text: the database, its version, one line per migration."""
    lines = [f"database: {report.url}"]
    if not report.exists:
        lines.append("(the database does not exist yet; db.setup creates it)")
    if report.incomplete_transfer:
        lines.append(_incomplete_transfer(report.incomplete_transfer))
    lines += replication_lines(report.replication)
    lines.append(f"current version: {report.current_version or 'none'}")
    lines.append("")
    lines.append(f"{'version':<8} {'state':<8} {'applied at (UTC)':<20} {'ms':>6}  name")
    for m in report.migrations:
        applied_at = _when(m.applied_at)
        duration = "-" if m.duration_ms is None else str(m.duration_ms)
        lines.append(f"{m.version:<8} {m.state:<8} {applied_at:<20} {duration:>6}  {m.name}")
        if m.error:
            lines.append(f"{'':<8} error: {m.error}")
        if m.version in report.baselines:
            lines.append(f"{'':<8} baseline: {printable(report.baselines[m.version])}")
    if not report.migrations:
        lines.append("(no migrations)")
    lines.append("")
    lines.append(f"{'seeder':<28} {'state':<8} {'seeded at (UTC)':<20} kind")
    for seeder in report.seeders:
        lines.append(
            f"{seeder.name:<28} {seeder.state:<8} {_when(seeder.applied_at):<20} "
            f"{seeder.kind or '-'}"
        )
    if not report.seeders:
        lines.append("(no seeders)")
    for index, table in report.invalid_indexes:
        lines.append(invalid_index_line(index, table))
    lines.append("")
    lines.append("up to date" if report.up_to_date else "NOT up to date")
    return "\n".join(line.rstrip() for line in lines)


def replication_lines(replication):
    """Return db.status's lines on the server's role: a primary's standbys with their lag,
    or a standby's primary and its own lag (none where the engine says nothing)."""
    if replication is None:
        return []
    if replication.role == "standby":
        primary = printable(replication.primary or "an unknown primary")
        lag = _lag(replication.lag_bytes, replication.lag_seconds)
        return [f"replication: read-only standby of {primary}, {lag}"]
    count = len(replication.standbys)
    lines = [f"replication: primary, {count} standby" + ("" if count == 1 else "s")]
    for standby in replication.standbys:
        address = f" ({standby.address})" if standby.address else ""
        lag = _lag(standby.lag_bytes, standby.lag_seconds)
        lines.append(f"  standby {printable(standby.name)}{address}: {standby.state}, {lag}")
    return lines


def _lag(lag_bytes, lag_seconds):
    in_bytes = "?" if lag_bytes is None else f"{lag_bytes:,} bytes"
    in_seconds = "?" if lag_seconds is None else f"{lag_seconds:.1f} s"
    return f"lag {in_bytes}, {in_seconds}"


def invalid_index_line(index, table):
    """Return the line about an index a failed CREATE INDEX CONCURRENTLY left invalid."""
    return (
        f"INVALID INDEX {index} on {table}: a concurrent build failed and left it unused but "
        f"kept up to date; DROP INDEX CONCURRENTLY {index}, then run its migration again"
    )


def _when(moment):
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _incomplete_transfer(info):
    return (
        f"INCOMPLETE TRANSFER from {info.source} (started {_when(info.started_at)} UTC): "
        "do not use it; run invoke db.transfer --force again or invoke db.reset"
    )


JSON_FORMAT_VERSION = 1  # bumped when a field of a --json output changes meaning or goes


def json_document(fields, indent=2):
    """Return a --json output: the fields after the format version, indented (on one line
    with ``indent`` None)."""
    return json.dumps({"format_version": JSON_FORMAT_VERSION, **fields}, indent=indent)


def utc_iso(moment):
    """Return a time as ISO 8601 with its UTC offset; the history stores naive UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.isoformat()


def status_json(report):
    """Return db.status as stable JSON."""
    return json_document(
        {
            "database": report.url,
            "exists": report.exists,
            "current_version": report.current_version,
            "up_to_date": report.up_to_date,
            "incomplete_transfer": _incomplete_transfer_json(report.incomplete_transfer),
            "replication": _replication_json(report.replication),
            "migrations": [
                {
                    "version": m.version,
                    "name": m.name,
                    "state": m.state,
                    "applied_at": utc_iso(m.applied_at),
                    "duration_ms": m.duration_ms,
                    "error": m.error,
                    "baseline": report.baselines.get(m.version),  # db.baseline's note, or null
                }
                for m in report.migrations
            ],
            "invalid_indexes": [
                {"index": index, "table": table} for index, table in report.invalid_indexes
            ],
            "seeders": [
                {
                    "name": seeder.name,
                    "state": seeder.state,
                    "applied_at": utc_iso(seeder.applied_at),
                    "kind": seeder.kind,  # essential or sample; null for a missing file
                }
                for seeder in report.seeders
            ],
        }
    )


def _replication_json(replication):
    """Return the server's role (null where the engine gives none): a primary's standbys,
    or a standby's primary; lag in bytes and seconds (null when not measured)."""
    if replication is None:
        return None
    if replication.role == "standby":
        return {
            "role": "standby",
            "primary": replication.primary,
            "lag_bytes": replication.lag_bytes,
            "lag_seconds": replication.lag_seconds,
        }
    return {
        "role": "primary",
        "standbys": [standby._asdict() for standby in replication.standbys],
    }


def _incomplete_transfer_json(info):
    if info is None:
        return None
    return {"source": info.source, "started_at": utc_iso(info.started_at)}


def transferred(result):
    """Return the closing lines of db.transfer: rows per table, the rate, the proof."""
    lines = [f"  {table:<20} {count:>12,}" for table, count in result.rows.items()]
    rate = result.total_rows / result.seconds if result.seconds else 0
    lines.append(
        f"transferred {result.total_rows:,} rows to {result.target} in {result.seconds:.1f} s "
        f"({rate:,.0f} rows/s); checksums match"
    )
    return "\n".join(lines)


def populated(result):
    """Return the closing lines of db.populate: rows per table and the rate."""
    lines = [f"  {table:<20} {count:>12,}" for table, count in result.rows.items()]
    rate = result.total_rows / result.seconds if result.seconds else 0
    lines.append(
        f"populated {result.total_rows:,} rows in {result.seconds:.1f} s ({rate:,.0f} rows/s)"
    )
    return "\n".join(lines)


class StageProgress:
    """Show the progress of work done in stages, each stage as a ProgressPrinter."""

    def __init__(self, on_terminal):
        self.on_terminal = on_terminal
        self.printers = {}

    def __call__(self, stage, done, total):
        if stage not in self.printers:
            self.printers[stage] = ProgressPrinter(stage, self.on_terminal)
        self.printers[stage](done, total)


class ProgressPrinter:
    """Show progress: a bar on a terminal, otherwise a plain line every tenth of the work."""

    def __init__(self, what, on_terminal):
        self.what = what
        self.on_terminal = on_terminal
        self.bar = None
        self.lines_printed = 0

    def __call__(self, done, total):
        if self.on_terminal:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit=f" {self.what}", unit_scale=True)
            self.bar.update(done - self.bar.n)
            if done >= total:
                self.bar.close()
        elif total and done * PROGRESS_LINES // total >= self.lines_printed:
            print(f"{self.what}: {done:,}/{total:,} ({done / total:.0%})", flush=True)
            self.lines_printed = done * PROGRESS_LINES // total + 1


def schema_dumped(result):
    """Return what db.schema shows: the SQL itself, or where it was written."""
    if result.path is None:
        return result.sql.rstrip("\n")
    return f"schema of {result.tables} tables written to {result.path} ({_size(len(result.sql))})"


def optimized(result):
    """Return the closing lines of db.optimize: what ran, and the space it gave back."""
    lines = [
        f"  {size.table:<20} {_size(size.before):>10} -> {_size(size.after):>10}"
        for size in result.tables
    ]
    lines += [
        f"  {message.table:<20} {message.operation}: {message.kind}: {message.text}"
        for message in result.messages
    ]
    what = "file" if result.free_pages else "tables"
    summary = (
        f"{result.engine}: ran {', '.join(result.steps)}; {what} "
        f"{_size(result.size_before)} -> {_size(result.size_after)} "
        f"({_change(result.reclaimed)})"
    )
    if result.free_pages:
        summary += f"; free pages {result.free_pages[0]:,} -> {result.free_pages[1]:,}"
    lines.append(summary)
    return "\n".join(lines)


def _change(reclaimed):
    if reclaimed < 0:  # ANALYZE's statistics take room of their own
        return f"{_size(-reclaimed)} more"
    return f"{_size(reclaimed)} reclaimed"


def stats_table(stats):
    """Return db.stats as text: the database's size, then each table and its indexes."""
    free = "n/a" if stats.free_bytes is None else _size(stats.free_bytes)
    wal = "" if stats.wal_bytes is None else f", WAL {_size(stats.wal_bytes)}"
    lines = [f"database: {stats.database}"]
    lines.append(f"{stats.engine}: {_size(stats.size_bytes)}, free {free}{wal}")
    lines.append(f"latest backup: {_backup_age(stats.latest_backup)}")
    lines.append("")
    lines.append(f"{'table':<22} {'rows':>12} {'data':>11} {'indexes':>11}")
    for table in stats.tables:
        lines.append(
            f"{table.name:<22} {table.rows:>12,} {_size_or_na(table.data_bytes):>11} "
            f"{_size_or_na(table.index_bytes):>11}{DERIVED_MARK if table.derived else ''}"
        )
        lines += [f"  {_index_line(index)}".rstrip() for index in table.indexes]
    lines.append("")
    if stats.index_usage:
        lines.append(f"index uses: {_USAGE[stats.index_usage]}")
    lines += [f"note: {note}" for note in stats.notes]
    return "\n".join(lines)


_USAGE = {
    "idx_scan": "scans since the statistics were reset (pg_stat_user_indexes.idx_scan)",
    "rows_read": "rows read through the index (information_schema.INDEX_STATISTICS)",
}


EXPRESSION = "(expression)"  # an index's column that is an expression, as db.check says
DERIVED_MARK = "  derived"  # a search table the triggers fill (db.search.DERIVED_TABLES)


def _index_line(index):
    kind = "primary" if index.primary else ("unique" if index.unique else "")
    # An expression (005's lower(name)) has no column: SQLite's catalogue names none.
    columns = (EXPRESSION if column is None else column for column in index.columns)
    named = f"{index.name} ({', '.join(columns)})"
    size = "" if index.size_bytes is None else _size(index.size_bytes)
    uses = "" if index.uses is None else f"{index.uses:,} uses"
    flag = "NEVER USED" if index.unused else ""
    return f"{named:<58} {kind:<7} {size:>10} {uses:>12} {flag}"


def _size_or_na(count):
    return "n/a" if count is None else _size(count)


def _backup_age(backup):
    if backup is None:
        return "no backups"
    minutes = int(backup.age_seconds // 60)
    if minutes < 1:
        age = "less than a minute"
    elif minutes < 120:
        age = f"{minutes} min"
    elif minutes < 48 * 60:
        age = f"{minutes // 60} h"
    else:
        age = f"{minutes // (24 * 60)} days"
    return f"{age} ago ({backup.path.name})"


def stats_json(stats):
    """Return db.stats as stable JSON."""
    backup = stats.latest_backup
    return json_document(
        {
            "database": stats.database,
            "engine": stats.engine_key,  # the key, as manifests name it
            "size_bytes": stats.size_bytes,
            "free_bytes": stats.free_bytes,
            "wal_bytes": stats.wal_bytes,
            "index_usage": stats.index_usage,
            "tables": [
                {
                    "name": table.name,
                    "rows": table.rows,
                    "data_bytes": table.data_bytes,
                    "index_bytes": table.index_bytes,
                    "derived": table.derived,
                    "indexes": [
                        {
                            "name": index.name,
                            "columns": index.columns,
                            "primary": index.primary,
                            "unique": index.unique,
                            "size_bytes": index.size_bytes,
                            "uses": index.uses,
                            "unused": index.unused,
                        }
                        for index in table.indexes
                    ],
                }
                for table in stats.tables
            ],
            "latest_backup": None
            if backup is None
            else {
                "path": str(backup.path),
                "created_at": utc_iso(backup.created_at),
                "age_seconds": round(backup.age_seconds),
            },
            "notes": stats.notes,
        }
    )


def top_table(report):
    """Return db.top as text: one line per statement, most total time first."""
    lines = [f"database: {report.database}", f"from: {report.source}"]
    if report.note:
        return "\n".join([*lines, f"note: {report.note}"])
    if not report.statements:
        return "\n".join([*lines, "no statements recorded yet"])
    lines.append(
        f"{'total ms':>12} {'calls':>9} {'mean ms':>10} {'max ms':>10} {'rows':>10}  statement"
    )
    for s in report.statements:
        text = s.statement if len(s.statement) <= 120 else s.statement[:119] + "…"
        lines.append(
            f"{s.total_ms:>12,.1f} {s.calls:>9,} {s.mean_ms:>10,.2f} {s.max_ms:>10,.2f} "
            f"{s.rows:>10,}  {text}"
        )
    return "\n".join(lines)


def top_json(report):
    """Return db.top as stable JSON (statements in full, times in milliseconds)."""
    return json_document(
        {
            "database": report.database,
            "engine": report.engine_key,
            "source": report.source,
            "statements": [
                {
                    "statement": s.statement,
                    "calls": s.calls,
                    "total_ms": round(s.total_ms, 3),
                    "mean_ms": round(s.mean_ms, 3),
                    "max_ms": round(s.max_ms, 3),
                    "rows": s.rows,
                }
                for s in report.statements
            ],
            "note": report.note,
        }
    )


_RESET_SCOPE = {
    "database": "this database's statement statistics cleared",
    "server": "the whole server's statement statistics cleared "
    "(performance_schema keeps them for every database in one table)",
    "file": "the recorder's statement statistics cleared",
}


def top_reset(reset):
    """Return what db.top --reset cleared, in a line."""
    if not reset.cleared:
        return f"nothing to clear: no {reset.source}"
    return f"{_RESET_SCOPE[reset.scope]}: {reset.database} ({reset.source})"


def top_reset_json(reset):
    """Return db.top --reset as stable JSON."""
    return json_document(
        {
            "database": reset.database,
            "source": reset.source,
            "scope": reset.scope,
            "cleared": reset.cleared,
        }
    )


def explained(report):
    """Return db.explain as text: each query's plan and what it flags, then the verdict."""
    lines = []
    for query in report.queries:
        if query.name is None:
            lines.append(f"{report.engine} plan:")
            lines += [f"  {line}" for line in query.plan]
            lines += [str(finding) for finding in query.findings]
            if not query.findings:
                lines.append(query.verdict)
            continue
        lines.append(f"{query.name:<22} {query.verdict}")
        lines += [
            f"{'':<22} {finding}" for finding in query.findings if finding.kind != "full scan"
        ]
    if len(report.queries) > 1:
        scans = len(report.full_scans)
        lines.append(
            f"{report.engine}: {len(report.queries)} queries, "
            + (
                f"{scans} with a full scan of a large table"
                if scans
                else "no full scan of a large table"
            )
        )
    return "\n".join(lines)


def adopted(adoption):
    """Return the closing lines of db.baseline."""
    if adoption.finished:
        return (
            "finished an interrupted db.baseline: its new history was in place; "
            "the seed era's tables it had set aside are dropped"
        )
    lines = []
    if adoption.kept or adoption.seeders:
        lines.append(
            f"converted the seed era's history: kept {len(adoption.kept)} migration row(s) "
            f"({', '.join(adoption.kept) or 'none'}) and {len(adoption.seeders)} seeder row(s)"
        )
    lines.append(
        f"adopted: recorded {len(adoption.recorded)} migration(s) as a baseline at "
        f"{adoption.version} ({', '.join(adoption.recorded)}); db.migrate applies what follows"
    )
    return "\n".join(lines)


IN_STEP = "in step with the models and migrations"


def checked(differences):
    """Return db.check's lines: each difference, or that the database is in step."""
    if not differences:
        return IN_STEP
    return "\n".join(difference.detail for difference in differences)


def checked_json(differences):
    """Return db.check as stable JSON."""
    return json_document(
        {
            "in_step": not differences,
            "differences": [
                {"kind": d.kind, "table": d.table, "detail": d.detail} for d in differences
            ],
        }
    )


def migration_sql(result):
    """Return what db.migrate --sql prints: each pending migration's SQL under a comment
    saying how it runs, atomic steps between BEGIN; and COMMIT; (where DDL is transactional)."""
    from db.timeouts import describe

    if not result.migrations:
        return "-- nothing to apply: no pending migrations"
    names = ", ".join(item.migration.name for item in result.migrations)
    lines = [
        f"-- the SQL of {len(result.migrations)} pending migration(s) on {result.engine.name} "
        f"({result.url}): {names}; nothing was applied",
    ]
    for item, limits in zip(result.migrations, result.limits, strict=True):
        transactional = item.options.atomic and result.engine.transactional_ddl
        if transactional:
            how = "in a transaction"
        elif item.options.atomic:
            how = f"in a transaction, but {result.engine.name} commits each schema change"
        else:
            how = "outside a transaction: each statement commits as it runs"
        lines += [
            "",
            f"-- {item.migration.path.name}: {how}; lock timeout {describe(limits.lock)}, "
            f"statement timeout {describe(limits.statement)}",
        ]
        if not item.statements:
            lines.append("-- (no SQL on this engine)")
            continue
        body = [statement.sql.rstrip().rstrip(";") + ";" for statement in item.statements]
        lines += ["BEGIN;", *body, "COMMIT;"] if transactional else body
    return "\n".join(lines)


NEW_DATABASE_LINT = (
    "--strict: the database does not exist yet, so every table is new: nothing to lint"
)


def linted(result):
    """Return what db.lint prints: a line per finding, then the count."""
    if not result.migrations:
        return "nothing to lint: no pending migrations"
    lines = [
        f"checked {len(result.migrations)} migration(s) on {result.engine}: "
        + ", ".join(result.migrations)
    ]
    for finding in result.findings:
        where = f" line {finding.line}" if finding.line else ""
        if finding.migration.endswith(".py") or not finding.line:
            where += f" ({_shortened(finding.statement)})"
        line = f"{finding.migration}{where}: {finding.rule}: {finding.why}"
        line += f"; instead: {finding.instead}"
        if finding.acknowledged is not None:
            line += f" [acknowledged: {finding.acknowledged}]"
        lines.append(line)
    open_count = len(result.unacknowledged)
    acknowledged = len(result.findings) - open_count
    lines.append(
        f"{open_count} unacknowledged finding(s), {acknowledged} acknowledged"
        if result.findings
        else "no unsafe operation found"
    )
    return "\n".join(lines)


def _shortened(sql, width=80):
    text = " ".join(sql.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# --- Point-in-time recovery (db.replicate, db.restore --to-time, db.backups --pitr) ------


def replication_event(event):
    """Return the line db.replicate prints for an event of its tool (db.pitr.Started,
    db.pitr.BaseBackupTaken)."""
    from db.pitr import BaseBackupFailed, BaseBackupTaken

    if isinstance(event, BaseBackupTaken):
        return f"base backup {event.label} taken in {event.seconds:.1f} s"
    if isinstance(event, BaseBackupFailed):
        return f"error: base backup failed: {event.reason}; tried again at the next check"
    return (
        f"protecting {printable(event.source)} in {printable(event.replica)} with "
        f"{event.tool}, {event.detail} (SIGTERM or Ctrl-C stops; db.restore --to-time "
        "restores any moment of it)"
    )


def replication_stopped(signal_name):
    """Return the line db.replicate prints once stopped."""
    return f"stopped by {signal_name}; what was committed is on the replica"


def recoverable_range(span):
    """Return db.backups --pitr: the range of moments the replica can restore."""
    return f"{span.replica} can restore any moment from {span.describe()} (UTC)"


def point_in_time_question(settings, span, moment):
    """Return what db.restore --to-time/--latest asks to confirm."""
    from db.config import database_name
    from db.pitr import utc_text

    when = f"its state at {utc_text(moment)}" if moment else "its latest state"
    return f"replace {database_name(settings.url)} with {when} from {span.replica}"


def restored_to_time(result):
    """Return the closing lines of db.restore --to-time/--latest."""
    from db.pitr import utc_text

    restored = result.restored
    lines = []
    if restored.safety:
        lines.append(f"safety backup of the replaced database: {restored.safety.path}")
    when = f"as it was at {utc_text(result.moment)}" if result.moment else "at its latest state"
    lines.append(
        f"restored {when} from {result.span.replica} (schema "
        f"{restored.manifest['schema_version']}, {sum(restored.manifest['row_counts'].values()):,} "
        "rows); db.migrate brings it forward"
    )
    return "\n".join(lines)


def restored_server(restored):
    """Return the closing lines of db.restore --to-time/--latest on a server."""
    from db.pitr import utc_text

    when = f"as it was at {utc_text(restored.moment)}" if restored.moment else "at its latest"
    source = restored.span.replica
    lines = [f"restored the whole server {when} from {source} into {restored.data_dir}"]
    if restored.url:
        from db.config import mask_url  # the restored server has the live one's users

        lines.append(f"running on {mask_url(restored.url)}: it takes writes")
    else:
        lines.append("next steps:")
        lines += [f"  {step}" for step in restored.next_steps]
    return "\n".join(lines)


# --- db.locks --------------------------------------------------------------------------------


def locks_table(report):
    """Return db.locks as text: who waits on whom first, then every session, then notes."""
    names = {s.id: _session_name(s) for s in report.sessions}
    lines = [f"database: {report.database} ({report.engine})"]
    waiting = report.waiting
    lines.append(f"{len(report.sessions)} other session(s), {len(waiting)} waiting for a lock")
    if waiting:
        lines += ["", "who waits on whom:"]
        for session in waiting:
            blockers = ", ".join(names.get(b, f"{b}") for b in session.blocked_by) or "?"
            waited = _seconds(session.waiting_seconds)
            lines.append(
                f"  {names[session.id]} waits{f' {waited}' if waited else ''} for "
                f"{session.waits_for or 'a lock'}, blocked by {blockers}"
            )
    if report.sessions:
        lines += ["", f"{'id':>8}  {'user':<12} {'application':<24} {'state':<22} {'xact':>6}"]
        for s in report.sessions:
            lines.append(
                f"{s.id:>8}  {printable(s.user or '-'):<12} "
                f"{printable(s.application or '-')[:24]:<24} {s.state or '-':<22} "
                f"{_seconds(s.transaction_seconds) or '-':>6}"
            )
            details = [
                ("client", s.client),
                ("files", ", ".join(s.files)),
                ("holds", ", ".join(s.holds)),
                ("query", s.query),
            ]
            lines += [f"{'':>10}{label}: {printable(text)}" for label, text in details if text]
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def _session_name(session):
    noun = "pid" if session.files else "session"  # SQLite's are processes
    app = printable(session.application or "")
    named = f"{noun} {session.id}"
    return f"{named} ({app[:40]})" if app else named


def _seconds(seconds):
    if seconds is None:
        return None
    return format_age(datetime.timedelta(seconds=seconds)) if seconds >= 1 else "<1s"


def locks_json(report):
    """Return db.locks as stable JSON."""
    return json_document(
        {
            "database": report.database,
            "engine": report.engine_key,
            "sessions": [
                {
                    "id": s.id,
                    "user": s.user,
                    "application": s.application,
                    "client": s.client,
                    "state": s.state,
                    "transaction_since": utc_iso(s.transaction_since),
                    "transaction_seconds": s.transaction_seconds,
                    "waiting_seconds": s.waiting_seconds,
                    "waits_for": s.waits_for,
                    "blocked_by": list(s.blocked_by),
                    "query": s.query,
                    "holds": list(s.holds),
                    "files": list(s.files),
                }
                for s in report.sessions
            ],
            "waiting": [s.id for s in report.waiting],
            "notes": report.notes,
        }
    )


def ended_session(session):
    """Return the line of db.locks --kill once the session ended."""
    return f"ended {_session_name(session)}: its transaction was rolled back"


def end_question(session):
    """Return what db.locks --kill asks to confirm."""
    query = f", running {session.query!r}" if session.query else ""
    return f"end {_session_name(session)}{query}"


# --- db.health ---------------------------------------------------------------------------


def health_lines(report, problems_only=False):
    """Return db.health as text: the verdict first (what a monitoring system shows), then
    a line per check (``problems_only``: per check not ok): its state, its measurement,
    its limits and what it is about."""
    counts = ", ".join(f"{number} {state}" for state, number in report.counts().items())
    lines = [f"health {report.state.upper()}: {counts} ({report.database})"]
    width = max((len(f.check) for f in report.findings), default=0)
    for finding in report.findings:
        if problems_only and finding.state == "ok":
            continue
        limits = _health_limits(finding.limit)
        detail = f": {printable(finding.detail)}" if finding.detail else ""
        line = f"{finding.state:<8}  {finding.check:<{width}}  {finding.shown}"
        lines.append(f"{line}{f' ({limits})' if limits else ''}{detail}")
    return "\n".join(lines)


def _health_limits(limit):
    if limit is None or limit.off:
        return ""
    sign = ">=" if limit.worse == "higher" else "<="
    return ", ".join(
        f"{level} {sign} {_health_level(limit.kind, bound)}"
        for level, bound in (("warning", limit.warning), ("critical", limit.critical))
        if bound is not None
    )


def _health_level(kind, bound):
    if kind == "duration":
        return format_age(datetime.timedelta(seconds=bound))
    if kind == "percent":
        return f"{bound:.0%}"
    return str(int(bound))


def health_json(report, one_line=False):
    """Return db.health as stable JSON: the verdict, its exit code and every finding (on
    one line with ``one_line``, which db.health --every prints: a log line per run)."""
    return json_document(
        {
            "database": report.database,
            "engine": report.engine,
            "state": report.state,
            "exit_code": report.exit_code,
            "checks": [
                {
                    "check": finding.check,
                    "subject": finding.subject or None,
                    "state": finding.state,
                    "shown": finding.shown,
                    "value": finding.value,
                    "metric": finding.metric,
                    "warning": None if finding.limit is None else finding.limit.warning,
                    "critical": None if finding.limit is None else finding.limit.critical,
                    "detail": printable(finding.detail) or None,
                }
                for finding in report.findings
            ],
        },
        indent=None if one_line else 2,
    )


# -- tenants (db/tenants.py) ------------------------------------------------------------------


def tenants_table(infos):
    """Return db.tenants: one line per tenant, by name."""
    if not infos:
        return "no tenants: invoke db.tenant-create NAME creates one"
    width = max(len("tenant"), *(len(info.name) for info in infos))
    lines = [f"{'tenant':<{width}} {'schema':<8} {'size':>10}  latest backup"]
    for info in infos:
        version = info.version or "-"
        lines.append(
            f"{info.name:<{width}} {version:<8} {_size_or_na(info.size):>10}  "
            f"{_backup_age(info.latest_backup)}"
        )
    return "\n".join(lines)


def tenants_json(infos):
    """Return db.tenants as stable JSON."""
    return json_document(
        {
            "tenants": [
                {
                    "name": info.name,
                    "database": info.database,
                    "schema_version": info.version,
                    "size_bytes": info.size,
                    "latest_backup": _backup_age_json(info.latest_backup),
                }
                for info in infos
            ]
        }
    )


def _backup_age_json(backup):
    if backup is None:
        return None
    return {
        "file": backup.path.name,
        "created_at": utc_iso(backup.created_at),
        "age_seconds": round(backup.age_seconds),
    }


def tenant_created(name, result):
    """Return what db.tenant-create says once the tenant is ready."""
    return f"tenant {name} created: {set_up(result)}"


def tenant_dropped(name):
    return f"tenant {name} dropped (its backups are kept)"


def tenant_output(name, output):
    """Return one tenant's output under --all-tenants, each line led by its name."""
    return "\n".join(f"[{name}] {line}" for line in output.rstrip("\n").splitlines())


def all_tenants_summary(task, outcomes):
    """Return the last line of a task run --all-tenants: how many tenants ended well, and
    which did not (``outcomes``: (name, exit code) by name)."""
    failed = [name for name, code in outcomes if code]
    summary = f"{task} --all-tenants: {len(outcomes) - len(failed)} of {len(outcomes)} tenants ok"
    if failed:
        shown = ", ".join(failed[:20]) + (
            f" and {len(failed) - 20} more" if len(failed) > 20 else ""
        )
        summary += f"; failed: {shown}"
    return summary


def all_tenants_json(outcomes):
    """Return a task's JSON run --all-tenants: each tenant's own document (or output)."""
    return json_document(
        {
            "tenants": [
                {"tenant": name, "exit_code": code, "result": result}
                for name, code, result in outcomes
            ],
            "failed": sum(1 for _, code, _ in outcomes if code),
        }
    )
