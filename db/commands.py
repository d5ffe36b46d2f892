"""One function per task: open the database, call the library, return data.

    settings = Settings(url="sqlite:///clonegallery.db", migrations_dir=Path("migrations"))
    migrate(settings, to="002")          # names applied
    status(settings)                     # a StatusReport

Invoke knows nothing of what happens here, and nothing here prints: progress
goes to the ``on_event`` callback, results are returned.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import peewee

from db.config import check_url, database_exists, mask_url, open_database
from db.errors import ConfigError, DatabaseFailed
from db.loader import discover, next_version, slugify
from db.runner import APPLIED, Runner

IN_MEMORY_URL = "sqlite:///:memory:"

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
    """What ``db.status`` shows: where, which version, and every migration's state."""

    url: str
    exists: bool
    current_version: str | None
    migrations: list

    @property
    def up_to_date(self):
        return all(m.state == APPLIED for m in self.migrations)


@contextmanager
def runner_for(settings, on_event=None, create=True):
    """Yield a Runner on a freshly opened database, closing it afterwards.

    With ``create=False`` a database that does not exist yet is not created: the
    runner works on an empty in-memory stand-in instead (to plan or to report).
    """
    url = settings.url
    if not create and not database_exists(url):
        check_url(url)
        url = IN_MEMORY_URL
    database = open_database(url)
    try:
        yield Runner(database, settings.migrations_dir, on_event)
    except peewee.DatabaseError as exc:
        raise DatabaseFailed(f"{mask_url(settings.url)}: {exc}") from exc
    finally:
        database.close()


def migrate(settings, to=None, dry_run=False, allow_out_of_order=False, on_event=None):
    """Apply pending migrations; return the names applied (or planned, with dry_run).

    A new database is created only once the plan has passed validation, so a
    refused run leaves nothing behind.
    """
    options = {"to": to, "allow_out_of_order": allow_out_of_order}
    if dry_run or not database_exists(settings.url):
        with runner_for(settings, create=False) as planner:
            plan = planner.migrate(dry_run=True, **options)
        if dry_run or not plan:
            return plan
    with runner_for(settings, on_event) as runner:
        return runner.migrate(**options)


def rollback(settings, to=None, steps=None, dry_run=False, on_event=None):
    """Revert applied migrations; return the names reverted (or planned, with dry_run)."""
    with runner_for(settings, on_event, create=False) as runner:
        return runner.rollback(to=to, steps=steps, dry_run=dry_run)


def setup(settings, on_event=None):
    """Bring a database from nothing to ready; return the names applied."""
    return migrate(settings, on_event=on_event)


def status(settings):
    """Return a StatusReport; a database that does not exist yet is left uncreated."""
    exists = database_exists(settings.url)
    with runner_for(settings, create=False) as runner:
        return StatusReport(
            mask_url(settings.url), exists, runner.current_version(), runner.status()
        )


def new_migration(settings, description, sql=False):
    """Write the next-numbered migration skeleton; return its path."""
    slug = slugify(description)
    if not slug:
        raise ConfigError(
            f"new-migration {description!r}: give the migration a description in words, "
            "e.g. 'add karma to users'"
        )
    files = discover(settings.migrations_dir)
    kind, template = ("sql", SQL_TEMPLATE) if sql else ("py", PYTHON_TEMPLATE)
    path = settings.migrations_dir / f"{next_version(files)}_{slug}.{kind}"
    path.write_text(template.format(title=description.strip()), encoding="utf-8")
    return path
