"""Backups per tenant, on every engine: ``db.backup --tenant acme``, ``db.verify``,
``db.restore PATH --tenant acme``, ``db.backups --tenant acme``.

A tenant's backup holds that tenant alone and its manifest names it (``"tenant":
"acme"``); its restore replaces that tenant alone: another tenant and the default
database stay as they were, row for row. A tenant's backup restored into another tenant
is another database's backup: asked about, refused without a terminal, done with
``--yes`` (as test_backup_ownership.py has it for two databases). On PostgreSQL, where a
tenant is a schema of a shared database, the archive holds that one schema, and the
restored tenant's role reads its restored tables (and only those). A manifest whose
``tenant`` is no tenant's name is never used as one. Real databases and servers, the
real client tools, ``invoke`` as a subprocess.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

from db import backups, commands, tenants
from db.backups.manifest import write_manifest
from db.config import Settings
from db.engines import engine_for_url, open_database
from db.engines.postgres import split_tenant
from db.errors import BackupError
from db.history import DatabaseIdentity
from db.models import User
from tests import servers
from tests.conftest import MIGRATIONS_DIR, PROJECT_ROOT, ok, one_error_line, run_invoke
from tests.factories import make_user, models_on
from tests.snapshots import checksum

# How many users each database of the gallery holds: told apart by their counts.
USERS = {None: 1, "acme": 3, "beta": 2}
HOSTILE_TENANTS = ["../x", "a;drop", 42]


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def gallery(engine, engine_url, backups_dir):
    """A database with two tenants, acme and beta, each migrated and holding USERS users;
    its tenants (MySQL: databases of their own) dropped afterwards."""
    settings = Settings(
        engine_url, MIGRATIONS_DIR, PROJECT_ROOT / "seeders", backups_dir=backups_dir
    )
    commands.setup(settings, sample=False)
    for name in ("acme", "beta"):
        tenants.create_tenant(settings, name, sample=False)
    for name, count in USERS.items():
        with models_on(url_of(engine_url, name)):
            for number in range(count):
                make_user(f"{name or 'main'}{number}")
    yield engine_url
    for name in tenants.tenant_names(engine_url):
        servers.drop_database(tenants.tenant_url(engine_url, name))


def url_of(url, name):
    """Return the URL of tenant ``name`` of the database at ``url`` (None: the database)."""
    return url if name is None else tenants.tenant_url(url, name)


def cli(url, backups_dir, *args):
    """Run ``invoke ARGS`` on the database of ``url``, backups in ``backups_dir``."""
    return run_invoke(*args, url=url, env={"INVOKE_DB_BACKUPS": str(backups_dir)})


def backed_up(url, backups_dir, *tenant):
    """Back up the database (or ``--tenant NAME``) verified; return the backup's path."""
    result = ok(cli(url, backups_dir, "db.backup", "--verify", *tenant))
    found = re.search(r"^backup: (\S+)", result.stdout, re.MULTILINE)
    assert found, result.stdout
    path = Path(found.group(1))
    return backups.BackupInfo(path, backups.read_manifest(path))


def users(url):
    """Return how many users the database of ``url`` holds."""
    with models_on(url):
        return User.select().count()


def checksums(url):
    """Return {tenant (None: the database): checksum of its content}."""
    return {name: checksum(url_of(url, name)) for name in USERS}


def listed(result):
    """Return the backup files a db.backups table lists."""
    return {line.split()[6] for line in ok(result).stdout.splitlines()[1:]}


def database_id(url):
    database = open_database(url, create=False)
    try:
        return DatabaseIdentity(database).read()
    finally:
        database.close()


def with_manifest(info, **changes):
    """Rewrite the backup's manifest with ``changes``; return the path."""
    write_manifest(info.path, {**info.manifest, **changes})
    return info.path


# --- backup and manifest ------------------------------------------------------------------


def test_a_tenants_backup_names_the_tenant_and_holds_its_rows_alone(gallery, backups_dir):
    acme = backed_up(gallery, backups_dir, "--tenant", "acme")
    main = backed_up(gallery, backups_dir)

    assert acme.manifest["tenant"] == "acme" and main.manifest["tenant"] is None
    assert acme.manifest["row_counts"]["users"] == USERS["acme"]
    assert main.manifest["row_counts"]["users"] == USERS[None]
    owner = backups.Owner.from_manifest(acme.manifest)
    assert owner.tenant == "acme" and owner.describe().endswith("(tenant acme)")
    assert acme.path.name.startswith(owner.file_prefix() + "-")
    assert "__acme" in owner.file_prefix()
    # Two tenants of one database are two owners: their own ids and names.
    beta = backed_up(gallery, backups_dir, "--tenant", "beta")
    ids = {info.manifest["database"]["id"] for info in (acme, main, beta)}
    names = {info.manifest["database"]["name"] for info in (acme, main, beta)}
    assert len(ids) == 3 and len(names) == 3


def test_a_postgres_tenants_archive_holds_its_schema_and_nothing_else(engine, gallery, backups_dir):
    if engine != "postgres":
        pytest.skip("a tenant is a schema of a shared database on PostgreSQL alone")
    acme = backed_up(gallery, backups_dir, "--tenant", "acme")

    toc = subprocess.run(
        ["pg_restore", "--list", str(acme.path)], capture_output=True, text=True, check=True
    ).stdout
    entries = "\n".join(line for line in toc.splitlines() if not line.startswith(";"))
    # Entries read "<id>; <oids> <TYPE> <schema> <name> <owner>": no public, no other tenant.
    assert set(re.findall(r"\b(public|tenant_\w+)\b", entries)) == {"tenant_acme"}, entries
    assert "TABLE DATA tenant_acme users" in entries


# --- verify and restore -------------------------------------------------------------------


def test_a_tenants_backup_verifies_and_restores_that_tenant_alone(gallery, backups_dir):
    acme = backed_up(gallery, backups_dir, "--tenant", "acme")
    before = checksum(url_of(gallery, "acme"))
    known_as = database_id(url_of(gallery, "acme"))
    for name in USERS:  # every database changes after the backup
        with models_on(url_of(gallery, name)):
            make_user(f"late_{name or 'main'}")
    others = {name: value for name, value in checksums(gallery).items() if name != "acme"}

    verified = ok(cli(gallery, backups_dir, "db.verify", str(acme.path)))
    restore = ("db.restore", str(acme.path), "--tenant", "acme", "--yes")
    restored = ok(cli(gallery, backups_dir, *restore))

    assert verified.stdout.startswith("OK: ")
    assert checksum(url_of(gallery, "acme")) == before  # acme as it was backed up
    assert users(url_of(gallery, "acme")) == USERS["acme"]
    assert {n: v for n, v in checksums(gallery).items() if n != "acme"} == others
    assert users(gallery) == USERS[None] + 1 and users(url_of(gallery, "beta")) == 3
    assert database_id(url_of(gallery, "acme")) == known_as
    safety = re.search(r"safety backup of the replaced database: (\S+)", restored.stdout)
    assert safety, restored.stdout
    safety_manifest = backups.read_manifest(safety.group(1))
    assert safety_manifest["tenant"] == "acme"
    assert safety_manifest["row_counts"]["users"] == USERS["acme"] + 1
    assert tenants.tenant_names(gallery) == ["acme", "beta"]  # no side database left as one


def test_db_backups_with_tenant_lists_that_tenants_backups_only(gallery, backups_dir):
    acme = backed_up(gallery, backups_dir, "--tenant", "acme")
    beta = backed_up(gallery, backups_dir, "--tenant", "beta")
    main = backed_up(gallery, backups_dir)

    assert listed(cli(gallery, backups_dir, "db.backups", "--tenant", "acme")) == {acme.path.name}
    assert listed(cli(gallery, backups_dir, "db.backups", "--tenant", "beta")) == {beta.path.name}
    assert listed(cli(gallery, backups_dir, "db.backups")) == {main.path.name}
    everyone = ok(cli(gallery, backups_dir, "db.backups", "--all")).stdout
    assert "(tenant acme)" in everyone and "(tenant beta)" in everyone


def test_a_backup_of_one_tenant_into_another_without_a_terminal_is_refused(gallery, backups_dir):
    acme = backed_up(gallery, backups_dir, "--tenant", "acme")
    before = checksums(gallery)

    refused = cli(gallery, backups_dir, "db.restore", str(acme.path), "--tenant", "beta")

    one_error_line(refused, 2, "another database", "(tenant acme)", "--yes")
    assert checksums(gallery) == before


def test_a_backup_of_one_tenant_into_another_with_yes_keeps_the_restored_tenants_id(
    engine, gallery, backups_dir
):
    acme = backed_up(gallery, backups_dir, "--tenant", "acme")
    beta = backed_up(gallery, backups_dir, "--tenant", "beta")
    known_as = database_id(url_of(gallery, "beta"))
    others = {name: value for name, value in checksums(gallery).items() if name != "beta"}

    ok(cli(gallery, backups_dir, "db.restore", str(acme.path), "--tenant", "beta", "--yes"))

    assert users(url_of(gallery, "beta")) == USERS["acme"]  # acme's rows, in beta
    assert {n: v for n, v in checksums(gallery).items() if n != "beta"} == others
    assert database_id(url_of(gallery, "beta")) == known_as
    beta_backups = listed(cli(gallery, backups_dir, "db.backups", "--tenant", "beta"))
    assert beta.path.name in beta_backups and acme.path.name not in beta_backups
    assert listed(cli(gallery, backups_dir, "db.backups", "--tenant", "acme")) == {acme.path.name}
    if engine == "postgres":
        assert_restored_schema_is_betas(gallery)


def assert_restored_schema_is_betas(url):
    """Beta's role reads and writes the restored tables, its functions read beta's tables
    (their search_path no longer names acme's schema), and it still cannot reach acme."""
    database = open_database(split_tenant(url)[0], create=False)
    try:
        with tenants.tenant("beta", database):
            assert User.select().count() == USERS["acme"]
            make_user("written_as_beta")  # the counter triggers run: SECURITY DEFINER
        paths = database.execute_sql(
            "SELECT DISTINCT c FROM pg_proc p CROSS JOIN unnest(p.proconfig) c "
            "WHERE p.pronamespace = 'tenant_beta'::regnamespace"
        ).fetchall()
        assert paths == [("search_path=tenant_beta, pg_temp",)], paths
        schemas = database.execute_sql(
            "SELECT nspname FROM pg_namespace WHERE nspname <> 'information_schema' "
            "AND NOT starts_with(nspname, 'pg_') ORDER BY 1"
        ).fetchall()
        assert schemas == [("public",), ("tenant_acme",), ("tenant_beta",)]  # none staged
        side = database.execute_sql(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
            (f"{database.database}_",),
        ).fetchall()
        assert side == []
        role = tenants.postgres.tenant_role(database.database, "beta")
        (reads_acme,) = database.execute_sql(
            "SELECT has_table_privilege(%s, 'tenant_acme.users', 'SELECT')", (role,)
        ).fetchone()
        assert not reads_acme
    finally:
        database.close()
    assert users(tenants.tenant_url(url, "acme")) == USERS["acme"]


def test_the_default_databases_backup_restores_into_a_tenant_with_yes(gallery, backups_dir):
    main = backed_up(gallery, backups_dir)
    others = {name: value for name, value in checksums(gallery).items() if name != "acme"}

    restore = ("db.restore", str(main.path), "--tenant", "acme", "--yes")
    ok(cli(gallery, backups_dir, *restore))

    assert users(url_of(gallery, "acme")) == USERS[None]
    assert {n: v for n, v in checksums(gallery).items() if n != "acme"} == others
    assert tenants.tenant_names(gallery) == ["acme", "beta"]


def test_a_postgres_tenants_backup_is_not_restored_into_the_whole_database(
    engine, gallery, backups_dir
):
    if engine != "postgres":
        pytest.skip("elsewhere the default database is a database like a tenant's")
    acme = backed_up(gallery, backups_dir, "--tenant", "acme")
    before = checksums(gallery)

    refused = cli(gallery, backups_dir, "db.restore", str(acme.path), "--yes")

    one_error_line(refused, 1, "tenant acme", "--tenant NAME", "nothing restored")
    assert checksums(gallery) == before


# --- a manifest's tenant is input, not a name -------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE_TENANTS, ids=repr)
def test_a_manifest_whose_tenant_is_no_tenants_name_is_never_used_as_one(
    gallery, backups_dir, hostile
):
    acme = backed_up(gallery, backups_dir, "--tenant", "acme")
    path = with_manifest(acme, tenant=hostile)
    before = checksums(gallery)

    verify = cli(gallery, backups_dir, "db.verify", str(path))
    restore = cli(gallery, backups_dir, "db.restore", str(path), "--tenant", "acme", "--yes")

    one_error_line(verify, 1, "tenant", "is not a tenant's name")
    one_error_line(restore, 1, "is not a tenant's name", "nothing restored")
    assert checksums(gallery) == before
    assert listed(cli(gallery, backups_dir, "db.backups", "--tenant", "acme")) == set()
    assert backups.Owner.from_manifest(backups.read_manifest(path)) is None
    with pytest.raises(BackupError, match="not a tenant's name"):
        backups.manifest_of(path)
    assert engine_for_url(gallery).exists(gallery)
    assert json.loads(backups.manifest_path(path).read_text())["tenant"] == hostile
