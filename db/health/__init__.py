"""Is the database well? ``db.health``: the checks that page someone.

    report = check_health(settings)     # a HealthReport
    report.state, report.exit_code      # "warning", 1
    for finding in report.findings:     # one per check that means something here
        finding.check, finding.state, finding.shown, finding.limit, finding.detail

Each check measures one thing and compares it with its limits (db.health.thresholds):
ok, warning or critical; unknown when it could not measure (a right the database user
lacks, say), with the reason. The report's state is its worst finding, and its exit code
the monitoring-plugin convention's (Nagios, Icinga, Sensu): 0 ok, 1 warning, 2 critical,
3 unknown. A critical finding outranks an unknown one: an operator is paged for what is
known to be wrong.

The checks (db/health/checks.py) and what they read on each engine (db/health/server.py):

- the database answers, and how fast (connecting and one query);
- migrations: none pending (warning), changed, missing or failed (critical);
- the age of the newest verified backup, and of the continuous replica (db.replica);
- replication: standbys streaming, as many as db.health.expected_standbys, their lag;
- connections in use against the server's maximum;
- the longest open transaction, and sessions idle in a transaction;
- lock waits (db.locks tells who blocks whom);
- dead rows (PostgreSQL), free pages (SQLite), fragmentation (InnoDB);
- the cache hit ratio;
- free disk space where the database, its backups and its replica live;
- the counters the triggers keep, against real counts on a sample of rows;
- indexes never used since statistics were reset, and the app's typical queries
  (db.explain --builtin) that stopped using an index.

Nothing here writes to the database.
"""

from dataclasses import dataclass

OK, WARNING, CRITICAL, UNKNOWN = "ok", "warning", "critical", "unknown"
EXIT_CODES = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}
SEVERITY = (OK, UNKNOWN, WARNING, CRITICAL)  # from best to worst


@dataclass(frozen=True)
class Finding:
    """One check's result: its state, what it measured and against which limit."""

    check: str  # the check's name, as in db.health.<name>: backup_age
    state: str  # OK, WARNING, CRITICAL or UNKNOWN
    shown: str  # the measurement as people read it: "3h12m", "42%", "2 pending"
    value: float | None = None  # the same in the metric's unit (seconds, a fraction, a count)
    limit: object = None  # the thresholds.Limit compared with, if any
    detail: str = ""  # what it is about: the backup file, the table, the session
    metric: str | None = None  # the Prometheus name of ``value``, e.g. backup_age_seconds
    subject: str = ""  # which one, where a check measures several: a disk, a standby


@dataclass(frozen=True)
class HealthReport:
    """What ``db.health`` found about one database."""

    database: str  # the URL, masked
    engine: str
    findings: tuple

    @property
    def state(self):
        return max((f.state for f in self.findings), key=SEVERITY.index, default=UNKNOWN)

    @property
    def exit_code(self):
        return EXIT_CODES[self.state]

    def counts(self):
        """Return {state: how many findings have it}, worst first, for states present."""
        states = [f.state for f in self.findings]
        return {state: states.count(state) for state in reversed(SEVERITY) if state in states}


def check_health(settings, now=None, prometheus=None):
    """Run every check on the configured database; return a HealthReport, its
    measurements also written to the file ``prometheus`` when given."""
    from db.health.checks import run_checks
    from db.health.prometheus import write_textfile

    report = run_checks(settings, now)
    if prometheus is not None:
        write_textfile(report, prometheus)
    return report


def check_every(settings, period, on_report, on_failure, prometheus=None):
    """Check the database every ``period`` (a timedelta) until SIGTERM or Ctrl-C, each
    HealthReport going to ``on_report`` (and to the file ``prometheus``), each run that
    could not check to ``on_failure``; return the name of the signal that stopped it."""
    from db import schedule
    from db.health.prometheus import check_textfile
    from db.health.thresholds import read_expected_standbys, read_limits

    # What no later run could mend is refused now, not once a period.
    read_limits(settings.health)
    read_expected_standbys(settings.health)
    if prometheus is not None:
        check_textfile(prometheus)
    with schedule.stop_on_signals() as stops:
        try:
            schedule.run_every(
                period,
                lambda: on_report(check_health(settings, prometheus=prometheus)),
                on_failure,
                stops,
            )
        except schedule.Stopped as stop:
            return str(stop)
