"""One function per task: open the database, call the library, return data.

    settings = Settings(url="sqlite:///clonegallery.db", migrations_dir=Path("migrations"))
    migrate(settings, to="002")          # names applied
    status(settings)                     # a StatusReport

Invoke knows nothing of what happens here, and nothing here prints: progress
goes to the ``on_event`` callback, results are returned.
"""

from contextlib import contextmanager
from dataclasses import dataclass

from db.config import database_exists, mask_url, open_database
from db.errors import ConfigError
from db.loader import discover, next_version, slugify
from db.runner import DRIFT_STATES, PENDING, Runner

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

IN_MEMORY_URL = "sqlite:///:memory:"

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
        return all(m.state not in (PENDING, *DRIFT_STATES) for m in self.migrations)


@contextmanager
def runner_for(settings, on_event=None, read_only=False):
    """Yield a Runner on a freshly opened database, closing it afterwards.

    With ``read_only``, a database that does not exist yet is not created: the
    runner plans against an empty in-memory stand-in instead.
    """
    url = settings.url
    if read_only and not database_exists(url):
        url = IN_MEMORY_URL
    database = open_database(url)
    try:
        yield Runner(database, settings.migrations_dir, on_event)
    finally:
        database.close()


def migrate(settings, to=None, dry_run=False, allow_out_of_order=False, on_event=None):
    """Apply pending migrations; return the names applied (or planned, with dry_run)."""
    with runner_for(settings, on_event, read_only=dry_run) as runner:
        return runner.migrate(to=to, dry_run=dry_run, allow_out_of_order=allow_out_of_order)


def rollback(settings, to=None, steps=None, dry_run=False, on_event=None):
    """Revert applied migrations; return the names reverted (or planned, with dry_run)."""
    with runner_for(settings, on_event, read_only=dry_run) as runner:
        return runner.rollback(to=to, steps=steps, dry_run=dry_run)


def setup(settings, on_event=None):
    """Bring a database from nothing to ready; return the names applied."""
    return migrate(settings, on_event=on_event)


def status(settings):
    """Return a StatusReport; a database that does not exist yet is left uncreated."""
    exists = database_exists(settings.url)
    with runner_for(settings, read_only=True) as runner:
        return StatusReport(
            mask_url(settings.url), exists, runner.current_version(), runner.status()
        )


def new_migration(settings, description, sql=False):
    """Write the next-numbered migration skeleton; return its path."""
    slug = slugify(description)
    if not slug:
        raise ConfigError("give the migration a description, e.g. 'add karma to users'")
    files = discover(settings.migrations_dir)
    kind, template = ("sql", SQL_TEMPLATE) if sql else ("py", PYTHON_TEMPLATE)
    path = settings.migrations_dir / f"{next_version(files)}_{slug}.{kind}"
    path.write_text(template.format(title=description.strip()), encoding="utf-8")
    return path
