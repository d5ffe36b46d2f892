"""Tenants, the library's side (db/tenants.py): one gallery per tenant, kept apart by the
engine, on SQLite, PostgreSQL and MariaDB alike.

A tenant's name is checked before anything is made: a bad or reserved one is refused
(BadTenantName, exit 2) and leaves no file, schema, role or database behind. A tenant is
created migrated and seeded, listed, dropped. Inside ``with tenant("a"):`` the models work
on tenant a only, for the thread (or task) that entered the block, and the access rules
apply there as in the default database; on PostgreSQL the bound connection acts as the
tenant's role, so even raw SQL through it cannot reach another tenant's schema.
"""

import os
import re
import threading
import uuid

import peewee
import pytest

from db import commands
from db.access import acting_as, as_system
from db.config import Settings
from db.engines import engine_for_url, open_database
from db.engines.base import MAX_DATABASE_NAME, database_name_of
from db.engines.sqlite import sqlite_path
from db.errors import DatabaseMissing
from db.models import Image, User, bind_models
from db.tenants import (
    BadTenantName,
    TenantExists,
    check_name,
    create_tenant,
    drop_tenant,
    tenant,
    tenant_names,
    tenant_overview,
    tenant_url,
    tenants_folder,
)
from tests import servers
from tests.conftest import MIGRATIONS_DIR, PROJECT_ROOT, sqlite_url
from tests.factories import make_image, make_user

BAD_NAMES = [
    "Acme",  # upper case
    "a;drop table x",
    "../x",
    "a/b",
    "a b",
    "",
    "a" * 31,  # longer than 30
    "a__b",  # a double underscore: the separator of <database>__<tenant>
    "acme_",
    "1acme",  # a digit first
    "café",
    "a'b",
    'a"b',
]
RESERVED_NAMES = ["public", "pg_x", "mysql", "information_schema", "main", "sqlite_x"]
MISSING_GHOST = re.escape("invoke db.tenant-create ghost creates it")
MISSING_A = re.escape("tenant 'a' of ")
REFUSED = r"permission denied|does not exist"  # no USAGE on a schema hides its tables
GOOD_NAMES = ["a", "acme", "studio_42", "a" * 30]


def settings_for_url(url, tmp_path):
    """Return the Settings of a gallery at ``url`` with the project's migrations and seeders."""
    return Settings(
        url, MIGRATIONS_DIR, seeders_dir=PROJECT_ROOT / "seeders", backups_dir=tmp_path / "backups"
    )


def drop_every_tenant(url):
    """Drop what tenants of ``url`` a test left (MariaDB keeps them beside the database)."""
    engine_for_url(url)  # a bad URL fails here, not half-way
    for name in tenant_names(url):
        engine_for_url(url).drop(tenant_url(url, name))


@pytest.fixture
def settings(engine_url, tmp_path):
    """The Settings of a gallery of the engine under test (not created yet); its tenants
    are dropped afterwards."""
    yield settings_for_url(engine_url, tmp_path)
    drop_every_tenant(engine_url)


@pytest.fixture
def default_db(settings):
    """The default database, migrated, with no rows, the models bound to it."""
    commands.setup(settings, sample=False)
    database = open_database(settings.url, create=False)
    bind_models(database)
    yield database
    database.close()


@pytest.fixture
def tenants_a_b(settings, default_db):
    """Tenants a and b, migrated, with no rows; the app's connections to them closed
    afterwards."""
    for name in ("a", "b"):
        create_tenant(settings, name, sample=False)
    yield default_db
    for name in tenant_names(settings.url):  # a test may have dropped one
        with tenant(name) as database:
            database.close()


def footprint(url):
    """Return what exists of the database at ``url`` and anything named after it: the files
    of its folder (SQLite), its schemas and the roles named after it (PostgreSQL), the
    databases named after it (MariaDB)."""
    engine = engine_for_url(url).key
    if engine == "sqlite":
        folder = os.path.dirname(sqlite_path(url))
        return sorted(
            os.path.relpath(os.path.join(d, f), folder)
            for d, _, fs in os.walk(folder)
            for f in [*fs, "."]
        )
    name = database_name_of(url)
    server = open_database(f"{servers.SERVERS[engine]}/{servers.MAINTENANCE[engine]}", create=False)
    try:
        if engine == "mysql":
            query = "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s"
            return sorted(row[0] for row in server.execute_sql(query, (f"{name}%",)))
        roles = server.execute_sql(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (name,)
        ).fetchall()
    finally:
        server.close()
    if not engine_for_url(url).exists(url):
        return sorted(roles)
    database = open_database(url, create=False)
    try:
        schemas = database.execute_sql("SELECT nspname FROM pg_namespace ORDER BY 1").fetchall()
    finally:
        database.close()
    return sorted(roles) + sorted(schemas)


def titles():
    """Return the titles of the images the models see now, sorted."""
    return sorted(image.title for image in Image.select())


# -- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_a_lower_case_letter_then_up_to_29_letters_digits_or_single_underscores_names_a_tenant(
    name,
):
    assert check_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_malformed_name_is_refused_with_the_rule_it_breaks(name):
    with pytest.raises(BadTenantName, match="is not allowed: use a lower-case letter") as refused:
        check_name(name)
    assert refused.value.exit_code == 2
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("name", RESERVED_NAMES)
def test_a_name_an_engine_reads_as_something_else_is_reserved(name):
    with pytest.raises(BadTenantName, match=f"tenant name '{name}' is reserved") as refused:
        check_name(name)
    assert refused.value.exit_code == 2


def test_a_bad_or_reserved_name_creates_nothing_on_the_engine(settings, default_db):
    before = footprint(settings.url)
    for name in BAD_NAMES + RESERVED_NAMES:
        with pytest.raises(BadTenantName):
            create_tenant(settings, name)
        with pytest.raises(BadTenantName):
            tenant_url(settings.url, name)
    assert footprint(settings.url) == before
    assert tenant_names(settings.url) == []


def test_a_name_too_long_for_the_server_once_the_database_name_leads_it_is_refused(
    engine, tmp_path
):
    if engine == "sqlite":
        pytest.skip("a tenant of SQLite is a file: no server limit on its name")
    long_database = f"cgtest_{os.getpid()}_{uuid.uuid4().hex[:8]}_a_rather_long_gallery"
    url = f"{servers.SERVERS[engine]}/{long_database}"
    name = "a" * 30
    assert len(long_database) + 2 + len(name) > MAX_DATABASE_NAME
    try:
        with pytest.raises(BadTenantName, match=f"longer than the server's {MAX_DATABASE_NAME}"):
            create_tenant(settings_for_url(url, tmp_path), name)
        assert footprint(url) == []  # no database, schema, role
    finally:
        servers.drop_database(url)


# -- creating, listing, dropping --------------------------------------------------------------


def test_a_new_tenant_is_migrated_and_seeded_with_the_sample_gallery(settings, default_db):
    result = create_tenant(settings, "acme")

    assert tenant_names(settings.url) == ["acme"]
    assert len(result.migrations) == len(list(MIGRATIONS_DIR.glob("0*.py")))
    with tenant("acme") as database:
        assert User.select().count() == 5
        maya = User.get(User.role == "admin")
        with acting_as(maya):  # PostgreSQL's row-level security applies to a tenant's role
            assert Image.visible_to(maya).count() == 8
        database.close()
    assert User.select().count() == 0  # the default database was left alone


def test_no_sample_creates_a_tenant_with_the_essential_seeders_only(settings, default_db):
    result = create_tenant(settings, "acme", sample=False)

    assert result.seeders == []
    assert len(result.skipped_sample) == 6
    with tenant("acme") as database:
        assert User.select().count() == 0
        assert database.get_tables()  # migrated all the same
        database.close()


def test_creating_a_tenant_that_exists_is_refused_and_keeps_its_rows(settings, tenants_a_b):
    with as_system(), tenant("a"):
        make_user("Ada")

    with pytest.raises(TenantExists, match=r"tenant 'a' of .* exists already") as refused:
        create_tenant(settings, "a")

    assert refused.value.exit_code == 2
    with tenant("a"):
        assert [user.name for user in User.select()] == ["Ada"]


def test_the_overview_lists_each_tenant_with_its_version_and_size(settings, tenants_a_b):
    infos = tenant_overview(settings)

    assert [info.name for info in infos] == ["a", "b"]
    newest = max(p.stem.split("_", 1)[0] for p in MIGRATIONS_DIR.glob("0*"))
    for info in infos:
        assert info.version == newest
        assert info.size > 0
        assert info.latest_backup is None
        assert info.database.endswith(f"__{info.name}") or info.database == f"{info.name}.db"


def test_dropping_a_tenant_removes_it_and_nothing_else(settings, tenants_a_b):
    with as_system(), tenant("b"):
        make_user("Bea")
    with tenant("a") as database:
        database.close()  # a connection of the app's must not keep it alive

    drop_tenant(settings, "a")

    assert tenant_names(settings.url) == ["b"]
    traces_of_a = re.compile(r"__a\b|tenant_a\b|/a\.db")  # role, database, schema or files
    assert not [thing for thing in footprint(settings.url) if traces_of_a.search(str(thing))]
    with tenant("b"):
        assert [user.name for user in User.select()] == ["Bea"]


def test_a_tenant_dropped_after_the_app_bound_it_is_missing_there_and_stays_dropped(
    settings, tenants_a_b
):
    with tenant("a") as database:
        database.close()
    drop_tenant(settings, "a")

    with pytest.raises(DatabaseMissing, match=MISSING_A), tenant("a"):
        User.select().count()
    assert tenant_names(settings.url) == ["b"]


def test_a_missing_tenant_names_the_task_that_creates_it(settings, default_db):
    with pytest.raises(DatabaseMissing, match=MISSING_GHOST):
        drop_tenant(settings, "ghost")
    with pytest.raises(DatabaseMissing, match=MISSING_GHOST), tenant("ghost"):
        pass


def test_two_sqlite_databases_in_one_folder_keep_separate_tenant_folders(tmp_path):
    first = settings_for_url(sqlite_url(tmp_path / "first.db"), tmp_path)
    second = settings_for_url(sqlite_url(tmp_path / "second.db"), tmp_path)
    for settings in (first, second):
        commands.setup(settings, sample=False)

    create_tenant(first, "acme", sample=False)
    create_tenant(second, "acme", sample=False)
    create_tenant(second, "zeta", sample=False)

    assert tenant_names(first.url) == ["acme"]
    assert tenant_names(second.url) == ["acme", "zeta"]
    assert [p.name for p in tenants_folder(tmp_path / "first.db").glob("*.db")] == ["acme.db"]
    assert tenants_folder(tmp_path / "first.db").stat().st_mode & 0o777 == 0o700
    drop_tenant(first, "acme")
    assert tenant_names(second.url) == ["acme", "zeta"]


# -- the app's side: isolation --------------------------------------------------------------


def test_rows_written_in_one_tenant_are_seen_in_no_other_nor_in_the_default_database(
    tenants_a_b,
):
    with as_system(), tenant("a"):
        ada = make_user("Ada")
        with acting_as(ada):
            make_image(ada, "Only in a")

    with tenant("a"):
        assert titles() == ["Only in a"]
    with tenant("b"):
        assert titles() == []
        assert User.select().count() == 0
    assert titles() == []
    assert User.select().count() == 0


def test_each_thread_works_in_its_own_tenant_at_the_same_time(tenants_a_b):
    both_inside = threading.Barrier(2, timeout=30)
    seen = {}

    def work_in(name):
        with as_system(), tenant(name) as database:
            both_inside.wait()  # both tenants bound at once, one per thread
            make_user(f"Owner{name}")
            both_inside.wait()
            seen[name] = [user.name for user in User.select()]
            database.close()

    threads = [threading.Thread(target=work_in, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert seen == {"a": ["Ownera"], "b": ["Ownerb"]}
    assert User.select().count() == 0  # this thread never left the default database


def test_the_access_rules_apply_inside_a_tenant_as_outside(tenants_a_b):
    with as_system(), tenant("a"):
        ada, bea = make_user("Ada"), make_user("Bea")
        with acting_as(ada):
            make_image(ada, "Ada's secret", privacy="private")
            make_image(ada, "Ada's public")

    with tenant("a"), acting_as(bea):
        assert [i.title for i in Image.visible_to(bea)] == ["Ada's public"]
    with tenant("a"), acting_as(ada):
        assert sorted(i.title for i in Image.visible_to(ada)) == ["Ada's public", "Ada's secret"]


def test_raw_sql_through_a_tenants_connection_cannot_reach_another_tenant_on_postgres(
    engine, tenants_a_b
):
    if engine != "postgres":
        pytest.skip("a tenant of SQLite or MariaDB is a file or database of its own")
    with as_system(), tenant("b"):
        make_user("Bea")

    attempts = [
        "SELECT * FROM tenant_b.users",
        "SELECT * FROM public.users",
        "SET search_path TO tenant_b; SELECT * FROM users",
        "INSERT INTO tenant_b.users (email, name, role) VALUES ('x@example.com', 'X', 'admin')",
        "CREATE TABLE public.planted (id int)",
    ]
    with tenant("a") as database:
        for statement in attempts:
            with pytest.raises(peewee.ProgrammingError, match=REFUSED), database.atomic():
                for part in statement.split("; "):
                    database.execute_sql(part)
        database.close()
    with tenant("b"):
        assert [user.name for user in User.select()] == ["Bea"]


def test_set_role_through_a_tenants_connection_cannot_reach_another_tenant_on_postgres(
    engine, tenants_a_b
):
    if engine != "postgres":
        pytest.skip("a tenant of SQLite or MariaDB is a file or database of its own")
    with as_system(), tenant("b"):
        make_user("Bea")

    with tenant("a") as database:
        try:
            (logged_in,) = database.execute_sql("SELECT session_user").fetchone()
            assert logged_in.endswith("__a")  # the tenant's own login role, not the owner's
            superuser = database.execute_sql(
                "SELECT rolname FROM pg_roles WHERE rolsuper ORDER BY rolname LIMIT 1"
            ).fetchone()[0]
            for becoming in (f'SET ROLE "{superuser}"', "RESET ROLE"):
                with pytest.raises(peewee.ProgrammingError), database.atomic():
                    database.execute_sql(becoming)
                    database.execute_sql("SELECT * FROM tenant_b.users")
        finally:
            database.close()
