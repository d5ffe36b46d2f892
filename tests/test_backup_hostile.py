"""A backup file is untrusted input: db.verify and db.restore of an edited PostgreSQL or
MariaDB backup touch nothing but the database they load into, run no shell command,
read no file, and say what is wrong in one line.

Each hostile backup is a real one, edited (its checksum recomputed, so that only loading
it can tell) or taken of a database made to carry a trap; the real CLI runs it on the
real servers, and the tests look at the effects: the other database's rows and
settings, the file a shell command would have written, the role a dump would have
created, the temporary account that must be gone. Also here: what the loaded backup
says is compared with its manifest (the schema version), a restore blocked by another
connection says so in one line, and the client tools get a scrubbed environment.
"""

import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from db.engines import open_database
from db.engines.base import database_name_of
from tests import servers
from tests import test_backup_engines as engines
from tests.conftest import LATEST_VERSION, ok, one_error_line
from tests.snapshots import checksum
from tests.test_backup_engines import (
    assert_the_counters_follow,
    backup_of,
    change_the_gallery,
    claim_as_it_is,
    held,
    rewrite_manifest,
    side_databases,
    with_user,
    wrapped_tools,
)

# The fixtures of test_backup_engines.py that these tests take by name.
cli, engine_gallery, server = engines.cli, engines.engine_gallery, engines.server
postgres, mysql = engines.postgres, engines.mysql
side_databases_dropped = engines.side_databases_dropped

CLIENT_TOOLS = {"postgres": ("pg_dump", "pg_restore"), "mysql": ("mariadb-dump", "mariadb")}
NOTE = "kept by the other database"


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def other_database(server, other_engine_url):
    """A second database on the same server, with one row in its ``notes`` table: what a
    hostile backup must not reach. Returns its URL."""
    database = open_database(other_engine_url)
    try:
        database.execute_sql("CREATE TABLE notes (body VARCHAR(100))")
        database.execute_sql("INSERT INTO notes (body) VALUES (%s)", (NOTE,))
    finally:
        database.close()
    return other_engine_url


def notes(url):
    """Return the rows of the other database's notes table (None when it is gone)."""
    try:
        database = open_database(url, create=False)
    except Exception:
        return None
    try:
        return [body for (body,) in database.execute_sql("SELECT body FROM notes").fetchall()]
    finally:
        database.close()


def root(engine):
    """Open the server's maintenance database as the tests' administrator."""
    return open_database(f"{servers.SERVERS[engine]}/{servers.MAINTENANCE[engine]}", create=False)


def scalar(engine, sql, params=()):
    database = root(engine)
    try:
        return database.execute_sql(sql, params).fetchone()[0]
    finally:
        database.close()


def loaders(logs):
    """Return the temporary accounts the wrapped client tools logged in as (from the
    environment pg_restore got, or the option file the mariadb client read), after
    checking that each load had one of its own."""
    found = set()
    for environment in logs.glob("environment-*"):
        for line in environment.read_text().splitlines():
            if line.startswith("PGUSER=clonegallery_load_"):
                found.add(line.partition("=")[2])
    for credentials in logs.glob("credentials-*"):
        for line in credentials.read_text().splitlines():
            if line.startswith('user="cg_load_'):
                found.add(line.partition("=")[2].strip('"'))
    calls = (logs / "calls.log").read_text().splitlines()
    loads = [c for c in calls if c.startswith(("credentials: pg_restore", "credentials: mariadb "))]
    assert len(found) == len(loads) > 0, (found, calls)
    return found


def account_exists(engine, name):
    if engine == "postgres":
        return scalar(engine, "SELECT COUNT(*) FROM pg_roles WHERE rolname = %s", (name,)) > 0
    return scalar(engine, "SELECT COUNT(*) FROM mysql.user WHERE user = %s", (name,)) > 0


def refused(run, path, words, *, url=None, env=None):
    """Run db.verify and db.restore of ``path``: both fail in one line naming the file and
    ``words``; the live database is left as it was. Return the two lines."""
    extra = {} if url is None else {"url": url}
    verify = one_error_line(run("db.verify", str(path), env=env, **extra), 1, path.name, *words)
    live = extra.get("url") or run.url
    before = checksum(live)
    restore = one_error_line(
        run("db.restore", str(path), "--yes", env=env, **extra), 1, path.name, *words
    )
    assert "nothing restored" in restore
    assert checksum(live) == before
    assert side_databases(live) == []
    return verify, restore


@pytest.fixture
def hostile_cli(cli, engine_gallery):
    """``cli`` that also knows the URL of the live gallery (``hostile_cli.url``)."""
    cli.url = engine_gallery
    return cli


# --- MariaDB: statements and client commands appended to a dump ------------------------------


def append(path, text, drop_sandbox_line=False):
    """Append ``text`` to a plain dump (dropping its sandbox line when asked), then make
    its manifest claim the file as it now is."""
    lines = path.read_bytes().splitlines(keepends=True)
    if drop_sandbox_line:
        lines = [line for line in lines if b"enable the sandbox mode" not in line]
    path.write_bytes(b"".join(lines) + text.encode() + b"\n")
    claim_as_it_is(path)


MYSQL_STATEMENTS = {
    "delete in another database": ("DELETE FROM `{other}`.notes;", ("denied",)),
    "drop another database": ("DROP DATABASE `{other}`;", ("denied",)),
    "insert into another database": (
        "INSERT INTO `{other}`.notes (body) VALUES ('planted');",
        ("denied",),
    ),
    # The client's --one-database skips what follows a USE of another database.
    "switch to another database": ("USE `{other}`;\nDELETE FROM notes;", None),
}


@pytest.mark.parametrize(
    ("statement", "words"), MYSQL_STATEMENTS.values(), ids=MYSQL_STATEMENTS.keys()
)
def test_a_mysql_dump_cannot_reach_another_database(
    hostile_cli, mysql, engine_gallery, other_database, backups_dir, statement, words
):
    path = backup_of(engine_gallery, backups_dir)
    other = database_name_of(other_database)
    append(path, statement.format(other=other))

    if words is None:  # harmless: it verifies and restores, and the other is untouched
        ok(hostile_cli("db.verify", str(path)))
        ok(hostile_cli("db.restore", str(path), "--yes"))
    else:
        refused(hostile_cli, path, words)

    assert notes(other_database) == [NOTE]


@pytest.fixture
def limited_mysql_url(mysql, engine_gallery):
    """The gallery's URL as a user with every right on it and its side databases
    (``<name>_%``) but none to create accounts: the loader falls back to it."""
    password = uuid.uuid4().hex
    with servers.mysql_user(engine_gallery, password) as user:
        yield with_user(engine_gallery, user, password)


@pytest.mark.parametrize("who", ["administrator", "user who cannot create accounts"])
def test_a_shell_command_in_a_mysql_dump_is_not_run(
    hostile_cli, mysql, engine_gallery, backups_dir, tmp_path, request, who
):
    url = engine_gallery
    if who != "administrator":
        url = request.getfixturevalue("limited_mysql_url")
    path = backup_of(engine_gallery, backups_dir)
    marker = tmp_path / "shell-ran"
    # Without the dump's own sandbox line, only the loader's --sandbox stands in the way.
    append(path, f"\\! touch {marker}", drop_sandbox_line=True)

    refused(hostile_cli, path, ("sandbox",), url=url)

    assert not marker.exists()


def test_a_mysql_dump_cannot_read_a_file_of_the_client(
    hostile_cli, mysql, engine_gallery, backups_dir, tmp_path
):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret-from-the-client\n")
    path = backup_of(engine_gallery, backups_dir)
    append(path, f"LOAD DATA LOCAL INFILE '{secret}' INTO TABLE tags (name);")

    refused(hostile_cli, path, ("local infile",))

    database = open_database(engine_gallery, create=False)
    try:
        found = database.execute_sql(
            "SELECT COUNT(*) FROM tags WHERE name = 'secret-from-the-client'"
        ).fetchone()[0]
    finally:
        database.close()
    assert found == 0


# --- PostgreSQL: an archive whose restore runs code -------------------------------------------

# A function that, in any database but the one it was made in, does what a crafted
# archive would; a materialized view of it makes pg_restore call it (the archive's last
# step fills the view).
TRAP = """
CREATE FUNCTION trap() RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    IF current_database() <> '{source}' THEN
        {action};
    END IF;
    RETURN 1;
END $$
"""
POSTGRES_ACTIONS = {
    "shell command": ("COPY (SELECT 1) TO PROGRAM 'touch {marker}'", "COPY"),
    "new role": ("CREATE ROLE {role}", "create role"),
    "another database": (
        "ALTER DATABASE {other} SET default_transaction_read_only = on",
        "must be owner of database",
    ),
}


@pytest.fixture
def trap_role():
    """The name of a role a crafted archive tries to create (dropped afterwards)."""
    name = f"cg_planted_{uuid.uuid4().hex[:8]}"
    yield name
    database = root("postgres")
    try:
        database.execute_sql(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        database.close()


@pytest.mark.parametrize(("action", "words"), POSTGRES_ACTIONS.values(), ids=POSTGRES_ACTIONS)
def test_a_postgres_archive_runs_nothing_as_a_superuser(
    hostile_cli,
    postgres,
    engine_gallery,
    other_database,
    backups_dir,
    tmp_path,
    trap_role,
    action,
    words,
):
    marker = tmp_path / "shell-ran"
    other = database_name_of(other_database)
    database = open_database(engine_gallery, create=False)
    try:
        body = action.format(marker=marker, role=trap_role, other=other)
        database.execute_sql(TRAP.format(source=database_name_of(engine_gallery), action=body))
        database.execute_sql("CREATE MATERIALIZED VIEW trapped AS SELECT trap()")
    finally:
        database.close()
    path = backup_of(engine_gallery, backups_dir)
    logs = tmp_path / "wrappers"
    env = {"PATH": wrapped_tools(logs, CLIENT_TOOLS["postgres"])}

    refused(hostile_cli, path, ("pg_restore failed", words), env=env)

    assert not marker.exists()
    assert not account_exists("postgres", trap_role)
    settings = scalar(
        "postgres",
        "SELECT COUNT(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = %s",
        (other,),
    )
    assert settings == 0
    assert notes(other_database) == [NOTE]
    used = loaders(logs)
    assert all(not account_exists("postgres", name) for name in used), used


# --- the temporary account: gone afterwards, the restored database as before -----------------


def test_a_restore_loads_as_a_temporary_account_that_is_gone_afterwards(
    hostile_cli, server, engine_gallery, backups_dir, tmp_path
):
    path = backup_of(engine_gallery, backups_dir)
    change_the_gallery(engine_gallery)
    logs = tmp_path / "wrappers"
    env = {"PATH": wrapped_tools(logs, CLIENT_TOOLS[server])}

    ok(hostile_cli("db.verify", str(path), env=env))
    ok(hostile_cli("db.restore", str(path), "--yes", env=env))

    used = loaders(logs)
    assert all(not account_exists(server, name) for name in used), used
    assert_the_counters_follow(engine_gallery)  # triggers run: their definer exists
    name = database_name_of(engine_gallery)
    if server == "postgres":
        owners = scalar(
            "postgres",
            "SELECT string_agg(DISTINCT pg_get_userbyid(datdba), ',') "
            "FROM pg_database WHERE datname = %s",
            (name,),
        )
        assert owners == "postgres"
        database = open_database(engine_gallery, create=False)
        try:
            tables = database.execute_sql(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        finally:
            database.close()
        assert tables == [("postgres",)]
    else:
        definers = scalar(
            "mysql",
            "SELECT GROUP_CONCAT(DISTINCT definer) FROM information_schema.triggers "
            "WHERE trigger_schema = %s",
            (name,),
        )
        assert definers.startswith("root@"), definers


# --- what the loaded backup says, against its manifest ----------------------------------------


def test_a_manifest_that_understates_the_schema_version_is_caught_by_loading(
    hostile_cli, server, engine_gallery, backups_dir
):
    path = backup_of(engine_gallery, backups_dir)
    rewrite_manifest(path, schema_version="003")

    refused(
        hostile_cli,
        path,
        (f"schema version {LATEST_VERSION} in the backup, the manifest says 003",),
    )


# --- errors stay one line ------------------------------------------------------------------


@pytest.mark.slow
def test_a_postgres_restore_blocked_by_another_connection_is_one_line(
    hostile_cli, postgres, engine_gallery, backups_dir, side_databases_dropped
):
    path = backup_of(engine_gallery, backups_dir)
    change_the_gallery(engine_gallery)
    before = checksum(engine_gallery)

    with held(engine_gallery, "images"):
        result = hostile_cli("db.restore", str(path), "--yes")

    line = one_error_line(result, 1, "is in use by other connections", "nothing restored")
    assert "DETAIL" not in line and "other session" not in line
    assert checksum(engine_gallery) == before


# --- the client tools' environment ------------------------------------------------------------

SECRETS = {
    "PGPASSWORD": "pg-env-password",
    "MYSQL_PWD": "mysql-env-password",
    "CLONEGALLERY_API_TOKEN": "api-token-value",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
}


def test_the_client_tools_see_no_url_password_or_secret_of_ours(
    hostile_cli, server, engine_gallery, backups_dir, tmp_path
):
    password = "Url5ecret"
    if server == "postgres":  # trust authentication: any password is accepted
        url = with_user(engine_gallery, "postgres", password)
    else:
        url = engine_gallery  # root has none here; the URL itself must not reach them
    logs = tmp_path / "wrappers"
    env = {"PATH": wrapped_tools(logs, CLIENT_TOOLS[server]), "LANG": "C.UTF-8", **SECRETS}

    path = Path(ok(hostile_cli("db.backup", "--verify", url=url, env=env)).stdout.split()[1])
    ok(hostile_cli("db.restore", str(path), "--yes", url=url, env=env))

    environments = list(logs.glob("environment-*"))
    assert len(environments) >= 3  # the dump, the verifying load, the restoring load
    for environment in environments:
        variables = dict(
            line.partition("=")[::2] for line in environment.read_text().splitlines() if line
        )
        leaked = [
            name
            for name, value in variables.items()
            if name == "DATABASE_URL"
            or name.startswith("INVOKE_")
            or name in SECRETS
            or any(secret in value for secret in (password, quote(password), *SECRETS.values()))
        ]
        assert leaked == [], (environment.name, leaked)
        assert variables["LANG"] == "C.UTF-8"
        assert variables["PATH"] == env["PATH"]
        if "PGUSER" not in variables:  # the MariaDB tools: no ~/.my.cnf to override ours
            assert "HOME" not in variables


def test_pgpassword_reaches_the_libpq_tools_through_a_private_file(
    hostile_cli, postgres, engine_gallery, tmp_path
):
    logs = tmp_path / "wrappers"
    env = {"PATH": wrapped_tools(logs, CLIENT_TOOLS["postgres"]), "PGPASSWORD": "from-env"}

    ok(hostile_cli("db.backup", "--verify", env=env))

    passwords = [c.read_text() for c in logs.glob("credentials-*")]
    assert "*:*:*:postgres:from-env\n" in passwords, passwords  # pg_dump's
    for environment in logs.glob("environment-*"):
        assert "from-env" not in environment.read_text()


def test_a_loading_role_left_by_a_killed_run_is_dropped_by_the_next_load(
    hostile_cli, postgres, engine_gallery, backups_dir
):
    leftover = f"clonegallery_load_{uuid.uuid4().hex[:12]}"
    database = root("postgres")
    try:  # what a run killed after its database was dropped leaves behind
        database.execute_sql(f'CREATE ROLE "{leftover}" LOGIN NOSUPERUSER')
    finally:
        database.close()
    path = backup_of(engine_gallery, backups_dir)

    ok(hostile_cli("db.verify", str(path)))

    assert not account_exists("postgres", leftover)
