"""db.health's replication checks on real standbys: a PostgreSQL primary and its streaming
standby (tests/clusters.py), a MariaDB primary and its replica (tests/mariadb_servers.py).

On a primary, ``standbys`` counts the standbys streaming against db.health.expected_standbys:
fewer is critical (exit 2), and the finding turns ok again once the standby is back; a
PostgreSQL replication slot no standby uses is a critical ``replication`` finding naming it.
On a standby, ``replication_lag`` is how far behind its primary it is.

The checks that depend on the machine (free disk, the age of the newest backup) are off:
these tests look at the replication findings, and at the verdict only for the exit code.
"""

import contextlib
import json
import uuid

import pytest

from db.config import Settings
from db.health import CRITICAL, OK, check_health
from tests.clusters import STANDBY_NAME, primary_and_standby, require_clusters
from tests.conftest import MIGRATIONS_DIR, ok, run_invoke
from tests.mariadb_servers import REPLICATION_USER, primary_and_replica, require_mariadb_servers
from tests.standbys import eventually

OFF = {"warning": "off", "critical": "off"}
STEADY = {"disk_free": OFF, "backup_age": OFF}  # what this machine's disks and backups say
STEADY_ENV = {  # the same for the task, as Invoke reads it from the environment
    f"INVOKE_DB_HEALTH_{check.upper()}_{level.upper()}": "off"
    for check in STEADY
    for level in ("warning", "critical")
}
GALLERY = "gallery"
WAIT = 30  # seconds a server may take to notice a standby left or came back


def health_of(url, expected_standbys=1):
    """Return check_health's report on ``url`` expecting that many standbys."""
    health = {**STEADY, "expected_standbys": str(expected_standbys)}
    return check_health(Settings(url=url, migrations_dir=MIGRATIONS_DIR, health=health))


def found(report, check):
    """Return the findings of ``check`` in a HealthReport."""
    return [finding for finding in report.findings if finding.check == check]


def standbys_finding(url):
    (finding,) = found(health_of(url), "standbys")
    return finding


def standbys_turn(url, state):
    """Return the primary's ``standbys`` finding once it is in ``state`` (polled: a server
    notices a standby leave or come back a moment later)."""
    return eventually(lambda: (finding := standbys_finding(url)).state == state and finding, WAIT)


def gallery_on(primary, standby):
    """Set the gallery up on ``primary``, wait until ``standby`` has it; return both URLs."""
    ok(run_invoke("db.setup", "--no-sample", url=primary.url(GALLERY)))
    standby.wait_for(primary)
    return primary.url(GALLERY), standby.url(GALLERY)


def health_task(url, expected_standbys=1):
    """Run ``invoke db.health --json`` on ``url``; return (exit code, {check: [findings]})."""
    env = {**STEADY_ENV, "INVOKE_DB_HEALTH_EXPECTED_STANDBYS": str(expected_standbys)}
    result = run_invoke("db.health", "--json", url=url, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    document = json.loads(result.stdout)
    assert document["exit_code"] == result.returncode
    checks = {}
    for finding in document["checks"]:
        checks.setdefault(finding["check"], []).append(finding)
    return result.returncode, checks


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clusters():
    """A primary and a standby streaming from it, for this module; removed afterwards."""
    require_clusters()
    with primary_and_standby() as pair:
        yield pair


@pytest.fixture(scope="module")
def postgres_gallery(clusters):
    """The gallery set up on the primary and replayed on the standby: (primary, standby) URLs."""
    return gallery_on(*clusters)


def test_a_postgres_primary_with_its_standby_streaming_has_1_of_1_streaming(postgres_gallery):
    primary_url, _ = postgres_gallery

    finding = standbys_finding(primary_url)

    assert (finding.state, finding.shown, finding.value) == (OK, "1 of 1 streaming", 1)
    assert finding.detail == f"{STANDBY_NAME} (streaming)"
    assert finding.metric == "standbys_streaming"


def test_a_stopped_postgres_standby_is_critical_on_the_primary_until_it_streams_again(
    clusters, postgres_gallery
):
    _, standby = clusters
    primary_url, _ = postgres_gallery

    standby.stop()
    try:
        standbys_turn(primary_url, CRITICAL)
        code, checks = health_task(primary_url)
    finally:
        standby.start()

    assert code == 2
    assert [(f["state"], f["shown"], f["value"]) for f in checks["standbys"]] == [
        (CRITICAL, "0 of 1 streaming", 0)
    ]
    assert checks["standbys"][0]["detail"] == "no standby connected"
    assert standbys_turn(primary_url, OK).shown == "1 of 1 streaming"


def test_a_postgres_primary_expecting_no_standby_shows_the_one_it_has(postgres_gallery):
    primary_url, _ = postgres_gallery

    (finding,) = found(health_of(primary_url, expected_standbys=0), "standbys")

    assert (finding.state, finding.shown) == (OK, "1 streaming")


def test_a_caught_up_postgres_standby_shows_its_replication_lag_ok(clusters, postgres_gallery):
    primary, standby = clusters
    _, standby_url = postgres_gallery
    standby.wait_for(primary)

    (lag,) = found(health_of(standby_url), "replication_lag")

    assert lag.state == OK, lag
    assert lag.detail == f"standby of {primary.address}"
    assert lag.metric == "replication_lag_seconds"
    assert lag.value is not None and lag.value < 60
    assert not found(health_of(standby_url), "standbys")  # a standby has no standbys to count


def test_a_replication_slot_no_standby_uses_is_critical_naming_it(clusters, postgres_gallery):
    primary, _ = clusters
    primary_url, _ = postgres_gallery
    slot = f"forgotten_{uuid.uuid4().hex[:8]}"
    primary.sql("SELECT pg_create_physical_replication_slot(%s)", (slot,))
    try:
        (finding,) = found(health_of(primary_url), "replication")
        code, checks = health_task(primary_url)
    finally:
        primary.sql("SELECT pg_drop_replication_slot(%s)", (slot,))

    assert (finding.state, finding.shown, finding.subject) == (CRITICAL, "slot inactive", slot)
    assert f"replication slot {slot!r} has no standby connected" in finding.detail
    assert code == 2
    assert [(f["state"], f["subject"]) for f in checks["replication"]] == [(CRITICAL, slot)]
    assert not found(health_of(primary_url), "replication")  # dropped: nothing to say


def test_a_postgres_standby_whose_primary_is_gone_is_critical_on_its_own_health(
    clusters, postgres_gallery
):
    primary, _ = clusters
    primary_url, standby_url = postgres_gallery

    primary.stop()
    try:
        (lag,) = found(health_of(standby_url), "replication_lag")
    finally:
        primary.start()
        standbys_turn(primary_url, OK)

    assert lag.state == CRITICAL, lag


# --- MariaDB -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mariadb_pair():
    """A primary and a read-only replica of it, for this module; removed afterwards. The
    replica asks for a heartbeat every second: a primary notices a replica gone only when it
    next writes to it (an event, or a heartbeat: by default every slave_net_timeout / 2, 30 s),
    and until then counts it as streaming."""
    require_mariadb_servers()
    with primary_and_replica() as (primary, replica):
        replica.sql("STOP SLAVE")
        replica.sql("CHANGE MASTER TO MASTER_HEARTBEAT_PERIOD = 1")
        replica.sql("START SLAVE")
        replica.wait_for(primary)
        yield primary, replica


@contextlib.contextmanager
def replication_stopped(primary, replica):
    """The replica's replication stopped (STOP SLAVE); started again and caught up after."""
    replica.sql("STOP SLAVE")
    try:
        yield
    finally:
        replica.sql("START SLAVE")
        replica.wait_for(primary)


@pytest.fixture(scope="module")
def mariadb_gallery(mariadb_pair):
    """The gallery set up on the primary and applied on the replica: (primary, replica) URLs."""
    return gallery_on(*mariadb_pair)


def test_a_mariadb_primary_with_its_replica_reading_has_1_of_1_streaming(mariadb_gallery):
    primary_url, _ = mariadb_gallery

    finding = standbys_turn(primary_url, OK)

    assert (finding.shown, finding.value) == ("1 of 1 streaming", 1)
    assert finding.detail == f"{REPLICATION_USER} (streaming)"


def test_a_stopped_mariadb_replica_is_critical_on_the_primary_until_it_reads_again(
    mariadb_pair, mariadb_gallery
):
    primary_url, _ = mariadb_gallery

    with replication_stopped(*mariadb_pair):
        standbys_turn(primary_url, CRITICAL)
        code, checks = health_task(primary_url)

    assert code == 2
    assert [(f["state"], f["shown"]) for f in checks["standbys"]] == [
        (CRITICAL, "0 of 1 streaming")
    ]
    assert standbys_turn(primary_url, OK).shown == "1 of 1 streaming"


def test_a_caught_up_mariadb_replica_shows_its_replication_lag_ok(mariadb_pair, mariadb_gallery):
    primary, replica = mariadb_pair
    _, replica_url = mariadb_gallery
    replica.wait_for(primary)

    _, checks = health_task(replica_url)

    (lag,) = checks["replication_lag"]
    assert (lag["state"], lag["value"]) == (OK, 0)
    assert lag["detail"] == f"standby of {primary.address}"
    assert "standbys" not in checks  # a replica has no replicas to count


def test_a_mariadb_replica_whose_replication_is_stopped_is_critical_on_its_own_health(
    mariadb_pair, mariadb_gallery
):
    _, replica_url = mariadb_gallery

    with replication_stopped(*mariadb_pair):
        (lag,) = found(health_of(replica_url), "replication_lag")

    assert lag.state == CRITICAL, lag
