"""The counters kept by migration 003's triggers: tags.count, albums.image_count, users.uploads.

Each counts the rows pointing at its row, through inserts, deletes (also those done by
ON DELETE CASCADE, which MySQL fires no trigger for) and updates that re-point a row to
another parent. Every test runs on each engine (the ``engine`` fixtures of conftest.py).
"""

import importlib.util

import peewee
import pytest

from db.models import Album, AlbumImage, Image, ImageTag, Tag, User
from db.runner import Runner
from tests.conftest import MIGRATIONS_DIR
from tests.factories import make_image, make_user


def tag_count(tag):
    return Tag.get_by_id(tag.id).count


def image_count(album):
    return Album.get_by_id(album.id).image_count


def uploads(user):
    return User.get_by_id(user.id).uploads


@pytest.fixture
def ada(engine_migrated_db):
    return make_user("Ada")


@pytest.fixture
def grace(engine_migrated_db):
    return make_user("Grace")


@pytest.fixture
def dawn(ada):
    return make_image(ada, "Dawn")


@pytest.fixture
def dusk(ada):
    return make_image(ada, "Dusk")


@pytest.fixture
def sunrise(engine_migrated_db):
    return Tag.create(name="sunrise")


@pytest.fixture
def sea(engine_migrated_db):
    return Tag.create(name="sea")


@pytest.fixture
def seascapes(ada):
    return Album.create(created_by=ada, title="Seascapes")


@pytest.fixture
def harbours(ada):
    return Album.create(created_by=ada, title="Harbours")


# --- tags.count ---------------------------------------------------------------------------


def test_tagging_images_counts_them_on_the_tag(sunrise, dawn, dusk):
    ImageTag.create(image=dawn, tag=sunrise)
    ImageTag.create(image=dusk, tag=sunrise)

    assert tag_count(sunrise) == 2


def test_untagging_an_image_uncounts_it(sunrise, dawn, dusk):
    ImageTag.insert_many([(dawn.id, sunrise.id), (dusk.id, sunrise.id)]).execute()

    ImageTag.delete().where(ImageTag.image == dawn.id).execute()

    assert tag_count(sunrise) == 1


def test_moving_a_link_to_another_tag_moves_the_count(sunrise, sea, dawn):
    ImageTag.create(image=dawn, tag=sunrise)

    ImageTag.update(tag=sea).where(ImageTag.image == dawn.id).execute()

    assert (tag_count(sunrise), tag_count(sea)) == (0, 1)


def test_moving_a_link_to_another_image_keeps_the_tag_count(sunrise, dawn, dusk):
    ImageTag.create(image=dawn, tag=sunrise)

    ImageTag.update(image=dusk).where(ImageTag.image == dawn.id).execute()

    assert tag_count(sunrise) == 1


def test_deleting_an_image_uncounts_it_from_its_tags(sunrise, sea, dawn, dusk):
    ImageTag.insert_many([(dawn.id, sunrise.id), (dawn.id, sea.id), (dusk.id, sea.id)]).execute()

    dawn.delete_instance()  # the links go by ON DELETE CASCADE

    assert (tag_count(sunrise), tag_count(sea)) == (0, 1)


# --- albums.image_count -------------------------------------------------------------------


def test_adding_images_to_an_album_counts_them(seascapes, dawn, dusk):
    AlbumImage.create(album=seascapes, image=dawn, position=0)
    AlbumImage.create(album=seascapes, image=dusk, position=1)

    assert image_count(seascapes) == 2


def test_removing_an_image_from_an_album_uncounts_it(seascapes, dawn, dusk):
    AlbumImage.create(album=seascapes, image=dawn, position=0)
    AlbumImage.create(album=seascapes, image=dusk, position=1)

    AlbumImage.delete().where(AlbumImage.image == dusk.id).execute()

    assert image_count(seascapes) == 1


def test_moving_an_image_to_another_album_moves_the_count(seascapes, harbours, dawn):
    AlbumImage.create(album=seascapes, image=dawn)

    AlbumImage.update(album=harbours).where(AlbumImage.image == dawn.id).execute()

    assert (image_count(seascapes), image_count(harbours)) == (0, 1)


def test_reordering_an_album_keeps_its_count(seascapes, dawn):
    AlbumImage.create(album=seascapes, image=dawn, position=0)

    AlbumImage.update(position=5).where(AlbumImage.image == dawn.id).execute()

    assert image_count(seascapes) == 1


def test_deleting_an_image_uncounts_it_from_its_albums(seascapes, harbours, dawn, dusk):
    AlbumImage.create(album=seascapes, image=dawn)
    AlbumImage.create(album=harbours, image=dawn)
    AlbumImage.create(album=harbours, image=dusk)

    dawn.delete_instance()

    assert (image_count(seascapes), image_count(harbours)) == (0, 1)


def test_deleting_an_albums_cover_image_uncounts_it(seascapes, dawn, dusk):
    AlbumImage.create(album=seascapes, image=dawn)
    AlbumImage.create(album=seascapes, image=dusk)
    Album.update(cover_image=dawn).where(Album.id == seascapes.id).execute()

    dawn.delete_instance()  # the cover goes by ON DELETE SET NULL, the link by CASCADE

    assert image_count(seascapes) == 1
    assert Album.get_by_id(seascapes.id).cover_image_id is None


def test_deleting_several_images_at_once_uncounts_each(sunrise, seascapes, dawn, dusk):
    ImageTag.insert_many([(dawn.id, sunrise.id), (dusk.id, sunrise.id)]).execute()
    AlbumImage.create(album=seascapes, image=dawn)
    AlbumImage.create(album=seascapes, image=dusk)

    Image.delete().where(Image.id.in_([dawn.id, dusk.id])).execute()

    assert (tag_count(sunrise), image_count(seascapes)) == (0, 0)


def test_deleting_an_album_with_images_works_despite_its_counter(seascapes, dawn):
    AlbumImage.create(album=seascapes, image=dawn)

    seascapes.delete_instance()

    assert Album.get_or_none(Album.id == seascapes.id) is None


def test_deleting_a_tag_with_images_works_despite_its_counter(sunrise, dawn):
    ImageTag.create(image=dawn, tag=sunrise)

    sunrise.delete_instance()

    assert Tag.get_or_none(Tag.id == sunrise.id) is None
    assert ImageTag.select().count() == 0


# --- users.uploads ------------------------------------------------------------------------


def test_uploading_images_counts_them_on_the_uploader(ada):
    make_image(ada, "Dawn")
    make_image(ada, "Dusk")

    assert uploads(ada) == 2


def test_images_inserted_in_bulk_are_each_counted(ada):
    rows = [
        {
            "uploader": ada.id,
            "id": f"frame-{n}",
            "title": f"Frame {n}",
            "url": f"https://cdn.example.com/frame-{n}.png",
            "width": 64,
            "height": 64,
            "size": 900,
            "format": "PNG",
        }
        for n in range(5)
    ]
    Image.insert_many(rows).execute()

    assert uploads(ada) == 5


def test_deleting_an_image_uncounts_it_from_the_uploader(ada, dawn, dusk):
    dawn.delete_instance()

    assert uploads(ada) == 1


def test_handing_an_image_to_another_uploader_moves_the_count(ada, grace, dawn, dusk):
    Image.update(uploader=grace).where(Image.id == dawn.id).execute()

    assert (uploads(ada), uploads(grace)) == (1, 1)


def test_editing_an_image_keeps_the_uploaders_count(ada, dawn):
    dawn.title = "Dawn, again"
    dawn.save()

    assert uploads(ada) == 1


# --- The migration itself -----------------------------------------------------------------


def test_applying_003_recounts_rows_that_were_there_before(engine_db):
    runner = Runner(engine_db, MIGRATIONS_DIR)
    runner.migrate(to="002")
    engine_db.execute_sql(
        "INSERT INTO users (id, email, name, uploads) VALUES ('u1', 'ada@example.com', 'Ada', 7)"
    )
    engine_db.execute_sql(
        "INSERT INTO images (id, title, url, uploader_id, width, height, size, format) "
        "VALUES ('i1', 'Dawn', '/dawn.jpg', 'u1', 1, 1, 1, 'PNG')"
    )
    engine_db.execute_sql("INSERT INTO tags (id, name, count) VALUES (1, 'sunrise', 42)")
    engine_db.execute_sql("INSERT INTO image_tags (image_id, tag_id) VALUES ('i1', 1)")

    runner.migrate()

    counts = engine_db.execute_sql(
        "SELECT (SELECT uploads FROM users), (SELECT count FROM tags)"
    ).fetchone()
    assert counts == (1, 1)


def test_003_refuses_an_engine_it_has_no_triggers_for():
    spec = importlib.util.spec_from_file_location(
        "add_triggers", MIGRATIONS_DIR / "003_add_triggers.py"
    )
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)

    class FirebirdDatabase(peewee.Database):
        """An engine peewee could be taught, which 003 has no triggers for."""

    with pytest.raises(NotImplementedError, match="no counter triggers for FirebirdDatabase"):
        migration.up(None, FirebirdDatabase("clonegallery"))  # never connected
