"""Tenants on the command line (db/cli.py), as real ``invoke`` runs on every engine.

``db.tenant-create NAME [--no-sample]``, ``db.tenants [--json]`` and ``db.tenant-drop NAME
[--yes]`` manage the tenants; ``--tenant NAME`` points any task at one of them and
nothing else; ``--all-tenants [--jobs N]`` runs a task on each, goes on past a tenant that
fails, ends with one summary line and exits with the worst tenant's code. A bad name, a
missing tenant, a drop nobody confirmed: one ``error:`` line, exit 2, nothing changed.
"""

import json

import pytest

from db import commands
from db.config import mask_url
from db.engines import open_database
from db.models import User
from db.tenants import create_tenant, tenant_names, tenant_url
from tests.conftest import ok, one_error_line, run_invoke
from tests.factories import models_on
from tests.test_tenants import (
    BAD_NAMES,
    RESERVED_NAMES,
    drop_every_tenant,
    footprint,
    settings_for_url,
)

NOTES = (
    "-- migrate:up\nCREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(200));\n"
    "-- migrate:down\nDROP TABLE notes;\n"
)
NOTES_VERSION = "007"


@pytest.fixture
def settings(engine_url, tmp_path, project_migrations):
    """A migrated gallery without rows, of the engine under test, with a copy of the
    project's migrations to add to; its tenants are dropped afterwards."""
    settings = settings_for_url(engine_url, tmp_path)
    settings = type(settings)(**{**vars(settings), "migrations_dir": project_migrations})
    commands.setup(settings, sample=False)
    yield settings
    drop_every_tenant(engine_url)


@pytest.fixture
def cli(settings):
    """Run ``invoke ARGS`` on the test's gallery, its migrations and its backups folder."""

    def run(*args):
        backups = {"INVOKE_DB_BACKUPS": str(settings.backups_dir)}
        return run_invoke(
            *args, url=settings.url, migrations_dir=settings.migrations_dir, env=backups
        )

    return run


def with_tenants(settings, *names):
    """Create the tenants ``names``, migrated, with no rows."""
    for name in names:
        create_tenant(settings, name, sample=False)


def users_of(url):
    """Return how many users the database at ``url`` has."""
    with models_on(url):
        return User.select().count()


def tables_of(url):
    database = open_database(url, create=False)
    try:
        return set(database.get_tables())
    finally:
        database.close()


def stdout_json(result):
    return json.loads(ok(result).stdout)


# -- names ----------------------------------------------------------------------------------


def test_a_bad_or_reserved_name_is_one_line_exit_2_and_creates_nothing(engine, settings, cli):
    # The rule is the same on every engine; the servers get one of each kind.
    names = BAD_NAMES + RESERVED_NAMES if engine == "sqlite" else ["a;drop table x", "public"]
    before = footprint(settings.url)

    for name in names:
        one_error_line(cli("db.tenant-create", name), 2, "tenant name")
    one_error_line(cli("db.status", "--tenant", "../x"), 2, "'../x' is not allowed")
    one_error_line(cli("db.tenant-drop", "public", "--yes"), 2, "'public' is reserved")

    assert footprint(settings.url) == before


# -- create, list, back up, drop --------------------------------------------------------------


def test_a_tenants_life_created_listed_backed_up_and_dropped(settings, cli):
    created = ok(cli("db.tenant-create", "acme"))
    assert "tenant acme created" in created.stdout
    ok(cli("db.tenant-create", "beta", "--no-sample"))
    assert users_of(tenant_url(settings.url, "acme")) == 5
    assert users_of(tenant_url(settings.url, "beta")) == 0
    assert users_of(settings.url) == 0

    one_error_line(cli("db.tenant-create", "acme"), 2, "'acme'", "exists already")
    assert users_of(tenant_url(settings.url, "acme")) == 5

    ok(cli("db.backup", "--tenant", "acme"))
    table = ok(cli("db.tenants")).stdout.splitlines()
    assert table[0].split()[:3] == ["tenant", "schema", "size"]
    assert [line.split()[0] for line in table[1:]] == ["acme", "beta"]
    listed = {t["name"]: t for t in stdout_json(cli("db.tenants", "--json"))["tenants"]}
    assert sorted(listed) == ["acme", "beta"]
    assert {t["schema_version"] for t in listed.values()} == {"006"}
    assert all(t["size_bytes"] > 0 for t in listed.values())
    assert listed["acme"]["latest_backup"]["age_seconds"] >= 0
    assert listed["beta"]["latest_backup"] is None

    refused = cli("db.tenant-drop", "beta")  # stdin is no terminal
    one_error_line(refused, 2, "no terminal to confirm on", "--yes")
    assert tenant_names(settings.url) == ["acme", "beta"]

    dropped = ok(cli("db.tenant-drop", "beta", "--yes"))
    assert "tenant beta dropped" in dropped.stdout
    assert tenant_names(settings.url) == ["acme"]
    assert users_of(tenant_url(settings.url, "acme")) == 5

    one_error_line(cli("db.tenant-drop", "ghost", "--yes"), 2, "invoke db.tenant-create ghost")


def test_in_production_a_tenant_gets_sample_rows_only_with_force(settings):
    def create(*args):
        return run_invoke(
            "db.tenant-create", *args, url=settings.url,
            migrations_dir=settings.migrations_dir, env={"INVOKE_DB_ENVIRONMENT": "production"},
        )  # fmt: skip

    one_error_line(create("acme"), 2, "sample seeder", "--no-sample", "--force")
    assert tenant_names(settings.url) == []  # refused before anything was made

    ok(create("acme", "--force"))
    assert users_of(tenant_url(settings.url, "acme")) == 5


# -- --tenant ---------------------------------------------------------------------------------


def test_tenant_points_a_task_at_that_tenant_and_nothing_else(settings, cli):
    with_tenants(settings, "a", "b")

    ok(cli("db.seed", "--tenant", "a"))

    assert users_of(tenant_url(settings.url, "a")) == 5
    assert users_of(tenant_url(settings.url, "b")) == 0
    assert users_of(settings.url) == 0
    status = stdout_json(cli("db.status", "--tenant", "b", "--json"))
    assert status["database"] == mask_url(tenant_url(settings.url, "b"))
    one_error_line(cli("db.status", "--tenant", "ghost"), 2, "invoke db.tenant-create ghost")


# -- --all-tenants ----------------------------------------------------------------------------


def test_migrate_all_tenants_goes_on_past_a_failing_tenant_and_status_check_gates_on_it(
    engine, settings, cli, write_migration
):
    with_tenants(settings, "a", "b", "c")
    write_migration(f"{NOTES_VERSION}_add_notes.sql", NOTES)
    clash = open_database(tenant_url(settings.url, "b"), create=False)
    clash.execute_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY)")  # 007 cannot create it
    clash.close()

    migrated = cli("db.migrate", "--all-tenants", "--jobs", "2")

    assert migrated.returncode != 0, migrated.stdout
    lines = migrated.stdout.splitlines()
    assert lines[-1] == "db.migrate --all-tenants: 2 of 3 tenants ok; failed: b"
    assert any(line.startswith("[b] error: ") for line in lines), migrated.stdout
    assert "Traceback" not in migrated.stdout + migrated.stderr
    for name in ("a", "c"):
        assert "notes" in tables_of(tenant_url(settings.url, name))
    assert "notes" not in tables_of(settings.url)  # the default database is no tenant
    behind = cli("db.status", "--all-tenants", "--check")
    assert behind.returncode == 3, behind.stdout + behind.stderr
    assert behind.stdout.splitlines()[-1].endswith("failed: b")
    gate = cli("db.status", "--all-tenants", "--check", "--json")
    assert gate.returncode == 3, gate.stderr
    document = json.loads(gate.stdout)
    assert document["failed"] == 1
    assert {t["tenant"]: t["exit_code"] for t in document["tenants"]} == {"a": 0, "b": 3, "c": 0}

    clash = open_database(tenant_url(settings.url, "b"), create=False)
    clash.execute_sql("DROP TABLE notes")
    clash.close()
    if engine == "mysql":  # DDL is not transactional there: the failed run is on record
        ok(cli("db.repair", "--tenant", "b"))
    ok(cli("db.migrate", "--all-tenants", "--jobs", "1"))
    ok(cli("db.status", "--all-tenants", "--check"))
    document = stdout_json(cli("db.status", "--all-tenants", "--json"))
    assert document["failed"] == 0
    assert [t["tenant"] for t in document["tenants"]] == ["a", "b", "c"]
    for entry in document["tenants"]:
        assert entry["exit_code"] == 0
        assert entry["result"]["migrations"][-1]["version"] == NOTES_VERSION


def test_all_tenants_refuses_jobs_0_a_tenant_besides_and_jobs_alone(settings, cli, write_migration):
    jobs_0 = cli("db.migrate", "--all-tenants", "--jobs", "0")  # refused with no tenant yet
    one_error_line(jobs_0, 2, "--jobs must be at least 1")
    with_tenants(settings, "a")
    write_migration(f"{NOTES_VERSION}_add_notes.sql", NOTES)

    one_error_line(cli("db.migrate", "--all-tenants", "--tenant", "a"), 2, "--tenant")
    one_error_line(cli("db.migrate", "--jobs", "2"), 2, "--jobs goes with --all-tenants")

    assert "notes" not in tables_of(tenant_url(settings.url, "a"))
    assert "notes" not in tables_of(settings.url)
