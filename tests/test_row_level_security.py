"""Row-level security on PostgreSQL (migration 004): the database itself hides private
images and albums from the wrong users, and refuses their writes.

Every test talks to a real PostgreSQL server through a real role made for it: a LOGIN
role that owns nothing and cannot bypass row-level security, granted the rights the
application needs, as docs/security.md's "Row-level security on PostgreSQL" says to create one.
The gallery is written by the tables' owner (the test server's superuser, who ran the
migrations), whom the policies do not apply to. The role acts for a user through the connection's
``clonegallery.user_id`` setting, or for nobody (anonymous) when it is not set.

The gallery: Ada (admin), Ed (editor), and two visitors, Alice and Bob, each with a
public and a private image (Ed with a private one); Alice's public album "alice-trip"
holds her private image and Bob's; Alice also has a private album, Bob a private one.
SQLite and MySQL have no row-level security: these tests run on PostgreSQL only
(tests/servers.py: skipped when it is not selected or not reachable).
"""

import uuid
from urllib.parse import urlsplit, urlunsplit

import peewee
import pytest

from db.access import acting_as, as_system
from db.engines import engine_for, open_database
from db.errors import PermissionDenied
from db.models import Image, User, bind_models
from db.runner import Runner
from tests import servers
from tests.conftest import MIGRATIONS_DIR

pytestmark = pytest.mark.engine

ADA, ED, ALICE, BOB = "ada", "ed", "alice", "bob"
ROLES = {ADA: "admin", ED: "editor", ALICE: "visitor", BOB: "visitor"}
IMAGES = {  # id: (uploader, privacy)
    "alice-public": (ALICE, "public"),
    "alice-private": (ALICE, "private"),
    "bob-public": (BOB, "public"),
    "bob-private": (BOB, "private"),
    "ed-private": (ED, "private"),
}
ALBUMS = {  # id: (created by, privacy)
    "alice-trip": (ALICE, "public"),
    "alice-diary": (ALICE, "private"),
    "bob-drafts": (BOB, "private"),
}
ALBUM_IMAGES = [("alice-trip", "alice-private"), ("alice-trip", "bob-private")]

PUBLIC_IMAGES = {"alice-public", "bob-public"}
RLS_VIOLATION = "new row violates row-level security policy"

LINK_TABLES = {"album_images", "image_tags", "user_likes", "ai_generation_meta"}
POLICIES = {
    f"{table}_{policy}"
    for table in ("images", "albums")
    for policy in ("visible", "writable", "created_as_oneself")
} | {f"{table}_of_visible_rows" for table in LINK_TABLES}
ACTING_FUNCTIONS = {"clonegallery_acting_role", "clonegallery_acting_user"}
# The functions of 003's counter triggers.
TRIGGER_FUNCTIONS = {
    f"{table}_after_{event}"
    for table in ("image_tags", "album_images", "images")
    for event in ("insert", "delete", "update")
}


# --- The gallery, its owner and the application's role ------------------------------------


@pytest.fixture
def gallery_url():
    """The URL of a PostgreSQL test database that does not exist yet; dropped afterwards."""
    servers.require_server("postgres")
    url = servers.new_database_url("postgres")
    yield url
    servers.drop_database(url)


@pytest.fixture
def owner(gallery_url):
    """A connection as the tables' owner, who migrated the database and wrote the gallery."""
    database = open_database(gallery_url)
    Runner(database, MIGRATIONS_DIR).migrate()
    write_gallery(database)
    yield database
    database.close()


def write_gallery(database):
    for user, role in ROLES.items():
        database.execute_sql(
            "INSERT INTO users (id, email, name, role) VALUES (%s, %s, %s, %s)",
            (user, f"{user}@example.com", user.title(), role),
        )
    for image, (uploader, privacy) in IMAGES.items():
        insert_image(database, image, uploader, privacy)
    for album, (creator, privacy) in ALBUMS.items():
        database.execute_sql(
            "INSERT INTO albums (id, title, created_by, privacy) VALUES (%s, %s, %s, %s)",
            (album, title_of(album), creator, privacy),
        )
    for position, (album, image) in enumerate(ALBUM_IMAGES):
        add_to_album(database, album, image, position)


def insert_image(database, image, uploader, privacy="public"):
    return database.execute_sql(
        "INSERT INTO images (id, title, url, uploader_id, privacy, width, height, size, format) "
        "VALUES (%s, %s, %s, %s, %s, 1920, 1080, 482113, 'JPEG')",
        (image, title_of(image), f"https://cdn.example.com/{image}.jpg", uploader, privacy),
    )


def title_of(row_id):
    """Return the title the gallery gives a row: "bob-public" is "Bob Public"."""
    return row_id.replace("-", " ").title()


def add_to_album(database, album, image, position=0):
    database.execute_sql(
        "INSERT INTO album_images (album_id, image_id, position) VALUES (%s, %s, %s)",
        (album, image, position),
    )


@pytest.fixture
def app_role(owner):
    """A role as the application should connect with: it may log in, read and write every
    table, and use the sequences, but is no superuser, owns nothing and has no BYPASSRLS.
    Roles belong to the whole server, so the name is unique and the role always goes."""
    name = f"cgtest_app_{uuid.uuid4().hex[:12]}"
    password = uuid.uuid4().hex
    owner.execute_sql(
        f"CREATE ROLE {name} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE "
        f"PASSWORD '{password}'"
    )
    try:
        schema = owner.execute_sql("SELECT quote_ident(current_schema())").fetchone()[0]
        for grant in (
            f"GRANT USAGE ON SCHEMA {schema} TO {name}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {name}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {name}",
        ):
            owner.execute_sql(grant)
        yield name, password
    finally:  # what it owns and its grants are of this database only
        owner.execute_sql(f"REASSIGN OWNED BY {name} TO CURRENT_USER")
        owner.execute_sql(f"DROP OWNED BY {name}")
        owner.execute_sql(f"DROP ROLE {name}")


@pytest.fixture
def connect(app_role, gallery_url):
    """``connect(user)`` opens a connection as the application's role acting for ``user``
    (None: anonymous); every connection is closed before the role is dropped."""
    name, password = app_role
    opened = []

    def connect_as(user=None):
        database = open_database(with_user(gallery_url, name, password), create=False)
        opened.append(database)
        if user is not None:
            act_as(database, user)
        return database

    yield connect_as
    for database in opened:
        database.close()


def with_user(url, user, password):
    """Return the URL with another user and password."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


def act_as(database, user):
    """Set who the connection acts for, as the application does once it knows the user."""
    database.execute_sql("SELECT set_config('clonegallery.user_id', %s, false)", (user,))


@pytest.fixture
def anonymous(connect):
    return connect()


@pytest.fixture
def ada(connect):
    return connect(ADA)


@pytest.fixture
def ed(connect):
    return connect(ED)


@pytest.fixture
def alice(connect):
    return connect(ALICE)


@pytest.fixture
def bob(connect):
    return connect(BOB)


# --- Reading and writing through a connection ---------------------------------------------


def ids(database, sql, params=()):
    """Return the set of the first column of a query's rows."""
    return {row[0] for row in database.execute_sql(sql, params)}


def images(database):
    return ids(database, "SELECT id FROM images")


def albums(database):
    return ids(database, "SELECT id FROM albums")


def rows_changed(database, sql, params=()):
    return database.execute_sql(sql, params).rowcount


def image(owner, image_id):
    """Return (title, privacy) of an image, as the owner reads it (policies do not apply)."""
    return owner.execute_sql(
        "SELECT title, privacy FROM images WHERE id = %s", (image_id,)
    ).fetchone()


def image_count(owner, album):
    return owner.execute_sql("SELECT image_count FROM albums WHERE id = %s", (album,)).fetchone()[0]


# --- Who sees what ------------------------------------------------------------------------


def test_anonymous_sees_only_public_images_and_albums(anonymous):
    assert images(anonymous) == PUBLIC_IMAGES
    assert albums(anonymous) == {"alice-trip"}


def test_anonymous_asking_for_private_rows_by_name_gets_none(anonymous):
    assert ids(anonymous, "SELECT id FROM images WHERE privacy = 'private'") == set()
    assert ids(anonymous, "SELECT id FROM albums WHERE privacy = 'private'") == set()
    assert ids(anonymous, "SELECT id FROM images WHERE id = 'bob-private'") == set()


def test_an_empty_setting_is_anonymous_too(alice):
    act_as(alice, "")  # e.g. the application's way of signing the user out

    assert images(alice) == PUBLIC_IMAGES


def test_an_unknown_user_sees_what_anonymous_sees(connect):
    assert images(connect("mallory")) == PUBLIC_IMAGES


def test_a_visitor_sees_the_public_images_and_their_own_private_ones(alice):
    assert images(alice) == {"alice-private", *PUBLIC_IMAGES}


def test_a_visitor_sees_the_public_albums_and_their_own_private_ones(alice, bob):
    assert albums(alice) == {"alice-diary", "alice-trip"}
    assert albums(bob) == {"alice-trip", "bob-drafts"}


def test_a_visitor_never_sees_another_users_private_image_not_even_through_an_album(alice):
    in_the_album = ids(
        alice,
        "SELECT images.id FROM albums "
        "JOIN album_images ON album_images.album_id = albums.id "
        "JOIN images ON images.id = album_images.image_id "
        "WHERE albums.id = 'alice-trip'",
    )

    assert in_the_album == {"alice-private"}  # Bob's private image is in it, unseen


def test_the_rows_of_another_users_private_image_stay_hidden_too(owner, alice):
    owner.execute_sql("INSERT INTO tags (name) VALUES ('secret')")
    owner.execute_sql(
        "INSERT INTO image_tags (image_id, tag_id) SELECT 'bob-private', id FROM tags"
    )
    owner.execute_sql("INSERT INTO user_likes (user_id, image_id) VALUES ('bob', 'bob-private')")
    owner.execute_sql(
        "INSERT INTO ai_generation_meta (image_id, model, prompt) "
        "VALUES ('bob-private', 'sdxl', 'a secret prompt')"
    )
    about_bobs = "SELECT image_id FROM {} WHERE image_id = 'bob-private'"

    seen = {table: ids(alice, about_bobs.format(table)) for table in sorted(LINK_TABLES)}

    assert seen == {table: set() for table in sorted(LINK_TABLES)}
    assert ids(owner, about_bobs.format("ai_generation_meta")) == {"bob-private"}


def test_a_visitor_cannot_link_another_users_private_image(owner, alice):
    with pytest.raises(peewee.ProgrammingError, match=RLS_VIOLATION):
        add_to_album(alice, "alice-diary", "ed-private")

    assert ids(owner, "SELECT image_id FROM album_images WHERE album_id = 'alice-diary'") == set()


def test_an_editor_reads_no_more_than_a_visitor(ed):
    assert images(ed) == {"ed-private", *PUBLIC_IMAGES}
    assert albums(ed) == {"alice-trip"}


def test_an_admin_sees_every_image_and_album(ada):
    assert images(ada) == set(IMAGES)
    assert albums(ada) == set(ALBUMS)


def test_the_tables_owner_reads_every_row_even_when_no_superuser(owner, app_role, anonymous):
    # Row-level security is enabled, not forced: migrations, backups and transfers, run
    # as the owner, see it all. (The test's owner is a superuser, who would anyway.)
    owner.execute_sql(f"ALTER TABLE images OWNER TO {app_role[0]}")

    assert images(anonymous) == set(IMAGES)


def test_the_setting_is_the_applications_word_for_who_acts(alice):
    act_as(alice, BOB)  # any SQL run on the connection could do this: see docs/security.md

    assert images(alice) == {*PUBLIC_IMAGES, "bob-private"}


# --- Who writes what ----------------------------------------------------------------------


def test_a_visitor_changes_and_deletes_their_own_images(owner, alice):
    changed = rows_changed(alice, "UPDATE images SET privacy = 'public' WHERE id = 'alice-private'")
    deleted = rows_changed(alice, "DELETE FROM images WHERE id = 'alice-public'")

    assert (changed, deleted) == (1, 1)
    assert image(owner, "alice-private")[1] == "public"
    assert image(owner, "alice-public") is None


def test_a_visitor_can_neither_update_nor_delete_another_users_image(owner, alice):
    updated = rows_changed(alice, "UPDATE images SET title = 'Mine now' WHERE uploader_id = 'bob'")
    deleted = rows_changed(alice, "DELETE FROM images WHERE uploader_id = 'bob'")

    assert (updated, deleted) == (0, 0)
    assert image(owner, "bob-public") == ("Bob Public", "public")
    assert image(owner, "bob-private") == ("Bob Private", "private")


def test_a_visitor_cannot_upload_an_image_in_another_users_name(owner, alice):
    with pytest.raises(peewee.ProgrammingError, match=RLS_VIOLATION):
        insert_image(alice, "forged", BOB)

    assert image(owner, "forged") is None


def test_a_visitor_cannot_give_their_image_away(owner, alice):
    with pytest.raises(peewee.ProgrammingError, match=RLS_VIOLATION):
        alice.execute_sql("UPDATE images SET uploader_id = 'bob' WHERE id = 'alice-public'")

    assert owner.execute_sql(
        "SELECT uploader_id FROM images WHERE id = 'alice-public'"
    ).fetchone() == (ALICE,)


def test_anonymous_cannot_upload_at_all(anonymous):
    with pytest.raises(peewee.ProgrammingError, match=RLS_VIOLATION):
        insert_image(anonymous, "from-nobody", ALICE)


def test_a_visitor_cannot_rename_another_users_album(owner, bob):
    renamed = rows_changed(bob, "UPDATE albums SET title = 'Bob was here' WHERE id = 'alice-trip'")

    assert renamed == 0
    assert owner.execute_sql("SELECT title FROM albums WHERE id = 'alice-trip'").fetchone() == (
        "Alice Trip",
    )


def test_an_editor_may_edit_another_users_public_image(owner, ed):
    edited = rows_changed(ed, "UPDATE images SET title = 'Retitled' WHERE id = 'bob-public'")

    assert edited == 1
    assert image(owner, "bob-public") == ("Retitled", "public")


def test_an_editor_cannot_upload_an_image_in_another_users_name(owner, ed):
    with pytest.raises(peewee.ProgrammingError, match=RLS_VIOLATION):
        insert_image(ed, "forged-by-ed", BOB)  # public: an editor may edit it, not create it

    assert image(owner, "forged-by-ed") is None


def test_an_editor_cannot_make_another_users_image_private(owner, ed):
    with pytest.raises(peewee.ProgrammingError, match=RLS_VIOLATION):
        ed.execute_sql("UPDATE images SET privacy = 'private' WHERE id = 'bob-public'")

    assert image(owner, "bob-public") == ("Bob Public", "public")


def test_an_editor_cannot_touch_another_users_private_image(owner, ed):
    edited = rows_changed(ed, "UPDATE images SET title = 'Retitled' WHERE id = 'bob-private'")

    assert edited == 0
    assert image(owner, "bob-private") == ("Bob Private", "private")


def test_an_editor_may_edit_another_users_public_album_but_not_a_private_one(ed):
    public = rows_changed(ed, "UPDATE albums SET title = 'Trip' WHERE id = 'alice-trip'")
    private = rows_changed(ed, "UPDATE albums SET title = 'Diary' WHERE id = 'alice-diary'")

    assert (public, private) == (1, 0)


def test_an_admin_may_change_and_delete_any_image(owner, ada):
    hidden = rows_changed(ada, "UPDATE images SET privacy = 'private' WHERE id = 'bob-public'")
    deleted = rows_changed(ada, "DELETE FROM images WHERE id = 'alice-private'")
    uploaded = rows_changed(ada, *upload_for(BOB, "for-bob"))

    assert (hidden, deleted, uploaded) == (1, 1, 1)
    assert image(owner, "bob-public")[1] == "private"
    assert image(owner, "alice-private") is None


def upload_for(uploader, image_id):
    """Return (sql, params) inserting a public image uploaded by ``uploader``."""
    return (
        "INSERT INTO images (id, title, url, uploader_id, width, height, size, format) "
        "VALUES (%s, 'An image', 'https://cdn.example.com/x.jpg', %s, 1, 1, 1, 'PNG')",
        (image_id, uploader),
    )


# --- The counters of 003 still move (their functions run as the tables' owner) ------------


def test_adding_ones_own_image_to_ones_own_album_counts_it(owner, alice):
    add_to_album(alice, "alice-diary", "alice-public")

    assert image_count(owner, "alice-diary") == 1


def test_taking_ones_image_out_of_another_users_album_uncounts_it(owner, bob):
    taken_out = rows_changed(bob, "DELETE FROM album_images WHERE image_id = 'bob-private'")

    # Bob may not write Alice's album: the trigger's UPDATE of its count, run as Bob,
    # would find no row to change, and the count would stay at 2.
    assert taken_out == 1
    assert image_count(owner, "alice-trip") == 1


def test_deleting_an_image_uncounts_it_from_another_users_album(owner, bob):
    rows_changed(bob, "DELETE FROM images WHERE id = 'bob-private'")  # its links cascade

    assert image_count(owner, "alice-trip") == 1


def test_uploading_counts_the_upload_on_the_user(owner, alice):
    rows_changed(alice, *upload_for(ALICE, "alice-new"))

    assert owner.execute_sql("SELECT uploads FROM users WHERE id = 'alice'").fetchone() == (3,)


# --- Rolling 004 back, and forward again --------------------------------------------------


def test_rolling_004_back_exposes_every_private_row_and_migrating_again_hides_them(owner, bob):
    runner = Runner(owner, MIGRATIONS_DIR)

    assert runner.rollback(to="003") == migrations_from("004")[::-1]
    assert images(bob) == set(IMAGES)  # down really took the protection away
    assert albums(bob) == set(ALBUMS)

    assert runner.migrate() == migrations_from("004")
    assert images(bob) == {*PUBLIC_IMAGES, "bob-private"}
    assert albums(bob) == {"alice-trip", "bob-drafts"}


def test_rolling_004_back_removes_all_it_added(owner):
    runner = Runner(owner, MIGRATIONS_DIR)
    runner.rollback(to="004")  # what later migrations add (005's search table) is theirs
    added = what_004_adds(owner)

    runner.rollback(steps=1)

    assert added == {
        "tables under row-level security": {"albums", "images", *LINK_TABLES},
        "policies": POLICIES,
        "functions": ACTING_FUNCTIONS,
        "functions running as their owner": TRIGGER_FUNCTIONS,
        "functions with a fixed search_path": {*TRIGGER_FUNCTIONS, "clonegallery_acting_role"},
    }
    assert what_004_adds(owner) == {kind: set() for kind in added}


def migrations_from(version):
    """Return the names of the project's migrations from ``version`` on, oldest first:
    those a rollback to the one before reverts and migrating again applies."""
    return sorted(path.stem for path in MIGRATIONS_DIR.glob("[0-9]*") if path.name[:3] >= version)


def what_004_adds(database):
    """Return the names the catalogue shows for each kind of thing 004 adds."""
    functions = "SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace"
    return {
        "tables under row-level security": ids(
            database,
            "SELECT relname FROM pg_class "
            "WHERE relnamespace = current_schema()::regnamespace AND relrowsecurity",
        ),
        "policies": ids(
            database, "SELECT policyname FROM pg_policies WHERE schemaname = current_schema()"
        ),
        "functions": ids(database, f"{functions} AND proname LIKE 'clonegallery\\_%%'"),
        "functions running as their owner": ids(database, f"{functions} AND prosecdef"),
        "functions with a fixed search_path": ids(
            database,
            f"{functions} AND EXISTS (SELECT FROM unnest(proconfig) AS setting "
            "WHERE setting LIKE 'search\\_path=%%')",
        ),
    }


def test_migrating_again_after_a_reset_takes_over_the_functions_it_left(owner):
    engine_for(owner).drop_all_tables(owner)  # what db.reset does: the tables and policies go
    assert what_004_adds(owner)["functions"] == ACTING_FUNCTIONS

    applied = Runner(owner, MIGRATIONS_DIR).migrate()

    assert applied == migrations_from("001")
    assert what_004_adds(owner)["policies"] >= POLICIES  # 005's search table adds its own


# --- Through the models: db.access.acting_as sets the setting -----------------------------


def test_acting_as_makes_the_connection_act_for_the_user_and_then_for_nobody(connect):
    database = connect()
    bind_models(database)
    alice = User.get_by_id(ALICE)

    with acting_as(alice):
        inside = {image.id for image in Image.select()}  # no filter of ours: the policies'
    after = {image.id for image in Image.select()}

    assert inside == PUBLIC_IMAGES | {"alice-private"}
    assert after == PUBLIC_IMAGES


def test_a_write_row_level_security_filters_to_nothing_raises_instead_of_passing(owner, connect):
    # Maintenance code through the application's role: the policies still apply to it (no
    # user acts on the connection), so the database writes no row, and that must not pass
    # as done.
    bind_models(connect())
    with as_system():
        public = Image.get_by_id("alice-public")  # anonymous may read it, not write it
        public.title = "renamed by maintenance"
        with pytest.raises(PermissionDenied, match=r"changed no row.*needs the tables' owner"):
            public.save()
        with pytest.raises(PermissionDenied, match="a delete of image alice-public"):
            public.delete_instance()

    assert image(owner, "alice-public") == (title_of("alice-public"), "public")
