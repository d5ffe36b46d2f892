"""db.health --prometheus FILE: the measurements in Prometheus' text format, for
node_exporter's textfile collector (``--collector.textfile.directory``).

    write_textfile(report, "/var/lib/node_exporter/clonegallery.prom")

Written with prometheus-client, atomically (a file beside it, renamed over it), so the
collector never reads half a file; the file beside it is made in a private folder of its
own, so nobody can plant a link where it is written. The metrics, each labelled with the
(masked) database URL:

- ``clonegallery_db_health_status``: the verdict as its exit code (0 ok ... 3 unknown);
- ``clonegallery_db_health_check_state{check, subject}``: each check's, the same way;
- ``clonegallery_db_<metric>{subject}``: each measurement in its base unit (seconds,
  ratios from 0 to 1, counts): ``clonegallery_db_backup_age_seconds``...;
- ``clonegallery_db_health_last_run_timestamp_seconds``: when the checks ran.
"""

import shutil
import tempfile
import time
from pathlib import Path

from db.errors import ConfigError
from db.health import EXIT_CODES

PREFIX = "clonegallery_db_"


def write_textfile(report, path):
    """Write ``report``'s measurements to ``path`` (which must end in .prom) atomically."""
    from prometheus_client import CollectorRegistry, write_to_textfile

    path = check_textfile(path)
    registry = CollectorRegistry()
    _fill(registry, report)
    private = None
    try:
        private = tempfile.mkdtemp(prefix=".health-", dir=path.parent)
        write_to_textfile(str(path), registry, tmpdir=private)
    except OSError as exc:
        raise ConfigError(f"--prometheus {path}: {exc.strerror or exc}") from exc
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


def check_textfile(path):
    """Return ``path`` as a Path; ConfigError unless it is a *.prom file in a folder."""
    path = Path(path)
    if path.suffix != ".prom":
        raise ConfigError(f"--prometheus {path}: the textfile collector reads only *.prom files")
    if not path.parent.is_dir():
        raise ConfigError(f"--prometheus {path}: folder {path.parent} does not exist")
    return path


def _fill(registry, report):
    from prometheus_client import Gauge

    def gauge(name, text, *labels):
        return Gauge(PREFIX + name, text, ["database", *labels], registry=registry)

    database = report.database
    gauge("health_status", "db.health's verdict: 0 ok, 1 warning, 2 critical, 3 unknown").labels(
        database
    ).set(report.exit_code)
    states = gauge("health_check_state", "each check's state, as exit codes", "check", "subject")
    gauge("health_last_run_timestamp_seconds", "when db.health ran").labels(database).set(
        time.time()
    )
    measured = {}
    for finding in report.findings:
        states.labels(database, finding.check, finding.subject).set(EXIT_CODES[finding.state])
        if finding.metric and finding.value is not None:
            if finding.metric not in measured:
                measured[finding.metric] = gauge(
                    finding.metric, f"db.health's {finding.check} measurement", "subject"
                )
            measured[finding.metric].labels(database, finding.subject).set(finding.value)
