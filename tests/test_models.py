"""The models: what a valid row is, who refuses a bad one, and what deleting a row does.

Every rule is enforced twice: ``save()`` raises ValidationError naming ``table.column``
before the database is touched, and the database's CHECK, NOT NULL, UNIQUE and
FOREIGN KEY constraints refuse the same row when it is written around the models.
Every test runs on each engine (the ``engine`` fixtures of conftest.py).
"""

import peewee
import pytest

from db.errors import ValidationError
from db.models import (
    AIGenerationMeta,
    Album,
    AlbumImage,
    Analytics,
    Image,
    ImageTag,
    Tag,
    User,
    UserLike,
)
from tests.factories import image_fields, make_album, make_image, make_user

# How each engine words the refusal of a write, by kind of constraint.
REFUSALS = {
    "sqlite": {
        "check": "CHECK constraint failed",
        "not null": "NOT NULL constraint failed",
        "unique": "UNIQUE constraint failed",
        "foreign key": "FOREIGN KEY constraint failed",
    },
    "postgres": {
        "check": "violates check constraint",
        "not null": "violates not-null constraint",
        "unique": "violates unique constraint",
        "foreign key": "violates foreign key constraint",
    },
    "mysql": {
        "check": r"CONSTRAINT `[\w.]+` failed",
        "not null": "cannot be null",
        "unique": "Duplicate entry",
        "foreign key": "a foreign key constraint fails",
    },
}


# PyMySQL raises OperationalError, not IntegrityError, for a failed CHECK (MariaDB's
# error 4025, MySQL's 3819), and the MySQL engine does not translate it (yet).
CHECK_ERROR = {"mysql": peewee.OperationalError}


@pytest.fixture
def refused(engine):
    """``with refused("unique"):`` expects the database to refuse a write, in its own words."""

    def expect(constraint):
        error = peewee.IntegrityError
        if constraint == "check":
            error = CHECK_ERROR.get(engine, error)
        return pytest.raises(error, match=REFUSALS[engine][constraint])

    return expect


# --- A small gallery to point at ----------------------------------------------------------


@pytest.fixture
def gallery(engine_migrated_db):
    """One user with one image, one tag and one album, and a fan who owns nothing."""
    ada = make_user()
    fan = make_user(email="fan@example.com", name="Fan", role="visitor")
    image = make_image(ada)
    tag = Tag.create(name="sunrise")
    album = make_album(ada)
    return {"user": ada, "fan": fan, "image": image, "tag": tag, "album": album}


def valid_fields(table, gallery):
    """Return the fields of a valid new row of ``table``, pointing into ``gallery``."""
    return {
        "users": lambda: {"email": "alan@example.com", "name": "Alan"},
        "images": lambda: image_fields(gallery["user"]),
        "tags": lambda: {"name": "seascape"},
        "albums": lambda: {"created_by": gallery["user"], "title": "Harbours"},
        "album_images": lambda: {"album": gallery["album"], "image": gallery["image"]},
        "user_likes": lambda: {"user": gallery["fan"], "image": gallery["image"]},
        "ai_generation_meta": lambda: {
            "image": gallery["image"],
            "model": "stable-diffusion-xl-base-1.0",
            "prompt": "a lighthouse at dawn, volumetric light",
            "seed": 4_294_967_295,
            "steps": 30,
            "guidance_scale": 7.5,
            "sampler": "DPM++ 2M Karras",
        },
        "analytics": lambda: {"metric": "page_views", "value": 1234.0, "category": "usage"},
    }[table]()


MODELS = {
    model._meta.table_name: model
    for model in (User, Image, Tag, Album, AlbumImage, UserLike, AIGenerationMeta, Analytics)
}

# (table, column, bad value, what the message says is allowed): refused by save() and by the
# database alike.
BAD_VALUES = [
    ("users", "id", "  ", "a non-blank text"),
    ("users", "email", "not-an-email", "an email address"),
    ("users", "email", "ada@localhost", "an email address"),
    ("users", "name", "   ", "a non-blank text"),
    ("users", "role", "superuser", "one of admin, editor, visitor"),
    ("users", "role", "Admin", "one of admin, editor, visitor"),
    ("users", "uploads", -1, "a number >= 0"),
    ("users", "views", -1, "a number >= 0"),
    ("images", "title", "", "a non-blank text"),
    ("images", "url", " ", "a non-blank text"),
    ("images", "privacy", "friends", "one of public, private"),
    ("images", "views", -3, "a number >= 0"),
    ("images", "width", 0, "a number > 0"),
    ("images", "height", -1080, "a number > 0"),
    ("images", "size", 0, "a number > 0"),
    ("images", "format", "BMP", "one of JPEG, PNG, GIF, WEBP, AVIF, HEIC, TIFF"),
    ("images", "format", "jpeg", "one of JPEG, PNG, GIF, WEBP, AVIF, HEIC, TIFF"),
    ("tags", "name", "", "a non-blank text"),
    ("tags", "count", -1, "a number >= 0"),
    ("albums", "title", " ", "a non-blank text"),
    ("albums", "privacy", "secret", "one of public, private"),
    ("albums", "image_count", -1, "a number >= 0"),
    ("album_images", "position", -1, "a number >= 0"),
    ("ai_generation_meta", "model", "", "a non-blank text"),
    ("ai_generation_meta", "prompt", "  ", "a non-blank text"),
    ("ai_generation_meta", "seed", -1, "a number >= 0"),
    ("ai_generation_meta", "steps", 0, "a number > 0"),
    ("ai_generation_meta", "guidance_scale", -0.5, "a number >= 0"),
    ("analytics", "metric", "", "a non-blank text"),
]

# (table, column): NOT NULL columns without a default.
REQUIRED = [
    ("users", "email"),
    ("users", "name"),
    ("images", "title"),
    ("images", "url"),
    ("images", "width"),
    ("images", "height"),
    ("images", "size"),
    ("images", "format"),
    ("tags", "name"),
    ("albums", "title"),
    ("ai_generation_meta", "model"),
    ("ai_generation_meta", "prompt"),
    ("analytics", "metric"),
    ("analytics", "value"),
]


# Values that differ from an allowed one only by case: MySQL's default collation
# (utf8mb4_general_ci) compares them equal, so its CHECK ... IN (...) lets them in.
def case_id(case):
    table, column, value, *_ = case
    return f"{table}.{column}={value!r}"


# --- Validation in save() -----------------------------------------------------------------


@pytest.mark.parametrize("case", BAD_VALUES, ids=case_id)
def test_save_refuses_a_bad_value_naming_the_column_the_value_and_what_is_allowed(gallery, case):
    table, column, value, allowed = case
    model = MODELS[table]
    fields = {**valid_fields(table, gallery), column: value}
    rows_before = model.select().count()

    with pytest.raises(ValidationError) as refused:
        model.create(**fields)

    assert f"{table}.{column}: {value!r} is not {allowed}" in str(refused.value)
    assert model.select().count() == rows_before


@pytest.mark.parametrize("case", BAD_VALUES, ids=case_id)
def test_the_database_refuses_the_same_bad_value_written_around_the_models(
    gallery, refused, engine, request, case
):
    table, column, value, _ = case
    model = MODELS[table]
    fields = {**valid_fields(table, gallery), column: value}

    with refused("check"):
        model.insert(**fields).execute()


@pytest.mark.parametrize(("table", "column"), REQUIRED, ids=[".".join(c) for c in REQUIRED])
def test_a_required_column_is_refused_when_none_by_save_and_by_the_database(
    gallery, refused, table, column
):
    model = MODELS[table]
    fields = {**valid_fields(table, gallery), column: None}

    with pytest.raises(ValidationError, match=rf"{table}\.{column}: a value is required"):
        model.create(**fields)
    with refused("not null"):
        model.insert(**fields).execute()


def test_a_required_column_left_out_of_a_new_row_is_named(engine_migrated_db):
    with pytest.raises(ValidationError, match=r"users\.email: a value is required"):
        User.create(name="Ada")


def test_every_broken_rule_of_a_row_is_reported_at_once(gallery):
    with pytest.raises(ValidationError) as refused:
        make_image(gallery["user"], format="BMP", width=0, privacy="friends")

    message = str(refused.value)
    assert "images.format: 'BMP'" in message
    assert "images.width: 0" in message
    assert "images.privacy: 'friends'" in message


def test_save_refuses_text_longer_than_its_column(engine_migrated_db):
    with pytest.raises(ValidationError, match=r"users\.name: .* is longer than 100 characters"):
        make_user(name="A" * 101)


def test_save_refuses_a_number_rule_given_text(gallery):
    with pytest.raises(ValidationError, match=r"images\.width: 'wide' is not a number > 0"):
        make_image(gallery["user"], width="wide")


def test_an_update_is_validated_too(gallery):
    image = gallery["image"]
    image.format = "BMP"

    with pytest.raises(ValidationError, match=r"images\.format: 'BMP'"):
        image.save()
    assert Image.get_by_id(image.id).format == "JPEG"


def test_a_partly_loaded_row_saves_only_what_it_loaded(gallery):
    user = User.select(User.id, User.name).where(User.id == gallery["user"].id).get()
    user.name = "Ada Lovelace"

    user.save()

    assert User.get_by_id(user.id).name == "Ada Lovelace"


def test_valid_rows_of_every_table_save(gallery):
    for table, model in MODELS.items():
        model.create(**valid_fields(table, gallery))
    ImageTag.create(image=gallery["image"], tag=gallery["tag"])


def test_new_rows_get_defaults_and_a_generated_text_id(engine_migrated_db):
    ada = User.create(email="ada@example.com", name="Ada")

    assert len(ada.id) == 32
    assert (ada.role, ada.uploads, ada.views) == ("visitor", 0, 0)
    assert User.get_by_id(ada.id).joined_at is not None


def test_rows_inserted_with_sql_get_the_same_defaults_from_the_database(engine_migrated_db):
    engine_migrated_db.execute_sql(
        "INSERT INTO users (id, email, name) VALUES ('u1', 'ada@example.com', 'Ada')"
    )
    engine_migrated_db.execute_sql("INSERT INTO tags (name) VALUES ('sunrise')")

    ada = User.get_by_id("u1")
    assert (ada.role, ada.uploads, ada.views) == ("visitor", 0, 0)
    assert ada.joined_at is not None
    tag = Tag.get(Tag.name == "sunrise")
    assert (tag.count, tag.trending) == (0, False)


# --- Uniqueness ---------------------------------------------------------------------------


def test_two_users_cannot_share_an_email(gallery, refused):
    with refused("unique"):
        make_user(email="ada@example.com", name="Another Ada")


def test_two_tags_cannot_share_a_name(gallery, refused):
    with refused("unique"):
        Tag.create(name="sunrise")


def test_a_user_likes_an_image_at_most_once(gallery, refused):
    UserLike.create(user=gallery["user"], image=gallery["image"])

    with refused("unique"):
        UserLike.create(user=gallery["user"], image=gallery["image"])


def test_an_image_carries_a_tag_at_most_once(gallery, refused):
    ImageTag.create(image=gallery["image"], tag=gallery["tag"])

    with refused("unique"):
        ImageTag.create(image=gallery["image"], tag=gallery["tag"])


def test_an_image_is_in_an_album_at_most_once(gallery, refused):
    AlbumImage.create(album=gallery["album"], image=gallery["image"], position=0)

    with refused("unique"):
        AlbumImage.create(album=gallery["album"], image=gallery["image"], position=1)


def test_an_image_has_at_most_one_row_of_generation_parameters(gallery, refused):
    AIGenerationMeta.create(image=gallery["image"], model="sdxl", prompt="a lighthouse")

    with refused("unique"):
        AIGenerationMeta.create(image=gallery["image"], model="sdxl", prompt="a harbour")


def test_a_link_to_a_missing_row_is_refused(gallery, refused):
    with refused("foreign key"):
        ImageTag.insert(image="no-such-image", tag=gallery["tag"]).execute()


# --- ON DELETE ----------------------------------------------------------------------------


def rows_pointing_at(image):
    return {
        "image_tags": ImageTag.select().where(ImageTag.image == image.id).count(),
        "album_images": AlbumImage.select().where(AlbumImage.image == image.id).count(),
        "user_likes": UserLike.select().where(UserLike.image == image.id).count(),
        "ai_generation_meta": AIGenerationMeta.select()
        .where(AIGenerationMeta.image == image.id)
        .count(),
    }


def test_deleting_an_image_deletes_its_tags_album_places_likes_and_generation_meta(gallery):
    image = gallery["image"]
    ImageTag.create(image=image, tag=gallery["tag"])
    AlbumImage.create(album=gallery["album"], image=image)
    UserLike.create(user=gallery["user"], image=image)
    AIGenerationMeta.create(image=image, model="sdxl", prompt="a lighthouse")
    assert set(rows_pointing_at(image).values()) == {1}

    image.delete_instance()

    assert set(rows_pointing_at(image).values()) == {0}
    assert Tag.get_by_id(gallery["tag"].id).name == "sunrise"
    assert Album.get_by_id(gallery["album"].id).title == "Seascapes"


def test_deleting_an_albums_cover_image_leaves_the_album_without_a_cover(gallery):
    album = make_album(gallery["user"], title="Covered", cover_image=gallery["image"])

    gallery["image"].delete_instance()

    assert Album.get_by_id(album.id).cover_image_id is None


def test_a_user_who_owns_images_cannot_be_deleted(gallery, refused):
    Album.delete().execute()

    with refused("foreign key"):
        gallery["user"].delete_instance()
    assert User.get_or_none(User.id == gallery["user"].id) is not None


def test_a_user_who_owns_albums_cannot_be_deleted(gallery, refused):
    Image.delete().execute()

    with refused("foreign key"):
        gallery["user"].delete_instance()
    assert User.get_or_none(User.id == gallery["user"].id) is not None


def test_deleting_a_user_without_content_deletes_their_likes(gallery):
    fan = gallery["fan"]
    UserLike.create(user=fan, image=gallery["image"])

    fan.delete_instance()

    assert UserLike.select().where(UserLike.user == fan.id).count() == 0
    assert Image.get_or_none(Image.id == gallery["image"].id) is not None


def test_deleting_an_album_deletes_its_links_but_not_its_images(gallery):
    AlbumImage.create(album=gallery["album"], image=gallery["image"])

    gallery["album"].delete_instance()

    assert AlbumImage.select().count() == 0
    assert Image.get_or_none(Image.id == gallery["image"].id) is not None


def test_deleting_a_tag_deletes_its_links_but_not_its_images(gallery):
    ImageTag.create(image=gallery["image"], tag=gallery["tag"])

    gallery["tag"].delete_instance()

    assert ImageTag.select().count() == 0
    assert Image.get_or_none(Image.id == gallery["image"].id) is not None


def test_a_row_assigned_before_it_was_saved_links_once_saved(gallery):
    tag = Tag(name="dusk")
    link = ImageTag(image=gallery["image"], tag=tag)
    tag.save()

    link.save(force_insert=True)

    assert ImageTag.get(ImageTag.tag == tag.id).image_id == gallery["image"].id
