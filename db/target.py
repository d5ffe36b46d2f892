"""The database a command works on, resolved once per command.

    target = Target(settings.url)        # the engine, from the URL, once
    target.require_existing("nothing to back up")   # one probe, one wording
    Target(settings.url, writes="db.migrate")      # a task that writes: a standby refused
    with target.opened() as database:    # the probe's connection, not a second one
        ...

Commands hand the Target (URL, engine, open database) to the library instead of
working the engine out again from a URL or a connection at each step.

A task that writes names itself (``writes="db.seed"``): the first connection to a read-only
standby then raises ReadOnlyStandby, naming its primary, before anything has run; the
tasks that only read (db.status, db.backup, db.check...) work on a standby.
"""

from contextlib import contextmanager

from db.config import mask_url
from db.engines import engine_for_url
from db.errors import DatabaseMissing, ReadOnlyStandby

IN_MEMORY_URL = "sqlite:///:memory:"


class Target:
    """The configured database: its URL, its Engine, whether it exists (probed once, by
    connecting where that is how one finds out) and, while opened, its connection."""

    def __init__(self, url, writes=None):
        self.url = url
        self.writes = writes  # the task, when it writes: refused on a standby
        self.engine = engine_for_url(url)
        self.engine.check_url(url)
        self.database = None  # the open connection, inside opened()
        self.database_engine = None  # its engine: ``engine``, or SQLite's for a stand-in
        self._probed = False
        self._exists = None
        self._connection = None  # the probe's connection, kept for opened()

    @classmethod
    def around(cls, database, url):
        """Return an opened Target over a connection opened elsewhere (to ``url``)."""
        target = cls(url)
        target._exists = target._probed = True
        target.database, target.database_engine = database, target.engine
        return target

    @property
    def masked_url(self):
        return mask_url(self.url)

    @property
    def exists(self):
        """Whether the database exists (it is not created by asking)."""
        if not self._probed:
            self._connection = self.engine.connect_existing(self.url)
            self._exists, self._probed = self._connection is not None, True
            if self._exists:
                self._refuse_standby(self._connection)
        return self._exists

    def check_writable(self):
        """Probe the database now, for a task that goes on without this Target (a
        restore): one that writes is refused on a standby. The probe's connection closes."""
        if not (self.writes and self.engine.has_standbys):
            return  # not probed: opening an SQLite file would checkpoint it
        if not self.exists:  # a new database: is the server a standby?
            with self.engine.maintenance(self.url) as maintenance:
                self._refuse_standby(maintenance)
        elif self._connection is not None:
            self._connection.close()
            self._connection = None

    def _refuse_standby(self, connection):
        """Raise ReadOnlyStandby when a task that writes reached a read-only standby."""
        if not (self.writes and self.engine.has_standbys):
            return
        primary = self.engine.primary_of(connection)
        if primary is not None:
            connection.close()
            self._connection = None
            raise ReadOnlyStandby(
                f"{self.masked_url} is a read-only standby of {primary}: "
                f"run invoke {self.writes} against the primary"
            )

    def require_existing(self, consequence):
        """Raise DatabaseMissing, worded the one way, unless the database exists."""
        if not self.exists:
            raise DatabaseMissing(
                f"{self.masked_url} does not exist yet: {consequence}; invoke db.setup creates it"
            )

    @contextmanager
    def opened(self, create=False):
        """Yield the database connected (created first with ``create``; without it, a
        database that does not exist is an empty in-memory stand-in, to plan or report
        on) and close it afterwards."""
        self.database_engine, self.database = self._connect(create)
        try:
            yield self.database
        finally:
            self.database.close()
            self.database = self.database_engine = None

    def _connect(self, create):
        """Return (engine, connected database)."""
        if self.exists:
            connection, self._connection = self._connection, None
            return self.engine, connection or self.engine.connect(self.url)
        if not create:
            stand_in = engine_for_url(IN_MEMORY_URL)
            return stand_in, stand_in.connect(IN_MEMORY_URL)
        if self.writes and self.engine.has_standbys:  # a new database: is the server one?
            with self.engine.maintenance(self.url) as maintenance:
                self._refuse_standby(maintenance)
        self.engine.create(self.url)
        self._exists = True
        return self.engine, self.engine.connect(self.url)
