"""Everything the tasks show a person or a pipeline, formatted in one place."""

import json


def progress_line(event, migration, duration_ms):
    """Return one progress line for a runner event."""
    if duration_ms is None:
        return f"{event} {migration.name} ..."
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


def status_table(report):
    """Return db.status as text: the database, its version, one line per migration."""
    lines = [f"database: {report.url}"]
    if not report.exists:
        lines.append("(the database does not exist yet; db.setup creates it)")
    lines.append(f"current version: {report.current_version or 'none'}")
    lines.append("")
    lines.append(f"{'version':<8} {'state':<8} {'applied at (UTC)':<20} {'ms':>6}  name")
    for m in report.migrations:
        applied_at = m.applied_at.strftime("%Y-%m-%d %H:%M:%S") if m.applied_at else "-"
        duration = "-" if m.duration_ms is None else str(m.duration_ms)
        lines.append(f"{m.version:<8} {m.state:<8} {applied_at:<20} {duration:>6}  {m.name}")
    if not report.migrations:
        lines.append("(no migrations)")
    lines.append("")
    lines.append("up to date" if report.up_to_date else "NOT up to date")
    return "\n".join(lines)


def status_json(report):
    """Return db.status as stable JSON."""
    return json.dumps(
        {
            "database": report.url,
            "exists": report.exists,
            "current_version": report.current_version,
            "up_to_date": report.up_to_date,
            "migrations": [
                {
                    "version": m.version,
                    "name": m.name,
                    "state": m.state,
                    "applied_at": m.applied_at.isoformat() if m.applied_at else None,
                    "duration_ms": m.duration_ms,
                }
                for m in report.migrations
            ],
        },
        indent=2,
    )
