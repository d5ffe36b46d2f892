"""Reaching a database server: every way it can go wrong ends in one clear line."""

import os
import subprocess
import sys
import uuid

import pytest

from db.engines import open_database
from tests import servers
from tests.conftest import PROJECT_ROOT, one_error_line, run_invoke

pytestmark = pytest.mark.engine


@pytest.fixture
def postgres():
    servers.require_server("postgres")


@pytest.fixture
def mysql():
    servers.require_server("mysql")


@pytest.mark.parametrize(
    "url",
    ["postgresql://app:s3cret@127.0.0.1:1/gallery", "mysql://app:s3cret@127.0.0.1:1/gallery"],
)
def test_an_unreachable_server_is_named_with_its_password_masked(url):
    masked = url.replace("s3cret", "***")
    for task in (
        ("db.status",),
        ("db.setup",),
        ("db.migrate",),
        ("db.seed",),
        ("db.reset", "--yes"),
    ):
        one_error_line(run_invoke(*task, url=url), None, masked, "refused")

    debug = run_invoke("db.status", "--debug", url=url)
    assert "s3cret" not in debug.stdout + debug.stderr


def test_a_wrong_mysql_password_is_one_line(mysql):
    line = one_error_line(
        run_invoke("db.status", url="mysql://root:wrong@127.0.0.1:3306/gallery"),
        None,
        "mysql://root:***@127.0.0.1:3306/gallery",
        "Access denied",
    )
    assert "wrong" not in line


def test_an_unknown_postgresql_role_is_one_line(postgres):
    one_error_line(
        run_invoke("db.status", url="postgresql://nobody:pw@127.0.0.1:5432/postgres"),
        None,
        "postgresql://nobody:***@127.0.0.1:5432/postgres",
        'role "nobody" does not exist',
    )


@pytest.mark.parametrize("engine_name", ["postgres", "mysql"])
def test_a_database_that_does_not_exist_yet_is_reported_not_created(engine_name, request):
    request.getfixturevalue(engine_name)
    url = servers.new_database_url(engine_name)

    result = run_invoke("db.status", url=url)
    assert result.returncode == 0, result.stderr
    assert "does not exist yet" in result.stdout
    one_error_line(run_invoke("db.seed", url=url), None, "run invoke db.migrate first")
    assert not servers.engine_for_url(url).exists(url)


@pytest.fixture
def role_without_createdb(postgres):
    name = f"cg_limited_{uuid.uuid4().hex[:6]}"
    admin = open_database(f"{servers.SERVERS['postgres']}/postgres", create=False)
    admin.execute_sql(f"CREATE ROLE {name} LOGIN NOCREATEDB")
    yield name
    admin.execute_sql(f"DROP ROLE {name}")
    admin.close()


def test_setup_without_the_right_to_create_the_database_says_so(role_without_createdb):
    url = f"postgresql://{role_without_createdb}@127.0.0.1:5432/cg_never_{uuid.uuid4().hex[:6]}"

    one_error_line(run_invoke("db.setup", url=url), None, "cannot create database", "CREATEDB")


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("postgresql://postgres@127.0.0.1:5432/postgres", "psycopg", "postgres"),
        ("mysql://root@127.0.0.1:3306/information_schema", "pymysql", "mysql"),
    ],
)
def test_a_missing_driver_names_the_extra_to_install(url, module, extra):
    # Python treats a None entry in sys.modules as "not installed".
    blocked = "psycopg", "psycopg2", "pymysql", "MySQLdb"
    code = (
        "import sys\n"
        f"sys.modules.update(dict.fromkeys({blocked!r}))\n"
        "from invoke.main import program\n"
        "program.run()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env["DATABASE_URL"] = url
    result = subprocess.run(
        [sys.executable, "-c", code, "--search-root", str(PROJECT_ROOT), "db.status"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip

    one_error_line(result, None, f"pip install 'clonegallery-db[{extra}]'")


def test_a_mariadb_test_database_left_with_a_stray_file_is_emptied_and_dropped(mysql):
    """The test run's own remedy for MariaDB's errno 39 on DROP DATABASE (tests/servers.py)."""
    url = servers.new_database_url("mysql")
    database = open_database(url, create=True)
    try:
        (datadir,) = database.execute_sql("SELECT @@datadir").fetchone()
        database.execute_sql("CREATE TABLE photos (id INTEGER)")
    finally:
        database.close()
    folder = os.path.join(datadir, url.rsplit("/", 1)[1])
    if not os.access(folder, os.W_OK):
        pytest.skip(f"the server's data directory {folder} is not writable here")
    with open(os.path.join(folder, "stray.tmp"), "w") as stray:
        stray.write("left by a crash")

    with pytest.warns(UserWarning, match=r"left \['stray.tmp'\]"):
        servers.drop_database(url, attempts=2)

    assert not os.path.exists(folder)
