"""The command line: the ``db`` tasks, and the ``clonegallery-db`` program that runs them.

Two ways in, the same tasks::

    invoke db.status                      # from a checkout: tasks.py names the project
    clonegallery-db --project DIR status  # installed: any directory (or CLONEGALLERY_PROJECT)

Each task parses its options, calls ``db.commands`` and prints what ``db.report``
formats; ``toolkit_task`` gives every one the same edges: the toolkit's errors as one
``error:`` line (a JSON object with ``--json``) and an exit code that means something
(``db.errors``), no traceback unless ``--debug``, quiet on a closed pipe (``| head``).
Feature modules are imported inside the task that needs them, so a command starts fast.
"""

import functools
import os
import re
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

from invoke import Argument, Collection, Exit, ParseError, Program, Task
from invoke.util import yaml

from db.config import (
    Settings,
    database_name,
    mask_url,
    resolve_read_url,
    resolve_recipients,
    resolve_replica,
    resolve_url,
)
from db.errors import ConfigError, DbError, NotUpToDate, ResetCancelled
from db.health.thresholds import defaults as health_defaults

DEBUG_HELP = "show the full traceback when something fails"
JSON_HELP = "print machine-readable JSON (an error too: an object with error and exit_code)"
IDENTITY_HELP = "the age identity file that decrypts an encrypted backup (or db.backup_identity)"
PROJECT_ENV = "CLONEGALLERY_PROJECT"
# A closed pipe (``| head``): the shell's code for a process killed by SIGPIPE.
CLOSED_PIPE_EXIT = 128 + 13
# Invoke's own parse errors (unknown option, missing argument) under clonegallery-db.
USAGE_EXIT = 2
# -d once meant --dry-run in some tasks and --debug in others. Without a flag of the
# task's own, Invoke would read it as its core --debug and run the task for real: a
# script that meant a dry run would migrate. Every task therefore refuses it.
RETIRED_FLAG = "d"
RETIRED_ADVICE = "say --dry-run or --debug in full (-d meant either, once)"
RETIRED_HELP = f"refused: {RETIRED_ADVICE}"
TENANT_HELP = "work on tenant NAME's database instead (db.tenants lists them; or db.tenant)"
ALL_TENANTS_HELP = "run on every tenant, JOBS at a time; exit non-zero if any failed"
JOBS_HELP = "with --all-tenants: how many tenants at once (default 4)"


class ToolkitTask(Task):
    """An Invoke task with the toolkit's option conventions.

    No short flags (one letter cannot mean one thing across twenty tasks); the options
    named in ``numbers`` are parsed and shown as whole numbers (``--keep=INT``); the
    positional named in ``query`` may be left out when the flag ``query_or`` (or one of
    several, a tuple) is given
    (``db.explain "SELECT ..."`` or ``db.explain --builtin``). Every task that works on
    a database takes ``--tenant NAME`` (``tenants=False``: the tasks that manage tenants),
    and those made ``all_tenants`` also ``--all-tenants [--jobs N]``.
    """

    def __init__(
        self, body, numbers=(), query=None, query_or=None, tenants=True, all_tenants=False,
        **options,
    ):  # fmt: skip
        options.setdefault("auto_shortflags", False)
        if query:
            options["positional"] = [query]
        super().__init__(body, **options)
        self.numbers = set(numbers)
        self.query, self.query_or = query, query_or
        self.tenants, self.all_tenants = tenants, all_tenants

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        if name in self.numbers:
            opts["kind"] = int
        return opts

    def get_arguments(self, ignore_unknown_help=None):
        arguments = super().get_arguments(ignore_unknown_help=ignore_unknown_help)
        by_name = {argument.name: argument for argument in arguments}
        for argument in arguments:
            if argument.kind is int:
                argument.__class__ = WholeNumberArgument
        if self.query:
            by_name[self.query].__class__ = QueryArgument
            stand_ins = (self.query_or,) if isinstance(self.query_or, str) else self.query_or
            by_name[self.query].stand_ins = [by_name[name] for name in stand_ins]
        return [
            *arguments,
            *self.tenant_arguments(),
            Argument(names=(RETIRED_FLAG,), kind=bool, default=False, help=RETIRED_HELP),
        ]

    def tenant_arguments(self):
        if not self.tenants:
            return []
        tenant = Argument(names=("tenant",), kind=str, default=None, help=TENANT_HELP)
        if not self.all_tenants:
            return [tenant]
        every = Argument(names=("all_tenants",), kind=bool, default=False, help=ALL_TENANTS_HELP)
        jobs = WholeNumberArgument(names=("jobs",), kind=int, default=None, help=JOBS_HELP)
        return [tenant, every, jobs]


class QueryArgument(Argument):
    """A positional that counts as given (empty) once its stand-in flag is set, so
    Invoke's parser does not require it then."""

    stand_ins = ()

    @property
    def value(self):
        given = super().value
        if given is None and any(stand_in.value for stand_in in self.stand_ins):
            return ""
        return given

    @value.setter
    def value(self, given):
        self.set_value(given, cast=True)


class WholeNumberArgument(Argument):
    """A number option whose bad value is one ``error:`` line naming it and exit 2, under
    ``invoke`` as under ``clonegallery-db`` (not Invoke's traceback)."""

    def set_value(self, value, cast=True):
        try:
            super().set_value(value, cast)
        except ValueError:
            raise Exit(
                f"error: --{max(self.names, key=len)} must be a whole number, not {value!r}",
                code=USAGE_EXIT,
            ) from None


def toolkit_task(numbers=(), query=None, query_or=None, **options):
    """Make a function a ToolkitTask run inside the toolkit's error boundary."""

    def decorate(body):
        @functools.wraps(body)
        def run(c, *args, **kwargs):
            if kwargs.pop(RETIRED_FLAG, False):
                raise Exit(f"error: -d is no option: {RETIRED_ADVICE}", USAGE_EXIT)
            tenant = kwargs.pop("tenant", None)
            every, jobs = kwargs.pop("all_tenants", False), kwargs.pop("jobs", None)
            debug = kwargs.get("debug") or c.config.db.debug
            as_json = kwargs.get("json", False)
            with reported_errors(debug, as_json), for_tenant(c, tenant):
                if jobs is not None and not every:
                    raise ConfigError(f"{task_name(body)}: --jobs goes with --all-tenants")
                if every:
                    run_task = functools.partial(body, c, *args, **kwargs)
                    run_task = reported(run_task, debug, as_json)
                    run_on_all_tenants(c, task_name(body), run_task, jobs, as_json)
                else:
                    body(c, *args, **kwargs)
                sys.stdout.flush()  # a closed pipe shows here, inside the boundary

        return ToolkitTask(run, numbers=numbers, query=query, query_or=query_or, **options)

    return decorate


def reported(run_task, debug, as_json):
    """Return ``run_task`` inside the error boundary: a tenant's failure under
    --all-tenants is its one ``error:`` line (or JSON object), as on its own."""

    def run():
        with reported_errors(debug, as_json):
            run_task()

    return run


def task_name(body):
    return "db." + body.__name__.replace("_", "-")


@contextmanager
def for_tenant(c, name):
    """Make the task inside work on tenant ``name`` (None: as configured, db.tenant)."""
    if name is None:
        yield
        return
    configured = c.config.db.tenant
    c.config.db.tenant = name
    try:
        yield
    finally:
        c.config.db.tenant = configured


def run_on_all_tenants(c, task, run_task, jobs, as_json):
    """Run a task on every tenant, ``jobs`` at a time, each tenant's output shown as it
    ends, led by its name; then one summary line, and exit non-zero (the highest of the
    tenants' codes) when any failed. With --json: one document of every tenant's."""
    from db import report, tenants

    if c.config.db.tenant is not None:
        raise ConfigError(f"{task} takes --tenant or --all-tenants, not both")
    jobs = tenants.DEFAULT_JOBS if jobs is None else jobs
    names = tenants.tenant_names(settings_of(c).url)
    outcomes = []
    for name, outcome in tenants.run_for_each(names, tenant_runner(c, run_task), jobs):
        code, output = _died(outcome) if isinstance(outcome, tenants.WorkerDied) else outcome
        outcomes.append((name, code, output))
        if not as_json:
            print(report.tenant_output(name, output), flush=True)
    outcomes.sort()
    if as_json:
        print(report.all_tenants_json([(n, code, _parsed(out)) for n, code, out in outcomes]))
    else:
        print(report.all_tenants_summary(task, [(n, code) for n, code, _ in outcomes]))
    worst = max((code for _, code, _ in outcomes), default=0)
    if worst:
        sys.stdout.flush()
        raise Exit(code=worst)


def tenant_runner(c, run_task):
    """Return what one tenant's worker process runs: the task on that tenant, its output
    (stdout and stderr) kept, and its exit code."""

    def run_for(name):
        import io
        from contextlib import redirect_stderr, redirect_stdout

        captured = io.StringIO()
        code = 0
        c.config.db.tenant = name
        with redirect_stdout(captured), redirect_stderr(captured):
            try:
                run_task()
            except Exit as exc:
                code = exc.code
                if exc.message:
                    print(exc.message)
            except Exception:  # a bug: the traceback is the tenant's output
                traceback.print_exc()
                code = 1
        return code, captured.getvalue()

    return run_for


def _died(outcome):
    return 1, f"error: {outcome.reason}"


def _parsed(output):
    import json

    try:
        return json.loads(output)
    except ValueError:
        return output.strip()


@contextmanager
def reported_errors(debug, as_json=False):
    """Turn the toolkit's errors into one line (or JSON object) and an exit code."""
    try:
        yield
    except DbError as exc:
        if debug:
            traceback.print_exc()
        raise failure(str(exc), exc.exit_code, as_json) from None
    except KeyboardInterrupt:
        raise failure("interrupted; the step in progress was rolled back", 130, as_json) from None
    except BrokenPipeError:
        quiet_closed_stdout()
        raise Exit(code=CLOSED_PIPE_EXIT) from None


# How the messages' hints name a task ("run invoke db.setup"): the program running them
# says it its own way (ToolkitProgram: "clonegallery-db setup").
TASK_PREFIX = "invoke db."


def failure(message, code, as_json):
    """Return the Exit that reports a failure: a line on stderr, or JSON on stdout."""
    message = message.replace("invoke db.", TASK_PREFIX)
    if not as_json:
        return Exit(f"error: {message}", code=code)
    try:
        from db.report import json_document

        print(json_document({"error": message, "exit_code": code}))
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_closed_stdout()
    return Exit(code=code)


def quiet_closed_stdout():
    """Point stdout at /dev/null, so Python's flush at exit finds no closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def settings_of(c):
    """Return the Settings of the configured project."""
    project = Path(c.config.db.project)
    settings = Settings(
        url=resolve_url(c.config.db.url, project),
        migrations_dir=project_path(project, c.config.db.migrations),
        seeders_dir=project_path(project, c.config.db.seeders),
        backups_dir=project_path(project, c.config.db.backups),
        backup_recipients=resolve_recipients(c.config.db.backup_recipients),
        backup_identity=c.config.db.backup_identity,
        environment=c.config.db.environment,
        lock_timeout=c.config.db.lock_timeout,
        statement_timeout=c.config.db.statement_timeout,
        lock_retries=c.config.db.lock_retries,
        read_url=resolve_read_url(c.config.db.read_url, project),
        replica=resolve_replica(c.config.db.replica, project),
        replica_sync_interval=c.config.db.replica_sync_interval,
        base_backup_interval=c.config.db.base_backup_interval,
        base_backups_kept=c.config.db.base_backups_kept,
        stanza=c.config.db.stanza,
        health=dict(c.config.db.health),
    )
    if c.config.db.tenant is None:
        return settings
    from db.tenants import settings_for

    return settings_for(settings, c.config.db.tenant)


def project_path(project, configured):
    path = Path(configured)
    return path if path.is_absolute() else project / path


def print_progress(event, migration, duration_ms):
    from db import report

    print(report.progress_line(event, migration, duration_ms), flush=True)


def confirm(command, what, settings):
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


# --- The tasks ---------------------------------------------------------------------------


NO_SAMPLE_HELP = "run only the essential seeders; the sample ones are skipped"


@toolkit_task(
    help={
        "no-sample": NO_SAMPLE_HELP,
        "force": "seed the sample seeders even when db.environment is production",
        "debug": DEBUG_HELP,
    }
)
def setup(c, no_sample=False, force=False, debug=False):
    """Create the database, apply every migration and seed the sample gallery."""
    from db import commands, report

    result = commands.setup(
        settings_of(c), sample=not no_sample, force=force, on_event=print_progress
    )
    print(report.set_up(result))


@toolkit_task(
    all_tenants=True,
    help={
        "no-sample": NO_SAMPLE_HELP,
        "force": "re-run every seeder (no row is duplicated); in production, sample ones too",
        "debug": DEBUG_HELP,
    },
)
def seed(c, no_sample=False, force=False, debug=False):
    """Run the pending seeders; --force re-runs them all."""
    from db import commands, report

    result = commands.seed(
        settings_of(c), force=force, sample=not no_sample, on_event=print_progress
    )
    print(report.seeded(result))


@toolkit_task(
    help={
        "yes": "do not ask for confirmation (for scripts and CI)",
        "data-only": "empty every table but keep the schema and migration history",
        "debug": DEBUG_HELP,
    }
)
def reset(c, yes=False, data_only=False, debug=False):
    """Drop every table (or --data-only: delete every row), after confirmation."""
    from db import commands, report

    settings = settings_of(c)
    if not yes:
        commands.refuse_standby(settings, "db.reset")  # before the question
        name = database_name(settings.url)
        what = "delete every row of" if data_only else "drop every table of"
        confirm("db.reset", f"{what} {name}", settings)
    print(report.reset_done(commands.reset(settings, data_only=data_only), data_only))


@toolkit_task(
    query="path",
    query_or=("to_time", "latest"),
    help={
        "path": "the backup to restore (a file made by db.backup)",
        "yes": "do not ask for confirmation (for scripts and CI)",
        "identity": IDENTITY_HELP,
        "to-time": "instead of a backup: the state at TIMESTAMP (ISO 8601; no offset: local "
        "time) from db.replica, which db.replicate streams to",
        "latest": "instead of a backup: the latest state db.replica holds",
        "data-dir": "PostgreSQL, MariaDB: the new folder the whole server is restored into "
        "(with --to-time or --latest)",
        "port": "...and start the restored server there, on 127.0.0.1:PORT",
        "debug": DEBUG_HELP,
    },
    numbers=("port",),
)
def restore(
    c, path, yes=False, identity=None, to_time=None, latest=False, data_dir=None, port=None,
    debug=False,
):  # fmt: skip
    """Replace the database with a verified backup, after a safety backup of it."""
    from db import commands, report

    settings = settings_of(c)
    if to_time is not None or latest:
        from db.pitr import parse_moment

        if path or (to_time is not None and latest):
            raise ConfigError("db.restore takes one of a backup file, --to-time or --latest")
        moment = None if latest else parse_moment("--to-time", to_time)
        if commands.restores_whole_server(settings, data_dir, port):
            print(report.restored_server(commands.restore_server(settings, moment, data_dir, port)))
        else:
            restore_point_in_time(settings, yes, moment)
        return
    if not yes:
        plan = commands.restore_plan(settings, path)
        confirm("db.restore", report.restore_question(plan), settings)
    print(report.restored(commands.restore(settings, path, identity=identity)))


@toolkit_task(
    all_tenants=True,
    help={
        "to": "stop after this version (e.g. 002)",
        "dry-run": "print the plan and change nothing",
        "allow-out-of-order": "also apply pending migrations numbered below applied ones",
        "sql": "print the SQL the pending migrations would run on this engine; apply nothing",
        "strict": "lint the pending migrations first (db.lint); apply nothing on a finding",
        "debug": DEBUG_HELP,
    },
)
def migrate(
    c, to=None, dry_run=False, allow_out_of_order=False, sql=False, strict=False, debug=False
):
    """Apply pending migrations, oldest first."""
    from db import commands, report

    if sql:
        if dry_run or strict:
            raise ConfigError("--sql applies nothing already: drop --dry-run and --strict")
        result = commands.migration_sql(settings_of(c), to, allow_out_of_order)
        print(report.migration_sql(result))
        return
    if strict:
        lint_before_migrating(settings_of(c), to, allow_out_of_order)
    names = commands.migrate(
        settings_of(c),
        to=to,
        dry_run=dry_run,
        allow_out_of_order=allow_out_of_order,
        on_event=print_progress,
    )
    print(report.migrated(names, dry_run=dry_run))


def lint_before_migrating(settings, to, allow_out_of_order):
    """Print the lint of the pending migrations; raise UnsafeMigration on a finding. A
    database that does not exist yet has nothing to lint against, nor needs it: every
    table the migrations touch is new."""
    from db import commands, report
    from db.errors import DatabaseMissing, UnsafeMigration

    try:
        result = commands.lint(settings, to=to, allow_out_of_order=allow_out_of_order)
    except DatabaseMissing:
        print(report.NEW_DATABASE_LINT, flush=True)
        return
    if result.unacknowledged:
        print(report.linted(result))
        raise UnsafeMigration(
            f"--strict: {len(result.unacknowledged)} unacknowledged lint finding(s) in the "
            "pending migrations; nothing applied (make them safe, or acknowledge each with "
            "'-- lint: allow RULE: why' in the migration)"
        )


@toolkit_task(
    iterable=["version"],
    help={
        "version": "lint only this pending migration (002 or 002_name); repeat for more",
        "debug": DEBUG_HELP,
    },
)
def lint(c, version=None, debug=False):
    """Check pending migrations for operations unsafe on a large live table (exit 1 if any)."""
    from db import commands, report

    result = commands.lint(settings_of(c), versions=version or ())
    print(report.linted(result))
    if result.unacknowledged:
        sys.stdout.flush()
        raise Exit(code=1)


@toolkit_task(
    all_tenants=True,
    numbers=("steps",),
    help={
        "to": "roll back every migration after this version (0: all of them)",
        "steps": "how many migrations to roll back (default 1)",
        "dry-run": "print the plan and change nothing",
        "debug": DEBUG_HELP,
    },
)
def rollback(c, to=None, steps=None, dry_run=False, debug=False):
    """Roll back the last applied migration, or back to --to, or --steps of them."""
    from db import commands, report

    names = commands.rollback(
        settings_of(c), to=to, steps=steps, dry_run=dry_run, on_event=print_progress
    )
    print(report.rolled_back(names, dry_run=dry_run))


@toolkit_task(
    numbers=("images", "users", "seed"),
    help={
        "images": "how many images to generate (default 10,000)",
        "users": "how many users (default: images / 20, at least 1)",
        "seed": "random seed (default 1); the same seed on the same database, the same gallery",
        "debug": DEBUG_HELP,
    },
)
def populate(c, images=None, users=None, seed=None, debug=False):
    """Fill the database with a realistic generated gallery, at any scale."""
    from db import commands, report
    from db.populate import GalleryPlan

    plan = GalleryPlan.sized(images=images, users=users, seed=seed)
    progress = report.ProgressPrinter("images", on_terminal=sys.stdout.isatty())
    print(report.populated(commands.populate(settings_of(c), plan, on_progress=progress)))


@toolkit_task(
    numbers=("batch",),
    help={
        "to": "the database to copy to, as a URL: any engine, created if it does not exist",
        "force": "replace the target's contents when it is not empty (drops its tables)",
        "batch": "rows read and written at a time (default 5,000)",
        "debug": DEBUG_HELP,
    },
)
def transfer(c, to, force=False, batch=None, debug=False):
    """Copy the database to another one, on any engine, and prove the copy equal."""
    from db import commands, report

    result = commands.transfer(
        settings_of(c),
        to,
        force=force,
        batch=batch,  # None: commands.transfer's default
        on_progress=report.StageProgress(on_terminal=sys.stdout.isatty()),
    )
    print(report.transferred(result))


@toolkit_task(
    help={
        "version": "the newest migration whose schema the database already has, e.g. 003",
        "debug": DEBUG_HELP,
    }
)
def baseline(c, version, debug=False):
    """Adopt a database that already has the schema: record migrations up to VERSION as applied."""
    from db import commands, report
    from db.errors import SchemaDiffers

    try:
        adoption = commands.baseline(settings_of(c), version)
    except SchemaDiffers as refused:
        print(report.checked(refused.differences), flush=True)
        raise
    print(report.adopted(adoption))


@toolkit_task(help={"debug": DEBUG_HELP})
def repair(c, debug=False):
    """Forget a migration that failed half-way (MySQL), once the database is fixed."""
    from db import commands, report

    print(report.repaired(commands.repair(settings_of(c))))


def restore_point_in_time(settings, yes, moment):
    """db.restore --to-time/--latest on SQLite: the replica's state, with every rule of
    db.restore."""
    from db import commands, report

    if not yes:
        span = commands.recoverable_range(settings, moment)
        confirm("db.restore", report.point_in_time_question(settings, span, moment), settings)
    print(report.restored_to_time(commands.restore_to_time(settings, moment)))


@toolkit_task(
    help={
        "init": "set the replica up first (PostgreSQL: create the pgBackRest stanza; "
        "MariaDB: its folders)",
        "debug": DEBUG_HELP,
    }
)
def replicate(c, init=False, debug=False):
    """Protect the database continuously in db.replica (Litestream, pgBackRest, mariadb-backup)."""
    from db import commands, report

    stopped = commands.replicate(
        settings_of(c), lambda event: print(report.replication_event(event), flush=True), init
    )
    print(report.replication_stopped(stopped), flush=True)


@toolkit_task(
    numbers=("keep", "keep_daily", "keep_weekly", "keep_monthly"),
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
    from db import commands, report
    from db.backups import Retention
    from db.schedule import parse_duration

    retention = Retention(last=keep, daily=keep_daily, weekly=keep_weekly, monthly=keep_monthly)
    options = {"output": output, "compress": compress, "encrypt": encrypt, "retention": retention}
    if every is None:
        print(report.backed_up(commands.backup(settings_of(c), verify=verify, **options)))
        return
    stopped = commands.backup_every(
        settings_of(c),
        parse_duration("--every", every),
        on_backup=lambda result: print(report.backed_up(result), flush=True),
        on_failure=lambda error: report_failure(error, debug or c.config.db.debug),
        **options,
    )
    print(f"stopped by {stopped}; no backup was in progress or it was discarded", flush=True)


def report_failure(error, debug):
    """Print a failed run of a repeating task as one line (the traceback with --debug)."""
    if debug:
        traceback.print_exception(error)
    print(f"error: {error}", file=sys.stderr, flush=True)


@toolkit_task(
    help={
        "all": "list the backups of every database in the folder, with a column saying whose",
        "max-age": "exit 3 unless this database's newest verified backup is younger "
        "than DURATION (e.g. 26h): a check for cron, CI or a monitor",
        "pitr": "show instead the moments db.replica can restore (db.restore --to-time)",
        "debug": DEBUG_HELP,
    }
)
def backups(c, all=False, max_age=None, pitr=False, debug=False):
    """List this database's backups: time, size, schema version, whether each verified."""
    from db import commands, report
    from db.schedule import parse_duration

    settings = settings_of(c)
    if pitr:
        print(report.recoverable_range(commands.recoverable_range(settings)))
        return
    limit = None if max_age is None else parse_duration("--max-age", max_age)
    print(report.backups_table(commands.list_backups(settings, everyone=all)))
    if limit is not None:
        newest = commands.require_recent_backup(settings, limit)
        print(report.recent_enough(newest, limit))


@toolkit_task(
    help={"path": "the backup file to check", "identity": IDENTITY_HELP, "debug": DEBUG_HELP}
)
def verify(c, path, identity=None, debug=False):
    """Check a backup against its manifest: checksum, integrity, foreign keys, row counts."""
    from db import commands, report

    print(report.verified(commands.verify(settings_of(c), path, identity=identity)))


@toolkit_task(
    all_tenants=True,
    help={
        "json": JSON_HELP,
        "check": "exit 3 unless every migration is applied and unchanged (a deploy gate)",
        "debug": DEBUG_HELP,
    },
)
def status(c, json=False, check=False, debug=False):
    """Show every migration's state, the current version and the (masked) database URL."""
    from db import commands, report

    result = commands.status(settings_of(c))
    print(report.status_json(result) if json else report.status_table(result))
    if check and not result.up_to_date:
        exit_not_in_step()


def exit_not_in_step():
    """End a check whose output already said what is not in step (exit 3)."""
    sys.stdout.flush()
    raise Exit(code=NotUpToDate.exit_code)


@toolkit_task(
    help={
        "output": "write to a file instead of printing; its suffix names the format: "
        ".md (Mermaid in Markdown), .mmd (Mermaid), .dot/.gv (Graphviz), .svg (needs dot)",
        "debug": DEBUG_HELP,
    }
)
def diagram(c, output=None, debug=False):
    """Draw the live schema as an entity-relationship diagram (Mermaid by default)."""
    from db import commands

    text = commands.diagram(settings_of(c), output=output)
    print(f"diagram written to {output}" if output else text, end="\n" if output else "")


@toolkit_task(
    help={
        "output": "write the SQL to this file (its folder must exist) instead of printing it",
        "check": "compare the live schema with FILE (a committed schema.sql): "
        "print the difference and exit 3 when they differ",
        "debug": DEBUG_HELP,
    }
)
def schema(c, output=None, check=None, debug=False):
    """Write the database's complete current schema as SQL for its engine."""
    from db import commands, report

    if check is not None:
        if output is not None:
            raise ConfigError("db.schema --check compares and --output writes: give one of them")
        difference = commands.schema_difference(settings_of(c), check)
        print(difference or f"schema in step with {check}", end="" if difference else "\n")
        if difference:
            exit_not_in_step()
        return
    print(report.schema_dumped(commands.schema(settings_of(c), output=output)))


@toolkit_task(help={"debug": DEBUG_HELP})
def optimize(c, debug=False):
    """Run the engine's maintenance (VACUUM, ANALYZE...) and show the space reclaimed."""
    from db import commands, report

    print(report.optimized(commands.optimize(settings_of(c))))


@toolkit_task(
    query="sql",
    query_or="builtin",
    help={
        "sql": "the SELECT to explain, e.g. \"SELECT * FROM images WHERE caption = 'x'\" "
        "(or give it without --sql)",
        "builtin": "explain the app's typical queries instead (exit 1 on a full scan)",
        "debug": DEBUG_HELP,
    },
)
def explain(c, sql=None, builtin=False, debug=False):
    """Show the engine's plan for a SELECT, flagging full scans of large tables and sorts."""
    from db import commands, report

    result = commands.explain(settings_of(c), sql=sql or None, builtin=builtin)
    print(report.explained(result))
    if result.full_scans:
        sys.stdout.flush()
        raise Exit(code=1)


@toolkit_task(all_tenants=True, help={"json": JSON_HELP, "debug": DEBUG_HELP})
def stats(c, json=False, debug=False):
    """Show each table's rows, size and indexes, the database's size and the latest backup."""
    from db import commands, report

    result = commands.stats(settings_of(c))
    print(report.stats_json(result) if json else report.stats_table(result))


@toolkit_task(
    numbers=("limit",),
    help={
        "limit": "how many statements to show (default 10)",
        "reset": "clear the statistics instead (MariaDB: the whole server's)",
        "json": JSON_HELP,
        "debug": DEBUG_HELP,
    },
)
def top(c, limit=10, reset=False, json=False, debug=False):
    """Show the statements that took the most time in all: calls, mean and max time, rows."""
    from db import report
    from db.top import top as top_of

    result = top_of(settings_of(c), limit=limit, reset=reset)
    if reset:
        print(report.top_reset_json(result) if json else report.top_reset(result))
    else:
        print(report.top_json(result) if json else report.top_table(result))


@toolkit_task(
    all_tenants=True,
    help={
        "json": JSON_HELP,
        "prometheus": "also write the measurements to FILE (*.prom) in Prometheus' text "
        "format, atomically, for node_exporter's textfile collector",
        "every": "check again every DURATION (e.g. 1m) until stopped, printing the verdict "
        "and what is not ok each time (with --prometheus: a scheduled exporter)",
        "debug": DEBUG_HELP,
    },
)
def health(c, json=False, prometheus=None, every=None, debug=False):
    """Check the database's health; exit 0 ok, 1 warning, 2 critical, 3 unknown (Nagios)."""
    from db import report
    from db.errors import HealthUnknown
    from db.health import check_every, check_health
    from db.schedule import parse_duration

    show = report.health_json if json else report.health_lines
    show_each = (  # a run of --every: one log line in JSON, what is not ok in text
        functools.partial(report.health_json, one_line=True)
        if json
        else functools.partial(report.health_lines, problems_only=True)
    )
    try:
        settings = settings_of(c)  # a bad URL too is UNKNOWN to a monitor
        if every is not None:
            stopped = check_every(
                settings,
                parse_duration("--every", every),
                on_report=lambda result: print(show_each(result), flush=True),
                on_failure=lambda error: report_failure(error, debug or c.config.db.debug),
                prometheus=prometheus,
            )
            stop = {"stopped_by": stopped}
            print(report.json_document(stop, indent=None) if json else f"stopped by {stopped}")
            return
        result = check_health(settings, prometheus=prometheus)
    except DbError as exc:
        raise HealthUnknown(str(exc)) from exc
    print(show(result))
    if result.exit_code:
        sys.stdout.flush()
        raise Exit(code=result.exit_code)


@toolkit_task(all_tenants=True, help={"json": JSON_HELP, "debug": DEBUG_HELP})
def check(c, json=False, debug=False):
    """Compare the database with the models and migrations; exit 3 on any difference."""
    from db import commands, report

    differences = commands.check(settings_of(c))
    print(report.checked_json(differences) if json else report.checked(differences))
    if differences:
        exit_not_in_step()


@toolkit_task(
    numbers=("kill",),
    help={
        "json": JSON_HELP,
        "kill": "end session PID, a blocker (PostgreSQL: pg_terminate_backend; MariaDB: "
        "KILL; never on SQLite), after confirmation",
        "yes": "do not ask before --kill (for scripts)",
        "debug": DEBUG_HELP,
    },
)
def locks(c, json=False, kill=None, yes=False, debug=False):
    """Show who holds which lock and who waits on whom; --kill PID ends a blocker."""
    from db import commands, report

    settings = settings_of(c)
    if kill is None:
        result = commands.locks(settings)
        print(report.locks_json(result) if json else report.locks_table(result))
        return
    if not yes:
        session = commands.lock_holder(settings, kill)  # refused before the question
        confirm("db.locks --kill", report.end_question(session), settings)
    print(report.ended_session(commands.end_lock_holder(settings, kill)))


@toolkit_task(
    help={
        "name": "what the migration does, e.g. 'add karma to users'",
        "sql": "write a .sql migration (-- migrate:up / -- migrate:down) instead of Python",
        "auto": "write the migration from the database to the models (columns, indexes)",
        "debug": DEBUG_HELP,
    }
)
def new_migration(c, name, sql=False, auto=False, debug=False):
    """Write the next-numbered migration skeleton (or, --auto, the catch-up) in migrations/."""
    from db import commands

    path = commands.new_migration(settings_of(c), name, sql=sql, auto=auto)
    print(
        f"created {path}"
        if path
        else "nothing to generate: the database is in step with the models"
    )


# --- Tenants (db/tenants.py) -------------------------------------------------------------


@toolkit_task(tenants=False, help={"json": JSON_HELP, "debug": DEBUG_HELP})
def tenants(c, json=False, debug=False):
    """List the tenants: name, schema version, size and latest backup."""
    from db import report
    from db.tenants import tenant_overview

    infos = tenant_overview(settings_of(c))
    print(report.tenants_json(infos) if json else report.tenants_table(infos))


@toolkit_task(
    tenants=False,
    help={
        "name": "the new tenant's name: a lower-case letter, then letters, digits, underscores",
        "no-sample": NO_SAMPLE_HELP,
        "force": "seed the sample seeders even when db.environment is production",
        "debug": DEBUG_HELP,
    },
)
def tenant_create(c, name, no_sample=False, force=False, debug=False):
    """Create a tenant's gallery: migrated and seeded (--no-sample: essentials only)."""
    from db import report
    from db.tenants import create_tenant

    settings = settings_of(c)
    result = create_tenant(settings, name, not no_sample, force, on_event=print_progress)
    print(report.tenant_created(name, result))


@toolkit_task(
    tenants=False,
    help={
        "name": "the tenant to drop, with all its rows (its backups are kept)",
        "yes": "do not ask for confirmation (for scripts and CI)",
        "debug": DEBUG_HELP,
    },
)
def tenant_drop(c, name, yes=False, debug=False):
    """Drop a tenant and every row of it, after confirmation (its backups stay)."""
    from db import report
    from db.tenants import drop_tenant, settings_for

    settings = settings_for(settings_of(c), name)  # a tenant that is not there: said first
    if not yes:
        confirm("db.tenant-drop", f"drop tenant {name} and every row of it", settings)
    drop_tenant(settings_of(c), name)
    print(report.tenant_dropped(name))


TASKS = (
    setup, migrate, lint, rollback, repair, seed, reset, populate, transfer, backup, backups,
    verify, restore, status, stats, new_migration, schema, optimize, explain, diagram, check,
    baseline, replicate, top, locks, health, tenants, tenant_create, tenant_drop,
)  # fmt: skip


def db_collection(project):
    """Return the ``db`` tasks, configured for the project folder ``project``."""
    tasks = Collection("db", *TASKS)
    tasks.configure(
        {
            "db": {
                "project": str(project),
                "url": None,
                "read_url": None,  # where the app reads from: a standby (db.models.reading_from)
                "migrations": "migrations",
                "seeders": "seeders",
                "backups": "backups",
                "backup_recipients": None,
                "backup_identity": None,
                "environment": "development",
                "lock_timeout": "5s",
                "statement_timeout": "off",
                # Text, not 3: Invoke would cast INVOKE_DB_LOCK_RETRIES=abc with int() and
                # fail with a traceback; MigrationTimeouts reads it and refuses it in a line.
                "lock_retries": "3",
                "replica": None,
                "replica_sync_interval": "1s",
                "base_backup_interval": "1d",
                "base_backups_kept": "7",  # text, as lock_retries: db.pitr reads it
                "stanza": "clonegallery",
                "health": health_defaults(),  # db.health's limits (db/health/thresholds.py)
                "tenant": None,  # the tenant tasks work on (--tenant; db/tenants.py)
                "debug": False,
            }
        }
    )
    return tasks


def namespace(project):
    """Return the root namespace of ``invoke`` (tasks.py): ``db.setup``, ``db.status``..."""
    root = Collection()
    root.add_collection(db_collection(project))
    return root


class ToolkitProgram(Program):
    """``clonegallery-db``: the db tasks, without the prefix, for any project folder.

    Invoke's own parse errors (an unknown option, a missing argument, a task that does
    not exist, a number that is not one) end as one ``error:`` line and exit 2.
    """

    def core_args(self):
        return [
            *super().core_args(),
            Argument(
                names=("project",),
                help=f"the project folder (default: ${PROJECT_ENV} or the current directory)",
            ),
        ]

    def run(self, argv=None, exit=True):
        global TASK_PREFIX
        TASK_PREFIX = f"{self.binary} "
        try:
            super().run(argv, exit)
            sys.stdout.flush()
        except BrokenPipeError:  # --list or --help into | head
            quiet_closed_stdout()
            sys.exit(CLOSED_PIPE_EXIT)

    def parse_core(self, argv):
        with usage_errors():
            super().parse_core(argv)

    def parse_collection(self):
        self.project_given = self.args.project.value
        project = Path(self.project_given or os.environ.get(PROJECT_ENV) or os.getcwd())
        if not project.is_dir():
            source = "--project" if self.project_given else PROJECT_ENV
            raise Exit(f"error: {source} {project}: no such folder", USAGE_EXIT)
        self.namespace = db_collection(project.resolve())
        super().parse_collection()
        self.config.set_project_location(str(project))
        try:
            self.config.load_project()
        except (yaml.YAMLError, ValueError, OSError) as exc:  # YAML, JSON, unreadable
            detail = " ".join(str(exc).split())
            raise Exit(
                f"error: the invoke.yaml of {project} cannot be read: {detail}", USAGE_EXIT
            ) from None

    def parse_tasks(self):
        with usage_errors():
            super().parse_tasks()
        if self.args.project.value != self.project_given:
            raise Exit("error: --project goes before the task's name", code=USAGE_EXIT)

    def parse_cleanup(self):
        with usage_errors():
            super().parse_cleanup()


@contextmanager
def usage_errors():
    """Turn Invoke's parse errors into one line and exit 2."""
    try:
        yield
    except ParseError as exc:
        raise Exit(f"error: {named_flags(str(exc))}", code=USAGE_EXIT) from None


def named_flags(message):
    """Return Invoke's parse error with its ``<Argument: to>`` written as ``--to``."""
    return re.sub(
        r"Flag <Argument: ([^>]+)>", lambda found: "--" + found[1].replace("_", "-"), message
    )


def main():
    """The ``clonegallery-db`` console script."""
    ToolkitProgram(name="clonegallery-db", binary="clonegallery-db", version=version()).run()


def version():
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("clonegallery-db")
    except PackageNotFoundError:
        return "unknown"
