"""Access rules: who may do what (docs/security.md's permission table), and who sees what.

The permission table runs over the sample users (the seeders' admin Maya, editor Diego,
visitor Liam) and an anonymous visitor, on SQLite: the rules live in Python, the same on
every engine. Each case writes for real inside ``acting_as`` and is rolled back. The
isolation and injection tests run on SQLite, PostgreSQL and MariaDB with the seeded
gallery.
"""

import contextvars

import peewee as pw
import pytest

from db.access import acting_as, as_system, can
from db.engines import open_database
from db.errors import PermissionDenied
from db.models import (
    Album,
    AlbumImage,
    BaseModel,
    Image,
    ImageTag,
    Tag,
    User,
    UserLike,
    bind_models,
)
from db.runner import Runner
from db.seeders import Seeder
from tests.conftest import MIGRATIONS_DIR, PROJECT_ROOT, sqlite_url
from tests.factories import image_fields, make_album, make_image
from tests.servers import drop_database, new_database_url

ACCESS_PAGE = PROJECT_ROOT / "docs" / "security.md"  # the documented permission table

# The seeders' sample users.
MAYA, DIEGO, AMARA, LIAM, SOFIA = (
    "maya.chen@example.com",  # admin
    "diego.alvarez@example.com",  # editor
    "amara.okafor@example.com",  # editor
    "liam.oconnor@example.com",  # visitor
    "sofia.rossi@example.com",  # visitor
)
ACTORS = {"admin": MAYA, "editor": DIEGO, "visitor": LIAM, "anonymous": None}
Y, N, NA = "yes", "no", "n/a"  # n/a: an anonymous visitor owns nothing

# docs/security.md's permission table, row for row: (admin, editor, visitor, anonymous).
PERMISSIONS = {
    "view another user's public image": (Y, Y, Y, Y),
    "view another user's private image": (Y, N, N, N),
    "view own private image": (Y, Y, Y, NA),
    "upload an image": (Y, Y, Y, N),
    "upload an image in another user's name": (Y, N, N, N),
    "edit own image": (Y, Y, Y, NA),
    "edit another user's public image": (Y, Y, N, N),
    "edit another user's private image": (Y, N, N, N),
    "make another user's public image private": (Y, N, N, N),
    "delete own image": (Y, Y, Y, NA),
    "delete another user's public image": (Y, Y, N, N),
    "delete another user's private image": (Y, N, N, N),
    "create an album": (Y, Y, Y, N),
    "edit another user's public album": (Y, Y, N, N),
    "delete another user's private album": (Y, N, N, N),
    "add another user's public image to own album": (Y, Y, Y, NA),
    "add another user's private image to own album": (Y, N, N, NA),
    "add an image to another user's public album": (Y, Y, N, N),
    "like a public image": (Y, Y, Y, N),
    "like another user's private image": (Y, N, N, N),
    "remove another user's like": (Y, N, N, N),
    "create a tag": (Y, Y, N, N),
    "rename a tag": (Y, Y, N, N),
    "delete a tag": (Y, Y, N, N),
    "tag own image with an existing tag": (Y, Y, Y, NA),
    "tag another user's public image": (Y, Y, N, N),
    "sign up as a visitor": (Y, Y, Y, Y),
    "create an editor account": (Y, N, N, N),
    "edit own profile": (Y, Y, Y, NA),
    "edit another user's profile": (Y, N, N, N),
    "change another user's role": (Y, N, N, N),
    "change own role": (Y, N, N, NA),
    "update images in bulk (a class-level query)": (Y, N, N, N),
}


# --- The gallery the permission table runs on ---------------------------------------------


@pytest.fixture(scope="module")
def sample_gallery(tmp_path_factory):
    """A migrated and seeded SQLite gallery, plus fresh content of the actors and Amara."""
    path = tmp_path_factory.mktemp("access") / "gallery.db"
    database = open_database(f"sqlite:///{path}")
    Runner(database, MIGRATIONS_DIR).migrate()
    Seeder(database, PROJECT_ROOT / "seeders").seed()
    bind_models(database)
    with as_system():
        for email in (MAYA, DIEGO, AMARA, LIAM):
            add_own_content(User.get(User.email == email))
    yield database
    database.close()


def add_own_content(user):
    """A public and a private image and album of ``user``, in no album and liked by no one
    (visitors own none seeded; the seeded ones are linked already)."""
    for privacy in ("public", "private"):
        make_image(user, f"{user.name} {privacy}", privacy=privacy)
        make_album(user, title=f"{user.name} {privacy}", privacy=privacy)


@pytest.fixture
def world(sample_gallery):
    """The sample gallery, bound to the models; whatever a test writes is rolled back."""
    bind_models(sample_gallery)
    with sample_gallery.atomic() as transaction:
        yield World()
        transaction.rollback()


class World:
    """The rows a permission case acts on, from the point of view of one actor."""

    def user(self, email):
        return User.get(User.email == email)

    def image(self, owner, privacy):
        return Image.get(Image.title == f"{owner.name} {privacy}")

    def other(self, actor):
        """Another user who owns public and private images and albums: Amara (an editor)."""
        return self.user(AMARA)

    def album(self, owner, privacy="public"):
        return Album.get(Album.title == f"{owner.name} {privacy}")


# --- The actions, each a real write (or a question) as ``actor`` --------------------------


def view(world, actor, owner_of, privacy):
    owner = world.other(actor) if owner_of == "other" else actor
    return can(actor, "view", world.image(owner, privacy))


def upload(world, actor, owner):
    Image.create(**image_fields(owner, "Fresh upload"))


def edit_image(world, actor, owner, which, **changes):
    image = world.image(owner, which)
    for name, value in {"title": "Renamed", **changes}.items():
        setattr(image, name, value)
    image.save()


def delete_image(world, actor, owner, privacy):
    image = world.image(owner, privacy)
    with as_system():  # its links first: the case is about the image itself
        for model in (ImageTag, AlbumImage, UserLike):
            model.delete().where(model.image == image.id).execute()
        Album.update(cover_image=None).where(Album.cover_image == image.id).execute()
    image.delete_instance()


def add_to_album(world, album, image):
    AlbumImage.create(album=album, image=image, position=99)


def set_role(user, role):
    user.role = role
    user.save()


ACTIONS = {
    "view another user's public image": lambda w, a: view(w, a, "other", "public"),
    "view another user's private image": lambda w, a: view(w, a, "other", "private"),
    "view own private image": lambda w, a: view(w, a, "own", "private"),
    "upload an image": lambda w, a: upload(w, a, a or w.user(SOFIA)),
    "upload an image in another user's name": lambda w, a: upload(w, a, w.user(SOFIA)),
    "edit own image": lambda w, a: edit_image(w, a, a, "public"),
    "edit another user's public image": lambda w, a: edit_image(w, a, w.other(a), "public"),
    "edit another user's private image": lambda w, a: edit_image(w, a, w.other(a), "private"),
    "make another user's public image private": lambda w, a: edit_image(
        w, a, w.other(a), "public", privacy="private"
    ),
    "delete own image": lambda w, a: delete_image(w, a, a, "private"),
    "delete another user's public image": lambda w, a: delete_image(w, a, w.other(a), "public"),
    "delete another user's private image": lambda w, a: delete_image(w, a, w.other(a), "private"),
    "create an album": lambda w, a: make_album(a or w.user(SOFIA), title="New"),
    "edit another user's public album": lambda w, a: edit_album(w.album(w.other(a))),
    "delete another user's private album": lambda w, a: w.album(
        w.other(a), "private"
    ).delete_instance(),
    "add another user's public image to own album": lambda w, a: add_to_album(
        w, w.album(a), w.image(w.other(a), "public")
    ),
    "add another user's private image to own album": lambda w, a: add_to_album(
        w, w.album(a), w.image(w.other(a), "private")
    ),
    "add an image to another user's public album": lambda w, a: add_to_album(
        w, w.album(w.other(a)), w.image(w.user(MAYA), "public")
    ),
    "like a public image": lambda w, a: like(a or w.user(SOFIA), w.image(w.other(a), "public")),
    "like another user's private image": lambda w, a: like(
        a or w.user(SOFIA), w.image(w.other(a), "private")
    ),
    "remove another user's like": lambda w, a: remove_like(w, w.user(SOFIA)),
    "create a tag": lambda w, a: Tag.create(name="brand-new"),
    "rename a tag": lambda w, a: rename_tag(Tag.get(Tag.name == "aerial")),
    "delete a tag": lambda w, a: Tag.get(Tag.name == "aerial").delete_instance(),
    "tag own image with an existing tag": lambda w, a: tag_image(w.image(a, "public")),
    "tag another user's public image": lambda w, a: tag_image(w.image(w.other(a), "public")),
    "sign up as a visitor": lambda w, a: User.create(email="new@example.com", name="New"),
    "create an editor account": lambda w, a: User.create(
        email="ed@example.com", name="Ed", role="editor"
    ),
    "edit own profile": lambda w, a: rename_user(a),
    "edit another user's profile": lambda w, a: rename_user(w.user(SOFIA)),
    "change another user's role": lambda w, a: set_role(w.user(SOFIA), "editor"),
    "change own role": lambda w, a: set_role(a, "editor" if a.role == "admin" else "admin"),
    "update images in bulk (a class-level query)": lambda w, a: Image.update(views=0).execute(),
}


def edit_album(album):
    album.title = "Renamed"
    album.save()


def like(user, image):
    UserLike.create(user=user, image=image)


def remove_like(world, liker):
    with as_system():
        like(liker, world.image(world.user(MAYA), "public"))
    UserLike.get(UserLike.user == liker.id).delete_instance()


def rename_tag(tag):
    tag.name = "renamed"
    tag.save()


def tag_image(image):
    ImageTag.create(image=image, tag=Tag.get(Tag.name == "aerial"))


def rename_user(user):
    user.name = "Renamed"
    user.save()


CASES = [
    (action, role, expected)
    for action, answers in PERMISSIONS.items()
    for role, expected in zip(ACTORS, answers, strict=True)
    if expected != NA
]


def test_every_action_of_the_table_is_exercised():
    assert ACTIONS.keys() == PERMISSIONS.keys()


def test_the_documented_permission_table_is_the_one_tested():
    section = ACCESS_PAGE.read_text().split("## Access rules", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    header, *cells = [[cell.strip() for cell in row] for row in rows]

    assert header == ["Action", "Admin", "Editor", "Visitor", "Anonymous"]
    assert {action: tuple(answers) for action, *answers in cells} == PERMISSIONS


@pytest.mark.parametrize(("action", "role", "expected"), CASES)
def test_permission_table(world, action, role, expected):
    actor = world.user(ACTORS[role]) if ACTORS[role] else None

    with acting_as(actor):
        try:
            answer = ACTIONS[action](world, actor)
        except PermissionDenied as refused:
            answer, reason = False, str(refused)
        else:
            answer, reason = answer is not False, None

    assert (Y if answer else N) == expected, reason


# --- Enforcement: the messages, and writes with no acting user ---------------------------


def test_a_refusal_names_who_what_and_why(world):
    liam, amara = world.user(LIAM), world.user(AMARA)
    image = world.image(amara, "public")
    image.title = "Mine now"

    with acting_as(liam), pytest.raises(PermissionDenied) as refused:
        image.save()

    assert str(refused.value) == (
        f"visitor {LIAM} may not edit image {image.id}: it is another user's"
    )
    assert Image.get_by_id(image.id).title != "Mine now"


def test_only_an_admin_changes_a_role_even_their_own(world):
    liam, maya = world.user(LIAM), world.user(MAYA)

    with acting_as(liam), pytest.raises(PermissionDenied) as refused:
        set_role(liam, "admin")

    assert str(refused.value) == (
        f"visitor {LIAM} may not change the role of user {liam.id}: only an admin may"
    )
    assert User.get_by_id(liam.id).role == "visitor"
    assert can(maya, "change_role", liam)
    assert not can(world.user(DIEGO), "change_role", liam)


def test_a_write_with_no_acting_user_is_refused(world):
    image = world.image(world.user(AMARA), "public")
    image.title = "Nobody said who"

    with pytest.raises(PermissionDenied, match="no acting user for a write to images"):
        _outside_every_context(image.save)


def _outside_every_context(write):
    """Run ``write`` in a fresh context: no acting_as, no as_system (the test fixture's)."""
    return contextvars.Context().run(write)


def test_an_anonymous_visitor_is_told_to_sign_in(world):
    with acting_as(None), pytest.raises(PermissionDenied, match="sign in first"):
        like(world.user(SOFIA), world.image(world.user(AMARA), "public"))


# --- Isolation: a private image never shows up in another user's listings -----------------


@pytest.fixture(scope="module")
def seeded_galleries(tmp_path_factory):
    """``gallery(engine)``: one migrated and seeded gallery per engine for this module (per
    test worker), made on first use and dropped at the end."""
    made = {}

    def gallery(engine):
        if engine not in made:
            folder = tmp_path_factory.mktemp("seeded")
            url = sqlite_url(folder / "g.db") if engine == "sqlite" else new_database_url(engine)
            database = open_database(url)
            made[engine] = (url, database)
            Runner(database, MIGRATIONS_DIR).migrate()
            Seeder(database, PROJECT_ROOT / "seeders").seed()
        return made[engine][1]

    yield gallery
    for engine, (url, database) in made.items():
        database.close()
        if engine != "sqlite":
            drop_database(url)


@pytest.fixture
def seeded(engine, seeded_galleries):
    """The seeded gallery of the engine under test, models bound; what a test writes is
    rolled back."""
    database = seeded_galleries(engine)
    bind_models(database)
    with database.atomic() as transaction:
        yield database
        transaction.rollback()


@pytest.fixture
def searchable(engine, seeded_galleries, request):
    """The seeded gallery of the engine under test, where what a test writes is found by
    a search: rolled back afterwards, but on MariaDB, whose FULLTEXT index (InnoDB) sees
    committed rows only, committed, and the images the test added deleted afterwards."""
    if engine != "mysql":
        yield request.getfixturevalue("seeded")
        return
    database = seeded_galleries(engine)
    bind_models(database)
    with as_system():
        before = [image.id for image in Image.select(Image.id)]
    yield database
    with as_system():
        Image.delete().where(Image.id.not_in(before)).execute()


@pytest.fixture
def shared_gallery(seeded):
    """The seeded gallery on the engine under test, with Amara's private image where other
    users look: in her public album, under the tag ai-art (seeded), liked by Sofia before
    it went private."""
    amara, sofia = User.get(User.email == AMARA), User.get(User.email == SOFIA)
    secret = Image.get(Image.uploader == amara.id, Image.privacy == "private")
    album = Album.get(Album.created_by == amara.id, Album.privacy == "public")
    with acting_as(amara):
        AlbumImage.create(album=album, image=secret, position=50)
    UserLike.create(user=sofia, image=secret)
    return {"secret": secret, "album": album, "amara": amara, "sofia": sofia}


def listings(shared, viewer):
    """Every listing the app shows, as ``viewer`` sees it: {name: [image ids]}."""
    amara, sofia, secret = shared["amara"], shared["sofia"], shared["secret"]
    queries = {
        "all images": Image.visible_to(viewer),
        "amara's uploads": Image.uploaded_by(amara, viewer),
        "amara's album page": Image.in_album(shared["album"], viewer),
        "tag page": Image.tagged("ai-art", viewer),
        "search": Image.search(secret.title.split()[0], viewer),
        "sofia's likes": Image.liked_by(sofia, viewer),
    }
    return {name: [image.id for image in query] for name, query in queries.items()}


@pytest.mark.parametrize("who", ["anonymous", LIAM, SOFIA, DIEGO])
def test_another_users_private_image_is_in_none_of_the_listings(shared_gallery, who):
    viewer = None if who == "anonymous" else User.get(User.email == who)

    seen = listings(shared_gallery, viewer)

    assert {
        name: shared_gallery["secret"].id in ids for name, ids in seen.items()
    } == dict.fromkeys(seen, False)
    assert seen["amara's album page"], "the album's public images still show"


@pytest.mark.parametrize("who", [AMARA, MAYA])
def test_its_owner_and_admins_see_it_everywhere(shared_gallery, who):
    viewer = User.get(User.email == who)

    seen = listings(shared_gallery, viewer)

    assert all(shared_gallery["secret"].id in ids for ids in seen.values()), seen


def test_a_private_album_is_not_listed_and_its_page_is_empty_for_others(shared_gallery):
    amara, liam = shared_gallery["amara"], User.get(User.email == LIAM)
    drafts = Album.get(Album.created_by == amara.id, Album.privacy == "private")

    assert drafts.id not in [album.id for album in Album.visible_to(liam)]
    assert list(Image.in_album(drafts, liam)) == []
    assert drafts.id in [album.id for album in Album.visible_to(amara)]


# --- Injection: user text is stored and matched literally --------------------------------

HOSTILE = (
    "x'); DROP TABLE images; --",
    "' OR '1'='1",
    '" OR ""="',
    "100%",
    "under_score",
    "back\\slash",
    "semi;colon",
)


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_title_is_stored_and_found_as_typed(searchable, text):
    diego = User.get(User.email == DIEGO)
    before = Image.select().count()

    with acting_as(diego):
        image = make_image(diego, f"Title {text} end")

    assert Image.get_by_id(image.id).title == f"Title {text} end"
    assert [found.id for found in Image.search(text, diego)] == [image.id]
    assert Image.select().count() == before + 1  # nothing dropped, nothing else matched


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_tag_name_is_stored_and_matched_as_typed(seeded, text):
    diego = User.get(User.email == DIEGO)
    image = Image.get(Image.uploader == diego.id, Image.privacy == "public")

    with acting_as(diego):
        tag = Tag.create(name=text)
        ImageTag.create(image=image, tag=tag)

    assert Tag.get_by_id(tag.id).name == text
    assert [found.id for found in Image.tagged(text, None)] == [image.id]
    assert list(Image.tagged(text + "x", None)) == []


def test_wildcards_in_a_search_are_plain_characters(seeded):

    assert list(Image.search("%", None)) == []  # no seeded title holds a "%"
    assert list(Image.search("_", None)) == []
    assert len(list(Image.search("a", None))) > 0  # while a plain letter matches


def test_a_table_without_a_rule_is_refused_by_name(world):
    class Note(BaseModel):
        body = pw.TextField()

        class Meta:
            table_name = "notes"

    with acting_as(world.user(MAYA)), pytest.raises(PermissionDenied) as refused:
        Note(body="hello").save()

    assert "notes has no access rule yet (add one to db.access.RULES)" in str(refused.value)
