"""CloneGallery database tasks: ``invoke --list`` shows them, ``invoke --help db.X`` explains one.

Configuration (first found wins): ``DATABASE_URL``; ``db.url`` in ``invoke.yaml`` or
``INVOKE_DB_URL``; the SQLite file ``clonegallery.db`` beside this file. ``db.migrations``
and ``db.seeders`` (``INVOKE_DB_MIGRATIONS``, ``INVOKE_DB_SEEDERS``) name the folders.
``--debug`` (or ``INVOKE_DB_DEBUG=1``) shows the traceback behind an error.
"""

import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

from invoke import Collection, Exit, task

from db import commands, report
from db.backups import Retention
from db.config import Settings, database_name, mask_url, resolve_recipients, resolve_url
from db.errors import ConfigError, DbError, ResetCancelled
from db.populate import DEFAULT_IMAGES, GalleryPlan
from db.schedule import parse_duration
from db.transfer import DEFAULT_BATCH

PROJECT_DIR = Path(__file__).resolve().parent
DEBUG_HELP = "show the full traceback when something fails"
IDENTITY_HELP = "the age identity file that decrypts an encrypted backup (or db.backup_identity)"


def _settings(c):
    return Settings(
        url=resolve_url(c.config.db.url, PROJECT_DIR),
        migrations_dir=_project_path(c.config.db.migrations),
        seeders_dir=_project_path(c.config.db.seeders),
        backups_dir=_project_path(c.config.db.backups),
        backup_recipients=resolve_recipients(c.config.db.backup_recipients),
        backup_identity=c.config.db.backup_identity,
    )


def _project_path(configured):
    path = Path(configured)
    return path if path.is_absolute() else PROJECT_DIR / path


@contextmanager
def _errors_as_exit(c, debug):
    """Turn the toolkit's errors into one line on stderr and a meaningful exit code."""
    try:
        yield
    except DbError as exc:
        if debug or c.config.db.debug:
            traceback.print_exc()
        raise Exit(f"error: {exc}", code=exc.exit_code) from None
    except KeyboardInterrupt:
        raise Exit("error: interrupted; the step in progress was rolled back", code=130) from None


def _print_progress(event, migration, duration_ms):
    print(report.progress_line(event, migration, duration_ms), flush=True)


def _whole_number(option, text):
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{option} must be a whole number, not {text!r}") from None


@task(help={"debug": DEBUG_HELP})
def setup(c, debug=False):
    """Create the database, apply every migration and seed the sample gallery."""
    with _errors_as_exit(c, debug):
        result = commands.setup(_settings(c), on_event=_print_progress)
    print(report.set_up(result))


@task(help={"force": "re-run every seeder (no row is duplicated)", "debug": DEBUG_HELP})
def seed(c, force=False, debug=False):
    """Run the pending seeders (sample data); --force re-runs them all."""
    with _errors_as_exit(c, debug):
        result = commands.seed(_settings(c), force=force, on_event=_print_progress)
    print(report.seeded(result))


@task(
    help={
        "yes": "do not ask for confirmation (for scripts and CI)",
        "data-only": "empty every table but keep the schema and migration history",
        "debug": DEBUG_HELP,
    }
)
def reset(c, yes=False, data_only=False, debug=False):
    """Drop every table (or --data-only: delete every row), after confirmation."""
    with _errors_as_exit(c, debug):
        settings = _settings(c)
        if not yes:
            name = database_name(settings.url)
            what = "delete every row of" if data_only else "drop every table of"
            _confirm("db.reset", f"{what} {name}", settings)
        tables = commands.reset(settings, data_only=data_only)
    print(report.reset_done(tables, data_only))


@task(
    help={
        "path": "the backup to restore (a file made by db.backup)",
        "yes": "do not ask for confirmation (for scripts and CI)",
        "identity": IDENTITY_HELP,
        "debug": DEBUG_HELP,
    }
)
def restore(c, path, yes=False, identity=None, debug=False):
    """Replace the database with a verified backup, after a safety backup of it."""
    with _errors_as_exit(c, debug):
        settings = _settings(c)
        if not yes:
            plan = commands.restore_plan(settings, path)
            _confirm("db.restore", report.restore_question(plan), settings)
        result = commands.restore(settings, path, identity=identity)
    print(report.restored(result))


def _confirm(command, what, settings):
    """Ask the person at the terminal to type the database name; refuse without one."""
    name = database_name(settings.url)
    if not sys.stdin.isatty():
        raise ConfigError(
            f"{command} would {what} and there is no terminal to confirm on; "
            "pass --yes to do it anyway"
        )
    print(f"This will {what} ({mask_url(settings.url)}).")
    try:
        answer = input(f"Type the database name ({name}) to confirm: ")
    except EOFError:
        answer = ""
    if answer.strip() != name:
        raise ResetCancelled(f"{command} cancelled: the name did not match; nothing changed")


@task(
    help={
        "to": "stop after this version (e.g. 002)",
        "dry-run": "print the plan and change nothing",
        "allow-out-of-order": "also apply pending migrations numbered below applied ones",
        "debug": DEBUG_HELP,
    }
)
def migrate(c, to=None, dry_run=False, allow_out_of_order=False, debug=False):
    """Apply pending migrations, oldest first."""
    with _errors_as_exit(c, debug):
        names = commands.migrate(
            _settings(c),
            to=to,
            dry_run=dry_run,
            allow_out_of_order=allow_out_of_order,
            on_event=_print_progress,
        )
    print(report.migrated(names, dry_run=dry_run))


@task(
    help={
        "to": "roll back every migration after this version (0: all of them)",
        "steps": "how many migrations to roll back (default 1)",
        "dry-run": "print the plan and change nothing",
        "debug": DEBUG_HELP,
    }
)
def rollback(c, to=None, steps=None, dry_run=False, debug=False):
    """Roll back the last applied migration, or back to --to, or --steps of them."""
    with _errors_as_exit(c, debug):
        names = commands.rollback(
            _settings(c),
            to=to,
            steps=_whole_number("--steps", steps),
            dry_run=dry_run,
            on_event=_print_progress,
        )
    print(report.rolled_back(names, dry_run=dry_run))


@task(
    help={
        "images": f"how many images to generate (default {DEFAULT_IMAGES:,})",
        "users": "how many users (default: images / 20, at least 1)",
        "seed": "random seed (default 1); the same seed on the same database, the same gallery",
        "debug": DEBUG_HELP,
    }
)
def populate(c, images=None, users=None, seed=None, debug=False):
    """Fill the database with a realistic generated gallery, at any scale."""
    with _errors_as_exit(c, debug):
        plan = GalleryPlan.sized(
            images=_whole_number("--images", images),
            users=_whole_number("--users", users),
            seed=_whole_number("--seed", seed),
        )
        progress = report.ProgressPrinter("images", on_terminal=sys.stdout.isatty())
        result = commands.populate(_settings(c), plan, on_progress=progress)
    print(report.populated(result))


@task(
    help={
        "to": "the database to copy to, as a URL: any engine, created if it does not exist",
        "force": "replace the target's contents when it is not empty (drops its tables)",
        "batch": f"rows read and written at a time (default {DEFAULT_BATCH:,})",
        "debug": DEBUG_HELP,
    }
)
def transfer(c, to, force=False, batch=None, debug=False):
    """Copy the database to another one, on any engine, and prove the copy equal."""
    with _errors_as_exit(c, debug):
        batch = _whole_number("--batch", batch)
        result = commands.transfer(
            _settings(c),
            to,
            force=force,
            batch=DEFAULT_BATCH if batch is None else batch,
            on_progress=report.StageProgress(on_terminal=sys.stdout.isatty()),
        )
    print(report.transferred(result))


@task(help={"debug": DEBUG_HELP})
def repair(c, debug=False):
    """Forget a migration that failed half-way (MySQL), once the database is fixed."""
    with _errors_as_exit(c, debug):
        names = commands.repair(_settings(c))
    print(report.repaired(names))


@task(
    auto_shortflags=False,  # too many options to give each a letter that means something
    help={
        "output": "where to write the backup (default: backups/<database name>-<UTC time>.db, "
        ".pgdump on PostgreSQL, .sql on MySQL)",
        "compress": "compress with zstd (FILE.zst; pg_dump's custom format is compressed already)",
        "keep": "after the new backup verified, keep only the newest N of this database's",
        "keep-daily": "...and the newest of each of the last N days that have one",
        "keep-weekly": "...and the newest of each of the last N weeks that have one",
        "keep-monthly": "...and the newest of each of the last N months that have one",
        "verify": "verify the backup before reporting success",
        "every": "run until stopped, one verified backup every DURATION (30s, 15m, 6h, 1d)",
        "encrypt": "encrypt with age to db.backup_recipients / CLONEGALLERY_BACKUP_RECIPIENTS",
        "debug": DEBUG_HELP,
    },
)
def backup(
    c,
    output=None,
    compress=False,
    keep=None,
    keep_daily=None,
    keep_weekly=None,
    keep_monthly=None,
    verify=False,
    every=None,
    encrypt=False,
    debug=False,
):
    """Take a consistent online backup of the database, with a manifest."""
    with _errors_as_exit(c, debug):
        options = {
            "output": output,
            "compress": compress,
            "encrypt": encrypt,
            "retention": Retention(
                last=_whole_number("--keep", keep),
                daily=_whole_number("--keep-daily", keep_daily),
                weekly=_whole_number("--keep-weekly", keep_weekly),
                monthly=_whole_number("--keep-monthly", keep_monthly),
            ),
        }
        if every is None:
            print(report.backed_up(commands.backup(_settings(c), verify=verify, **options)))
            return
        period = parse_duration("--every", every)
        stopped = commands.backup_every(
            _settings(c),
            period,
            on_backup=lambda result: print(report.backed_up(result), flush=True),
            on_failure=lambda error: _report_failure(c, debug, error),
            **options,
        )
    print(f"stopped by {stopped}; no backup was in progress or it was discarded", flush=True)


def _report_failure(c, debug, error):
    """Print a failed run of a repeating task as one line (the traceback with --debug)."""
    if debug or c.config.db.debug:
        traceback.print_exception(error)
    print(f"error: {error}", file=sys.stderr, flush=True)


@task(
    help={
        "all": "list the backups of every database in the folder, with a column saying whose",
        "max-age": "exit 3 unless this database's newest verified backup is younger "
        "than DURATION (e.g. 26h): a check for cron, CI or a monitor",
        "debug": DEBUG_HELP,
    }
)
def backups(c, all=False, max_age=None, debug=False):
    """List this database's backups: time, size, schema version, whether each verified."""
    with _errors_as_exit(c, debug):
        settings = _settings(c)
        limit = None if max_age is None else parse_duration("--max-age", max_age)
        listing = commands.list_backups(settings, everyone=all)
        print(report.backups_table(listing))
        if limit is not None:
            newest = commands.require_recent_backup(settings, limit)
            print(report.recent_enough(newest, limit))


@task(help={"path": "the backup file to check", "identity": IDENTITY_HELP, "debug": DEBUG_HELP})
def verify(c, path, identity=None, debug=False):
    """Check a backup against its manifest: checksum, integrity, foreign keys, row counts."""
    with _errors_as_exit(c, debug):
        info = commands.verify(_settings(c), path, identity=identity)
    print(report.verified(info))


@task(
    help={
        "json": "print machine-readable JSON",
        "check": "exit 3 unless every migration is applied and unchanged (a deploy gate)",
        "debug": DEBUG_HELP,
    }
)
def status(c, json=False, check=False, debug=False):
    """Show every migration's state, the current version and the (masked) database URL."""
    with _errors_as_exit(c, debug):
        result = commands.status(_settings(c))
    print(report.status_json(result) if json else report.status_table(result))
    if check and not result.up_to_date:
        raise Exit(code=3)


@task(
    help={
        "output": "write to a file instead of printing; its suffix names the format: "
        ".md (Mermaid in Markdown), .mmd (Mermaid), .dot/.gv (Graphviz), .svg (needs dot)",
        "debug": DEBUG_HELP,
    }
)
def diagram(c, output=None, debug=False):
    """Draw the live schema as an entity-relationship diagram (Mermaid by default)."""
    with _errors_as_exit(c, debug):
        text = commands.diagram(_settings(c), output=output)
    if output:
        print(f"diagram written to {output}")
    else:
        print(text, end="")


@task(
    help={
        "output": "write the SQL to this file (its folder must exist) instead of printing it",
        "debug": DEBUG_HELP,
    }
)
def schema(c, output=None, debug=False):
    """Write the database's complete current schema as SQL for its engine."""
    with _errors_as_exit(c, debug):
        result = commands.schema(_settings(c), output=output)
    print(report.schema_dumped(result))


@task(help={"debug": DEBUG_HELP})
def optimize(c, debug=False):
    """Run the engine's maintenance (VACUUM, ANALYZE...) and show the space reclaimed."""
    with _errors_as_exit(c, debug):
        result = commands.optimize(_settings(c))
    print(report.optimized(result))


@task(
    # An option, not a positional: Invoke makes positionals required, and --builtin has none.
    help={
        "sql": "the SELECT to explain, e.g. \"SELECT * FROM images WHERE caption = 'x'\"",
        "builtin": "explain the app's typical queries instead (exit 1 on a full scan)",
        "debug": DEBUG_HELP,
    },
)
def explain(c, sql=None, builtin=False, debug=False):
    """Show the engine's plan for a SELECT, flagging full scans of large tables and sorts."""
    with _errors_as_exit(c, debug):
        result = commands.explain(_settings(c), sql=sql, builtin=builtin)
    print(report.explained(result))
    if result.full_scans:
        raise Exit(code=1)


@task(help={"json": "print machine-readable JSON", "debug": DEBUG_HELP})
def stats(c, json=False, debug=False):
    """Show each table's rows, size and indexes, the database's size and the latest backup."""
    with _errors_as_exit(c, debug):
        result = commands.stats(_settings(c))
    print(report.stats_json(result) if json else report.stats_table(result))


@task(help={"json": "print machine-readable JSON", "debug": DEBUG_HELP})
def check(c, json=False, debug=False):
    """Compare the database with the models and migrations; exit 1 on any difference."""
    with _errors_as_exit(c, debug):
        differences = commands.check(_settings(c))
    print(report.checked_json(differences) if json else report.checked(differences))
    if differences:
        raise Exit(code=1)


@task(
    help={
        "name": "what the migration does, e.g. 'add karma to users'",
        "sql": "write a .sql migration (-- migrate:up / -- migrate:down) instead of Python",
        "auto": "write the migration from the database to the models (columns, indexes)",
        "debug": DEBUG_HELP,
    }
)
def new_migration(c, name, sql=False, auto=False, debug=False):
    """Write the next-numbered migration skeleton (or, --auto, the catch-up) in migrations/."""
    with _errors_as_exit(c, debug):
        path = commands.new_migration(_settings(c), name, sql=sql, auto=auto)
    print(
        f"created {path}"
        if path
        else "nothing to generate: the database is in step with the models"
    )


db = Collection(
    "db",
    setup,
    migrate,
    rollback,
    repair,
    seed,
    reset,
    populate,
    transfer,
    backup,
    backups,
    verify,
    restore,
    status,
    stats,
    new_migration,
    schema,
    optimize,
    explain,
    diagram,
    check,
)
ns = Collection(db)
ns.configure(
    {
        "db": {
            "url": None,
            "migrations": "migrations",
            "seeders": "seeders",
            "backups": "backups",
            "backup_recipients": None,
            "backup_identity": None,
            "debug": False,
        }
    }
)
