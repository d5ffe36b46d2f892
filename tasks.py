"""CloneGallery database tasks: ``invoke --list`` shows them, ``invoke --help db.X`` explains one.

Configuration (first found wins): ``DATABASE_URL``; ``db.url`` in ``invoke.yaml`` or
``INVOKE_DB_URL``; the SQLite file ``clonegallery.db`` beside this file. ``db.migrations``
(``INVOKE_DB_MIGRATIONS``) names the migrations folder. ``--debug`` (or ``INVOKE_DB_DEBUG=1``)
shows the traceback behind an error.
"""

import traceback
from contextlib import contextmanager
from pathlib import Path

from invoke import Collection, Exit, task

from db import commands, report
from db.config import Settings, resolve_url
from db.errors import ConfigError, DbError

PROJECT_DIR = Path(__file__).resolve().parent
DEBUG_HELP = "show the full traceback when something fails"


def _settings(c):
    migrations_dir = Path(c.config.db.migrations)
    if not migrations_dir.is_absolute():
        migrations_dir = PROJECT_DIR / migrations_dir
    return Settings(url=resolve_url(c.config.db.url, PROJECT_DIR), migrations_dir=migrations_dir)


@contextmanager
def _errors_as_exit(c, debug):
    """Turn the toolkit's errors into one line on stderr and a meaningful exit code."""
    try:
        yield
    except DbError as exc:
        if debug or c.config.db.debug:
            traceback.print_exc()
        raise Exit(f"error: {exc}", code=exc.exit_code) from None


def _print_progress(event, migration, duration_ms):
    print(report.progress_line(event, migration, duration_ms), flush=True)


def _steps(text):
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--steps must be a whole number, not {text!r}") from None


@task(help={"debug": DEBUG_HELP})
def setup(c, debug=False):
    """Create the database and bring it fully up to date."""
    with _errors_as_exit(c, debug):
        applied = commands.setup(_settings(c), on_event=_print_progress)
    print(report.migrated(applied) if applied else "already set up: nothing to do")


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
            _settings(c), to=to, steps=_steps(steps), dry_run=dry_run, on_event=_print_progress
        )
    print(report.rolled_back(names, dry_run=dry_run))


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
        "name": "what the migration does, e.g. 'add karma to users'",
        "sql": "write a .sql migration (-- migrate:up / -- migrate:down) instead of Python",
        "debug": DEBUG_HELP,
    }
)
def new_migration(c, name, sql=False, debug=False):
    """Write the next-numbered migration skeleton in migrations/."""
    with _errors_as_exit(c, debug):
        path = commands.new_migration(_settings(c), name, sql=sql)
    print(f"created {path}")


db = Collection("db", setup, migrate, rollback, status, new_migration)
ns = Collection(db)
ns.configure({"db": {"url": None, "migrations": "migrations", "debug": False}})
