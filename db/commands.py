"""One function per task: open the database, call the library, return data.

    settings = Settings(url="sqlite:///clonegallery.db", migrations_dir=Path("migrations"))
    migrate(settings, to="002")          # names applied
    status(settings)                     # a StatusReport

Invoke knows nothing of what happens here, and nothing here prints: progress
goes to the ``on_event`` callback, results are returned. Each command resolves the
configured database once, as a ``db.target.Target`` (URL, engine, existence, connection),
and hands that on.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import peewee

from db.access import as_system
from db.errors import ConfigError, DatabaseFailed, IncompleteTransfer, NotMigrated
from db.history import DatabaseIdentity, History, SeederHistory, TransferMarker
from db.loader import discover, next_version, slugify
from db.runner import APPLIED, Runner
from db.seeders import Seeder, refuses_sample
from db.target import Target

# The feature modules (backups, stats, explain, transfer...) are imported by the
# commands that use them: db.status loads none of them.

PYTHON_TEMPLATE = '''"""{title}"""

import peewee as pw  # noqa: F401  (fields for migrator.add_column and friends)


def up(migrator, db):
    migrator.migrate(
        # migrator.add_column("users", "karma", pw.IntegerField(default=0)),
    )


def down(migrator, db):
    migrator.migrate(
        # migrator.drop_column("users", "karma"),
    )
'''

SQL_TEMPLATE = """-- {title}

-- migrate:up


-- migrate:down

"""


@dataclass(frozen=True)
class StatusReport:
    """What ``db.status`` shows: where, which version, every migration's and seeder's state."""

    url: str
    exists: bool
    current_version: str | None
    migrations: list
    seeders: list
    incomplete_transfer: object = None  # an IncompleteTransferInfo: not to be used
    baselines: dict = field(default_factory=dict)  # version -> note, of those db.baseline recorded
    invalid_indexes: list = field(default_factory=list)  # (index, table): failed concurrent builds
    replication: object = None  # the server's engines.base.Replication (None: no such information)

    @property
    def up_to_date(self):
        """Whether every migration is applied and unchanged (seeders do not count), no
        index is left invalid, and the database is not an unfinished transfer."""
        return (
            self.incomplete_transfer is None
            and not self.invalid_indexes
            and all(m.state == APPLIED for m in self.migrations)
        )


@dataclass(frozen=True)
class BackupResult:
    """What ``db.backup`` did: the backup made, and the old backups pruned."""

    backup: object
    pruned: list


@dataclass(frozen=True)
class RestoreResult:
    """What ``db.restore`` did: the backup restored and the safety backup taken first."""

    path: Path
    manifest: dict
    safety: object


@dataclass(frozen=True)
class SetupResult:
    """What ``db.setup`` did: the migrations applied, the seeders run, and the sample
    seeders left out (``sample=False``)."""

    migrations: list
    seeders: list
    skipped_sample: tuple = ()


@contextmanager
def opened(target, create=False, allow_incomplete=False):
    """Yield the target's database, opened (see Target.opened), and close it afterwards.

    The target of an unfinished db.transfer is refused unless ``allow_incomplete``; a
    MySQL restore killed in the middle of its swap is finished first. Writes through the
    models inside run as maintenance code (db.access.as_system).
    """
    try:
        with target.opened(create) as database:
            target.database_engine.finish_interrupted_restore(database)
            if not allow_incomplete:
                _refuse_incomplete_transfer(database, target)
            with as_system():  # the tasks are maintenance code: seeders, the generator
                yield database
    except peewee.DatabaseError as exc:
        raise DatabaseFailed(f"{target.masked_url}: {exc}") from exc


def _refuse_incomplete_transfer(database, target):
    marked = TransferMarker(database).read()
    if marked is not None:
        raise IncompleteTransfer(
            f"{target.masked_url} is an incomplete transfer from {marked.source}; "
            "run invoke db.transfer --force again or invoke db.reset"
        )


@contextmanager
def runner_for(target, settings, on_event=None, create=False, allow_incomplete=False):
    """Yield a migration Runner on the target's database (see ``opened``)."""
    from db.timeouts import MigrationTimeouts

    timeouts = MigrationTimeouts.from_settings(settings)  # a bad setting: refused first
    with opened(target, create, allow_incomplete) as database:
        yield Runner(database, settings.migrations_dir, on_event, target.database_engine, timeouts)


def migrate(settings, to=None, dry_run=False, allow_out_of_order=False, on_event=None):
    """Apply pending migrations; return the names applied (or planned, with dry_run).

    A new database is created only once the plan has passed validation, so a
    refused run leaves nothing behind.
    """
    options = {"to": to, "allow_out_of_order": allow_out_of_order, "dry_run": dry_run}
    target = Target(settings.url, writes=None if dry_run else "db.migrate")
    return _migrate(target, settings, on_event, **options)


def _migrate(target, settings, on_event, dry_run=False, **options):
    if dry_run or not target.exists:
        with runner_for(target, settings) as planner:
            plan = planner.migrate(dry_run=True, **options)
        if dry_run or not plan:
            return plan
    with runner_for(target, settings, on_event, create=True) as runner:
        return runner.migrate(**options)


@dataclass(frozen=True)
class MigrationSql:
    """What ``db.migrate --sql`` shows: where, and each pending migration's captured SQL
    (db.capture.CapturedMigration) with its Limits (db.timeouts)."""

    url: str
    engine: object
    migrations: list
    limits: list


def migration_sql(settings, to=None, allow_out_of_order=False):
    """Return the MigrationSql of the pending migrations (up to ``to``), applying nothing
    (see db.capture); db.migrate's refusals apply."""
    from db.capture import capture_pending
    from db.timeouts import MigrationTimeouts

    timeouts = MigrationTimeouts.from_settings(settings)
    target = _capturable(Target(settings.url), "its SQL is read against its live schema")
    with runner_for(target, settings) as runner:
        captured = capture_pending(runner, to, allow_out_of_order)
        engine = runner.engine
    limits = [timeouts.for_step(item.options) for item in captured]
    return MigrationSql(target.masked_url, engine, captured, limits)


def lint(settings, versions=(), to=None, allow_out_of_order=False):
    """Return the LintReport (see db.lint) of the pending migrations (up to ``to``), or of
    the pending ``versions`` only; a version that is not pending: UnknownVersion."""
    from db.capture import capture_pending
    from db.lint import lint_migrations

    target = _capturable(Target(settings.url), "nothing to lint against")
    with runner_for(target, settings) as runner:
        wanted = _pending_versions(runner, versions) if versions else None
        if wanted:
            to = max(wanted, key=int)
        captured = capture_pending(runner, to, allow_out_of_order)
        return lint_migrations(runner.engine, runner.database, captured, only=wanted)


def _capturable(target, consequence):
    """Return the target, refusing a server database that does not exist yet (an SQLite
    file that does not is read as an empty one)."""
    from db.engines.base import ServerEngine

    if isinstance(target.engine, ServerEngine):
        target.require_existing(consequence)
    return target


def _pending_versions(runner, versions):
    """Return the version strings of ``versions`` (002, 2 or 002_name), each pending."""
    from db.errors import UnknownVersion
    from db.runner import PENDING

    by_number = {int(row.version): row for row in runner.status()}
    wanted = set()
    for text in versions:
        head = str(text).split("_", 1)[0]
        row = by_number.get(int(head)) if head.isdigit() else None
        if row is None:
            known = ", ".join(row.version for row in by_number.values()) or "none"
            raise UnknownVersion(f"{text}: no migration has that version (known: {known})")
        if row.state != PENDING:
            raise UnknownVersion(
                f"{text}: {row.name} is {row.state}, not pending; db.lint checks the "
                "migrations db.migrate would apply"
            )
        wanted.add(row.version)
    return wanted


def rollback(settings, to=None, steps=None, dry_run=False, on_event=None):
    """Revert applied migrations; return the names reverted (or planned, with dry_run)."""
    target = Target(settings.url, writes=None if dry_run else "db.rollback")
    with runner_for(target, settings, on_event) as runner:
        reverted = runner.rollback(to=to, steps=steps, dry_run=dry_run)
        if reverted and not dry_run and runner.current_version() is None:
            # Back to no schema at all: the seeded rows are gone, so is the record of them.
            SeederHistory(runner.database).drop_table()
        return reverted


def baseline(settings, version):
    """Adopt a database that already has the schema of the migrations up to ``version``
    (see db.baseline); return an Adoption."""
    from db import baseline as baselines

    baselines.chosen_migrations(settings.migrations_dir, version)  # refused before opening
    target = Target(settings.url, writes="db.baseline")
    target.require_existing("nothing to adopt")
    with opened(target) as database:
        return baselines.adopt(
            target, database, settings.migrations_dir, settings.seeders_dir, version
        )


def repair(settings):
    """Forget failed migration runs; return their names."""
    with runner_for(Target(settings.url, writes="db.repair"), settings) as runner:
        return runner.repair()


def seed(settings, force=False, sample=True, on_event=None):
    """Run the pending seeders (all of them with ``force``; only the essential ones
    without ``sample``); return a SeedResult. In production (``settings.environment``)
    a sample seeder is seeded only with ``force``: else SampleRefused, nothing run."""
    refuse = sample and not force and refuses_sample(settings.environment)
    return _seed(Target(settings.url, writes="db.seed"), settings, force, on_event, sample, refuse)


def _seed(target, settings, force, on_event, sample=True, refuse_sample=False):
    with runner_for(target, settings) as runner:
        _require_migrated(runner)
        return Seeder(runner.database, settings.seeders_dir, on_event, runner.engine).seed(
            force=force, sample=sample, refuse_sample=refuse_sample
        )


def setup(settings, sample=True, force=False, on_event=None):
    """Bring a database from nothing to a seeded gallery (without the sample seeders
    unless ``sample``); return a SetupResult. In production (``settings.environment``)
    a setup that would seed a sample seeder is refused (SampleRefused) before anything
    runs, unless ``force``."""
    target = Target(settings.url, writes="db.setup")
    refuse = sample and not force and refuses_sample(settings.environment)
    if refuse:
        # Checked before the first migration: a refused setup creates nothing.
        with opened(target) as database:
            Seeder(database, settings.seeders_dir, engine=target.database_engine).plan(
                sample=sample
            ).refuse_sample()
    migrations = _migrate(target, settings, on_event)
    seeded = _seed(target, settings, False, on_event, sample, refuse)
    return SetupResult(migrations, seeded.applied, tuple(seeded.skipped_sample))


def reset(settings, data_only=False):
    """Drop every table (or, with ``data_only``, empty them but keep the schema and its
    migration history); return the tables dropped or emptied."""
    target = Target(settings.url, writes="db.reset")
    if not target.exists:
        return []
    with opened(target, allow_incomplete=True) as database:
        engine = target.engine
        with engine.migration_lock(database):
            TransferMarker(database).clear()  # what an unfinished transfer left goes too
            if data_only:
                kept = (History.table_name, DatabaseIdentity.table_name)
                return engine.empty_all_tables(database, keep=kept)
            # The database stays itself: its backups from before the reset remain its own.
            identity = DatabaseIdentity(database).read()
            dropped = engine.drop_all_tables(database)
            if identity is not None:
                DatabaseIdentity(database).write(identity)
            return [table for table in dropped if table != DatabaseIdentity.table_name]


def populate(settings, plan, on_progress=None):
    """Generate a realistic gallery at scale (see db.populate); return a PopulateResult."""
    from db.populate import populate as populate_gallery

    plan.check()
    with runner_for(Target(settings.url, writes="db.populate"), settings) as runner:
        _require_migrated(runner)
        return populate_gallery(runner.database, plan, on_progress)


def backup(settings, output=None, retention=None, verify=False, compress=False, encrypt=False):
    """Back up the database (verifying it when asked, or before pruning by ``retention``,
    a backups.Retention; encrypted to the configured recipients with ``encrypt``);
    return a BackupResult."""
    from db import backups

    retention = retention or backups.Retention()
    recipients = _recipients(settings) if encrypt else None  # a bad key: refused first
    target = Target(settings.url)
    target.require_existing("nothing to back up")
    with opened(target) as database:
        if verify or retention.active:
            _refuse_verifying_on_standby(target, database)
        info = backups.create_backup(
            target,
            settings.backups_dir,
            output,
            compress=compress,
            recipients=recipients,
            verify=verify or retention.active,
        )
        owner = backups.Owner.known(database, settings.url)
    pruned = backups.prune_backups(info.path.parent, owner, retention)
    return BackupResult(info, pruned)


def _refuse_verifying_on_standby(target, database):
    """A backup is verified in a scratch database beside the live one: a standby cannot
    create one (an unverified backup of it can be taken, and verified on the primary)."""
    from db.errors import ReadOnlyStandby

    primary = target.engine.primary_of(database)
    if primary is not None:
        raise ReadOnlyStandby(
            f"{target.masked_url} is a read-only standby of {primary}: it cannot verify a "
            "backup (verifying loads it into a scratch database); back up without --verify "
            "and --keep*, then run invoke db.verify FILE against the primary"
        )


def _refuse_scheduling_on_standby(target):
    """Every scheduled backup is verified, which a standby cannot do: refuse it once, at
    start. A database or server not there yet is left to the runs (it may come)."""
    from db.errors import ConnectionFailed

    try:
        if not target.exists:
            return
    except ConnectionFailed:
        return
    with opened(target) as database:
        _refuse_verifying_on_standby(target, database)


def _recipients(settings):
    from db.backups import encryption

    return encryption.parse_recipients(settings.backup_recipients or "")


def _identities(settings, identity):
    """Return the identities of ``identity`` (a path) or of the configured identity
    file, or None when neither is given."""
    from db.backups import encryption

    path = identity or settings.backup_identity
    return encryption.read_identities(path) if path else None


def backup_every(settings, period, on_backup, on_failure, **options):
    """Back up the database every ``period`` (a timedelta), each backup verified, until
    SIGTERM or Ctrl-C; each BackupResult goes to ``on_backup``, each failed run to
    ``on_failure`` (the next period tries again). Return the name of the signal that
    stopped it; a backup in progress then is discarded."""
    from db import backups, schedule

    if options.get("output") is not None:
        raise ConfigError("--every writes into the backups folder: drop --output")
    # What no later run could mend is refused now, not once a period.
    target = Target(settings.url)  # a URL that can name no database
    backups.writable_folder(settings.backups_dir)
    _refuse_scheduling_on_standby(target)
    with schedule.stop_on_signals() as stops:
        try:
            schedule.run_every(
                period,
                lambda: on_backup(backup(settings, verify=True, **options)),
                on_failure,
                stops,
            )
        except schedule.Stopped as stop:
            return str(stop)


@dataclass(frozen=True)
class RestorePlan:
    """What db.restore is about to do: which backup, of which database, into which."""

    path: Path
    backup_of: object  # the Owner the backup's manifest names (None: it names none)
    target: object  # the Owner of the configured database

    @property
    def foreign(self):
        """Whether the backup is of another database than the one it would replace."""
        return self.backup_of is None or not self.target.is_same(self.backup_of)


def refuse_standby(settings, task):
    """Raise ReadOnlyStandby now, before a question is asked, when ``task`` (one that
    writes) would run on a read-only standby."""
    Target(settings.url, writes=task).check_writable()


def restore_plan(settings, path):
    """Return the RestorePlan of restoring ``path``; raise BackupError when the file or
    its manifest is missing (before anyone is asked to confirm). Nothing else is checked
    or changed yet."""
    from db import backups
    from db.errors import BackupError

    try:
        manifest = backups.manifest_of(path)
    except BackupError as exc:
        raise BackupError(f"{exc}; nothing restored") from None
    refuse_standby(settings, "db.restore")  # before anyone is asked to confirm
    return RestorePlan(
        Path(path), backups.Owner.from_manifest(manifest), backups.current_owner(settings.url)
    )


def restore(settings, path, identity=None):
    """Restore the database from a verified backup (decrypted with the ``identity``
    file, or the configured one, when encrypted), after a safety backup of the current
    one; return a RestoreResult."""
    from db import backups

    versions = [f.version for f in discover(settings.migrations_dir)]
    latest_known = max(versions, key=int) if versions else None
    identities = _identities(settings, identity)
    refuse_standby(settings, "db.restore")
    # Every check that needs no loading runs before the live database is touched.
    manifest = backups.check_restorable(path, settings.url, latest_known, identities)
    safety = backups.restore_backup(
        settings.url, path, manifest, settings.backups_dir, identities=identities
    )
    return RestoreResult(Path(path), manifest, safety)


def verify(settings, path, identity=None):
    """Verify a backup file (a server backup on the configured server; an encrypted one
    decrypted with the ``identity`` file, or the configured one); mark it verified and
    return its BackupInfo, or raise."""
    from db import backups

    info = backups.BackupInfo(Path(path), backups.read_manifest(path))
    return _verified(info, settings.url, _identities(settings, identity))


@dataclass(frozen=True)
class BackupListing:
    """What db.backups shows: the backups of ``owner`` (None: of every database)."""

    owner: object
    backups: list


def list_backups(settings, everyone=False):
    """Return a BackupListing of the backups folder: the configured database's backups,
    newest first, or with ``everyone`` every backup there."""
    from db import backups

    owner = None if everyone else backups.current_owner(settings.url)
    return BackupListing(owner, backups.list_backups(settings.backups_dir, owner))


def require_recent_backup(settings, max_age, now=None):
    """Raise BackupTooOld unless the configured database's newest verified backup is
    younger than ``max_age`` (a timedelta); return that backup."""
    from db import backups
    from db.errors import BackupTooOld
    from db.schedule import format_age, utc_moment

    owner = backups.current_owner(settings.url)
    newest = backups.newest_verified(settings.backups_dir, owner)
    if newest is None:
        raise BackupTooOld(f"{owner.describe()} has no verified backup in {settings.backups_dir}")
    age = (now or utc_moment()) - backups.created_moment(newest)
    if age > max_age:
        raise BackupTooOld(
            f"the newest verified backup of {owner.describe()} is {format_age(age)} old "
            f"(--max-age {format_age(max_age)}): {newest.path}"
        )
    return newest


def stats(settings):
    """Return the DatabaseStats of the database (see db.stats); it must exist."""
    from db.stats import database_stats

    target = Target(settings.url)
    target.require_existing("no statistics")
    with opened(target):
        return database_stats(target, settings.backups_dir)


DIAGRAM_FORMATS = {".md": "markdown", ".mmd": "mermaid", ".dot": "dot", ".gv": "dot", ".svg": "svg"}


def diagram(settings, output=None):
    """Draw the live schema: return the diagram's text (Mermaid unless ``output`` names
    another format by its suffix), written to ``output`` when given."""
    from db import diagram as diagrams

    kind = "mermaid" if output is None else _diagram_format(output)
    target = Target(settings.url)
    target.require_existing("no schema to draw")
    with opened(target) as database:
        schema = diagrams.read_schema(database)
    text = {
        "mermaid": lambda: diagrams.mermaid(schema),
        "markdown": lambda: f"```mermaid\n{diagrams.mermaid(schema)}```\n",
        "dot": lambda: diagrams.graphviz(schema),
        "svg": lambda: diagrams.render_svg(diagrams.graphviz(schema)),
    }[kind]()
    if output is not None:
        Path(output).write_text(text, encoding="utf-8")
    return text


def _diagram_format(output):
    path = Path(output)
    if not path.parent.resolve().is_dir():
        raise ConfigError(f"--output {output}: folder {path.parent} does not exist")
    kind = DIAGRAM_FORMATS.get(path.suffix.lower())
    if kind is None:
        known = ", ".join(DIAGRAM_FORMATS)
        raise ConfigError(f"--output {output}: name the format by its suffix ({known})")
    return kind


def _verified(info, url, identities=None):
    from db import backups

    backups.raise_problems(backups.verify_backup(info.path, url, identities))
    return backups.mark_verified(info)


def status(settings):
    """Return a StatusReport; a database that does not exist yet is left uncreated."""
    target = Target(settings.url)
    with runner_for(target, settings, allow_incomplete=True) as runner:
        seeders = Seeder(runner.database, settings.seeders_dir, engine=runner.engine).status()
        return StatusReport(
            target.masked_url,
            target.exists,
            runner.current_version(),
            runner.status(),
            seeders,
            TransferMarker(runner.database).read(),
            baselines={v: r.baseline for v, r in runner.history.applied().items() if r.baseline},
            invalid_indexes=runner.engine.invalid_indexes(runner.database) if target.exists else [],
            replication=runner.engine.replication(runner.database) if target.exists else None,
        )


def transfer(settings, to, force=False, batch=None, on_progress=None):
    """Copy the database to the one at ``to`` (any engine; created if need be) and prove
    the copy equal (see db.transfer); return a TransferResult."""
    from db import transfer as transfers

    batch = transfers.DEFAULT_BATCH if batch is None else batch
    transfers.check_options(to, batch)  # a bad --to or --batch: refused before opening
    Target(to, writes="db.transfer").check_writable()  # not onto a standby
    target = Target(settings.url)
    target.require_existing("nothing to transfer")
    with runner_for(target, settings) as runner:
        _require_migrated(runner)
        return transfers.transfer(target, to, settings.migrations_dir, force, batch, on_progress)


def _require_migrated(runner):
    behind = [m for m in runner.status() if m.state != APPLIED]
    if behind:
        listed = ", ".join(f"{m.name} ({m.state})" for m in behind)
        raise NotMigrated(
            f"the database is not fully migrated ({listed}); run invoke db.migrate first"
        )


def new_migration(settings, description, sql=False, auto=False):
    """Write the next-numbered migration skeleton (with ``auto``: the migration from the
    database to the models, see db.autogen); return its path, or None when ``auto`` finds
    the database in step."""
    if auto and sql:
        raise ConfigError("new-migration --auto writes a Python migration: drop --sql")
    slug = slugify(description)
    if not slug:
        raise ConfigError(
            f"new-migration {description!r}: give the migration a description in words, "
            "e.g. 'add karma to users'"
        )
    files = discover(settings.migrations_dir)
    kind, text = ("sql", SQL_TEMPLATE) if sql else ("py", PYTHON_TEMPLATE)
    text = text.format(title=description.strip())
    if auto:
        from db import autogen

        target = Target(settings.url)
        target.require_existing("no database to compare with the models")
        with opened(target) as database:
            text = autogen.migration_text(database, settings.migrations_dir, description.strip())
        if text is None:
            return None
    path = settings.migrations_dir / f"{next_version(files)}_{slug}.{kind}"
    path.write_text(text, encoding="utf-8")
    return path


def schema(settings, output=None):
    """Return the migrated database's schema as SQL for its engine (see db.schema_dump),
    written to ``output`` when given; a SchemaDump."""
    from db import schema_dump

    if output is not None:
        schema_dump.check_output(output)  # a missing folder: refused before the dump
    target = Target(settings.url)
    target.require_existing("no schema to write")
    with runner_for(target, settings) as runner:
        _require_migrated(runner)
        sql = schema_dump.schema_sql(target)
        tables = len(target.engine.tables(runner.database))
    path = None if output is None else schema_dump.write_schema(sql, output)
    return schema_dump.SchemaDump(sql, tables, path)


def schema_difference(settings, path):
    """Return the unified diff from the schema file ``path`` (a committed schema.sql) to
    the migrated database's live schema (see db.schema_dump); "" when they are in step."""
    from db import schema_dump

    committed = schema_dump.read_schema(path)  # a bad file: refused before the database opens
    target = Target(settings.url)
    target.require_existing("no schema to compare")
    with runner_for(target, settings) as runner:
        _require_migrated(runner)
        return schema_dump.schema_diff(committed, schema_dump.schema_sql(target), str(path))


def optimize(settings):
    """Run the engine's maintenance under the migration lock (see db.maintenance);
    return an Optimized."""
    from db.maintenance import optimize as run_maintenance

    target = Target(settings.url, writes="db.optimize")
    target.require_existing("nothing to optimize")
    with opened(target) as database, target.engine.migration_lock(database):
        return run_maintenance(target.engine, database)


def explain(settings, sql=None, builtin=False):
    """Return an ExplainReport (see db.explain): the plan of one SELECT, or with
    ``builtin`` of each of the app's typical queries (on a migrated database)."""
    from db import explain as explains

    if builtin == (sql is not None):
        raise ConfigError("db.explain needs either the SQL of one SELECT or --builtin, not both")
    if sql is not None:
        explains.check_select(sql)  # refused before the database is opened
    target = Target(settings.url)
    target.require_existing("nothing to explain")
    with runner_for(target, settings) as runner:
        if builtin:
            _require_migrated(runner)
            return explains.explain_builtin(runner.database)
        explained = explains.explain(runner.database, sql)
        return explains.ExplainReport(target.engine.name, (explained,))


def check(settings):
    """Return the Differences between the database and the models and migrations (see
    db.check); the database must exist."""
    from db.check import check_database

    target = Target(settings.url)
    target.require_existing("nothing to check")
    with opened(target) as database:
        return check_database(database, settings.migrations_dir)


@contextmanager
def _existing(settings, consequence):
    """Yield (target, open database) of the configured database; DatabaseMissing, saying
    ``consequence``, when it does not exist."""
    target = Target(settings.url)
    target.require_existing(consequence)
    with opened(target) as database:
        yield target, database


def locks(settings):
    """Return the LockReport of the database (see db.locks): who holds what, who waits."""
    from db.locks import lock_report

    with _existing(settings, "no sessions to show") as (target, database):
        return lock_report(target.engine, database, target.masked_url)


def lock_holder(settings, session_id):
    """Return the Session ``session_id`` that db.locks --kill would end; ConfigError when
    there is no such session on this database (or the engine's sessions are not ended)."""
    from db.locks import require_session

    with _existing(settings, "no sessions to end") as (target, database):
        return require_session(target.engine, database, session_id)


def end_lock_holder(settings, session_id):
    """End session ``session_id`` of the database (db.locks --kill); return its Session."""
    from db.locks import end_session

    with _existing(settings, "no sessions to end") as (target, database):
        return end_session(target.engine, database, session_id)


# --- Point-in-time recovery (db/pitr) ----------------------------------------------------


@dataclass(frozen=True)
class PointInTimeResult:
    """What db.restore --to-time/--latest did: the moment asked (None: the latest), the
    range the replica held, and the restore of that state (a RestoreResult)."""

    moment: object
    span: object
    restored: RestoreResult


def replicate(settings, say, init=False):
    """Protect the database continuously with its engine's tool (db/pitr) until SIGTERM
    or Ctrl-C, calling ``say(event)`` as it goes; return the stop signal's name."""
    from db import pitr

    target = Target(settings.url, writes="db.replicate")  # protects a primary
    protection = pitr.continuous_protection(target.engine)
    target.require_existing("nothing to replicate")
    return protection.replicate(settings, say, init)


def recoverable_range(settings, moment=None):
    """Return the RecoverableRange of the configured replica; raise BackupError naming
    it when it does not hold ``moment``."""
    from db import pitr

    span = pitr.continuous_protection(Target(settings.url).engine).recoverable_range(settings)
    span.require(moment)
    return span


def restores_whole_server(settings, data_dir, port):
    """Whether db.restore --to-time makes a new server (PostgreSQL, MariaDB: into
    ``data_dir``) rather than replacing the database (SQLite); ConfigError when the
    options do not fit the engine."""
    from db import pitr

    engine = Target(settings.url).engine
    whole = getattr(pitr.continuous_protection(engine), "WHOLE_SERVER", False)
    if whole and data_dir is None:
        raise ConfigError(
            f"point-in-time recovery on {engine.name} restores the whole server: give "
            "--data-dir NEW_FOLDER (and --port PORT to start it there)"
        )
    if not whole and (data_dir is not None or port is not None):
        raise ConfigError(
            f"--data-dir and --port are for a server's point-in-time recovery; {engine.name} "
            "restores into the database itself"
        )
    return whole


def restore_server(settings, moment, data_dir, port=None):
    """Restore the whole server as it was at ``moment`` (None: the latest) into the new
    folder ``data_dir`` (started on ``port`` when given); return the ServerRestore."""
    from db import pitr

    protection = pitr.continuous_protection(Target(settings.url).engine)
    return protection.restore_server(settings, moment, data_dir, port)


def restore_to_time(settings, moment=None):
    """Restore the database as it was at ``moment`` (None: the latest state the replica
    holds), with every rule of db.restore; return a PointInTimeResult.

    The replica's state is restored into a private file and backed up there like any
    database (a manifest), so that db.restore's own checks, safety backup and atomic
    swap are what replace the live database."""
    from db import backups, pitr

    target = Target(settings.url)
    protection = pitr.continuous_protection(target.engine)
    with protection.restored_copy(settings, moment) as (copy, span):
        source = Target(f"sqlite:///{copy}")
        with opened(source):
            info = backups.create_backup(source, copy.parent / "backup")
        return PointInTimeResult(moment, span, restore(settings, info.path))
