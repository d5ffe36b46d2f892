"""``db.top``: the statements that took the most time, from what each engine keeps.

PostgreSQL's pg_stat_statements and MariaDB's performance_schema need a server started
with them, which the machine's servers are not: those servers give the "not set up"
lines, and a private server of each (one per module, started once) the statistics.
SQLite keeps nothing: the app's opt-in recorder (db.querylog) fills a file beside the
database, which db.top reads.
"""

import json
import uuid

import pytest

from db.engines import open_database
from db.querylog import record_queries, stats_path
from tests import servers
from tests.clusters import cluster_folder, init_primary, require_clusters
from tests.conftest import ok, one_error_line, run_invoke, sqlite_url
from tests.mariadb_servers import mariadb_server, require_mariadb_servers

MARKER = "top_marker"  # a column alias every engine keeps in the statement's text


@pytest.fixture(scope="module")
def statements_cluster():
    """A private PostgreSQL that loads pg_stat_statements (shared_preload_libraries)."""
    require_clusters()
    with cluster_folder() as folder:
        cluster = init_primary(
            folder / "top", settings="shared_preload_libraries = 'pg_stat_statements'\n"
        )
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture(scope="module")
def digest_server():
    """A private MariaDB with performance_schema on (the machine's has it off)."""
    require_mariadb_servers()
    with mariadb_server(binary_log=False, options=["--performance-schema=ON"]) as server:
        yield server


@pytest.fixture(params=servers.selected_engines())
def top_url(request, tmp_path):
    """A database, with a table ``marks``, whose engine keeps statement statistics: a
    private PostgreSQL (extension created) or MariaDB, or an SQLite file."""
    name = f"top_{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "clonegallery.db")
    elif request.param == "postgres":
        cluster = request.getfixturevalue("statements_cluster")
        url = cluster.create_database(name)
        cluster.sql("CREATE EXTENSION pg_stat_statements", database=name)
    else:
        server = request.getfixturevalue("digest_server")
        server.sql(f"CREATE DATABASE {name}")
        url = server.url(name)
    database = open_database(url)
    database.execute_sql("CREATE TABLE marks (name VARCHAR(20))")
    database.close()
    return url


def run_many(url, times, alias=MARKER):
    """Run one statement ``times`` times, a different literal each time (recorded on SQLite)."""
    database = open_database(url, create=False)
    recorder = record_queries(database) if url.startswith("sqlite") else None
    for n in range(times):
        database.execute_sql(f"SELECT COUNT(*) AS {alias} FROM marks WHERE name = 'x{n}'")
    if recorder:
        recorder.close()
    database.close()


def top_json(url, *options):
    """Return db.top --json's statements on ``url``."""
    return json.loads(ok(run_invoke("db.top", "--json", *options, url=url)).stdout)["statements"]


def marked(statements):
    return [s for s in statements if MARKER in s["statement"]]


# -- on every engine ------------------------------------------------------------------------


def test_a_statement_run_many_times_shows_with_its_call_count(top_url):
    run_many(top_url, 37)

    (statement,) = marked(top_json(top_url, "--limit", "50"))
    assert statement["calls"] == 37
    assert statement["total_ms"] > 0
    assert statement["max_ms"] >= statement["mean_ms"] > 0
    assert "'x1'" not in statement["statement"]  # literals normalised away
    text = ok(run_invoke("db.top", url=top_url)).stdout
    assert MARKER in text and " 37 " in text


def test_limit_keeps_the_statements_that_took_the_most_time(top_url):
    run_many(top_url, 3, alias="top_few")
    run_many(top_url, 30)

    everything = top_json(top_url, "--limit", "100")
    (first,) = top_json(top_url, "--limit", "1")

    assert len(everything) > 1
    assert first["total_ms"] == max(s["total_ms"] for s in everything)


def test_reset_clears_the_statistics(top_url):
    run_many(top_url, 12)
    assert marked(top_json(top_url, "--limit", "100"))

    cleared = ok(run_invoke("db.top", "--reset", url=top_url)).stdout

    assert "cleared" in cleared
    if top_url.startswith("mysql"):
        assert "whole server" in cleared
    assert not marked(top_json(top_url, "--limit", "100"))


def test_a_limit_below_one_is_refused_in_one_line(top_url):
    one_error_line(run_invoke("db.top", "--limit", "0", url=top_url), 2, "--limit")


# -- servers not set up for it --------------------------------------------------------------


@pytest.fixture
def shared_server_url(request):
    """A new database on the machine's own server of ``request.param``, dropped afterwards."""
    servers.require_server(request.param)
    url = servers.new_database_url(request.param)
    open_database(url).close()
    yield url
    servers.drop_database(url)


@pytest.mark.parametrize("shared_server_url", ["postgres"], indirect=True)
def test_a_postgresql_without_pg_stat_statements_gets_every_setup_line(shared_server_url):
    result = run_invoke("db.top", url=shared_server_url)

    one_error_line(
        result,
        2,
        "add shared_preload_libraries = 'pg_stat_statements' to postgresql.conf",
        "restart the server",
        "run CREATE EXTENSION pg_stat_statements; in database cgtest_",
    )


def test_a_postgresql_that_loads_the_library_is_told_only_the_extension(statements_cluster):
    name = f"top_{uuid.uuid4().hex[:8]}"
    url = statements_cluster.create_database(name)

    line = one_error_line(run_invoke("db.top", url=url), 2, "CREATE EXTENSION", name)

    assert "shared_preload_libraries" not in line and "restart" not in line


@pytest.mark.parametrize("shared_server_url", ["mysql"], indirect=True)
def test_a_mariadb_without_performance_schema_gets_the_my_cnf_line(shared_server_url):
    for options in ((), ("--reset",)):
        one_error_line(
            run_invoke("db.top", *options, url=shared_server_url),
            2,
            "performance_schema = ON",
            "my.cnf",
            "restart",
        )


# -- SQLite without the recorder -------------------------------------------------------------


def test_without_the_recorder_db_top_says_how_to_turn_it_on(fresh_db, db_path, db_url):
    shown = ok(run_invoke("db.top", url=db_url)).stdout
    cleared = ok(run_invoke("db.top", "--reset", url=db_url)).stdout

    assert "db.querylog.record_queries(database)" in shown
    assert "nothing to clear" in cleared
    assert not stats_path(db_path).exists()
