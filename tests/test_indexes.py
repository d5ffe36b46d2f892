"""Migration 006's partial and covering indexes, on every engine: ``up`` puts them in the
catalogue as written for the engine, the typical queries they serve use them on a
populated gallery (``db.explain``), and ``down`` takes them out and nothing else."""

import peewee
import pytest

from db import maintenance
from db.engines import engine_for, open_database
from db.explain import explain, explain_builtin
from db.models import Image, User, UserLike, bind_models
from db.populate import GalleryPlan, populate
from db.runner import Runner
from tests import servers
from tests.conftest import MIGRATIONS_DIR, sqlite_url

MIGRATION = "006_partial_and_covering_indexes"
IMAGES = 3_000
# engine -> {index: (table, its columns as the catalogue lists them)}
EXPECTED = {
    "sqlite": {
        "images_public_newest": ("images", ["uploaded_at", "id"]),
        "user_likes_user_newest": ("user_likes", ["user_id", "liked_at", "image_id"]),
        "image_tags_tag_image": ("image_tags", ["tag_id", "image_id"]),
    },
    "postgres": {
        "images_public_newest": ("images", ["uploaded_at", "id"]),
        "user_likes_user_newest": ("user_likes", ["user_id", "liked_at", "image_id"]),
        "image_tags_tag_image": ("image_tags", ["tag_id", "image_id"]),
    },
    # No partial indexes: privacy leads instead. image_tags_tag_id of 002 already covers
    # (InnoDB keeps the primary key in every index), and liked_by's rows are sorted in a
    # temporary table whatever the index: no other is added.
    "mysql": {
        "images_public_newest": ("images", ["privacy", "uploaded_at", "id"]),
    },
}
PARTIAL = {"sqlite", "postgres"}


def indexes_named(database, wanted):
    """Return {index: its IndexMetadata} for the indexes of 006 found in the catalogue."""
    tables = {table for table, _ in wanted.values()}
    return {
        index.name: index
        for table in tables
        for index in database.get_indexes(table)
        if index.name in wanted
    }


def only_with_partial_indexes(engine):
    if engine not in PARTIAL:
        pytest.skip(f"{engine} has no partial indexes: 006 adds composites there")


def all_index_names(database):
    return sorted(
        (table, index.name)
        for table in database.get_tables()
        for index in database.get_indexes(table)
    )


@pytest.fixture(scope="module")
def galleries():
    """Populated galleries, one per engine, made the first time a test asks (see gallery)."""
    urls = {}
    yield urls
    for engine, url in urls.items():
        if engine != "sqlite":
            servers.drop_database(url)


@pytest.fixture
def gallery(engine, galleries, tmp_path_factory):
    """A fully migrated gallery of ~3,000 images on the engine, its statistics fresh,
    the models bound to it."""
    if engine not in galleries:
        if engine == "sqlite":
            galleries[engine] = sqlite_url(tmp_path_factory.mktemp("indexes") / "gallery.db")
        else:
            galleries[engine] = servers.new_database_url(engine)
        database = open_database(galleries[engine])
        try:
            Runner(database, MIGRATIONS_DIR).migrate()
            bind_models(database)
            populate(database, GalleryPlan.sized(images=IMAGES))
            maintenance.optimize(engine_for(database), database)
        finally:
            database.close()
    database = open_database(galleries[engine], create=False)
    bind_models(database)
    yield database
    database.close()


def test_up_creates_each_index_with_the_engines_columns(engine, engine_migrated_db):
    found = indexes_named(engine_migrated_db, EXPECTED[engine])

    assert sorted(found) == sorted(EXPECTED[engine])
    for name, (table, columns) in EXPECTED[engine].items():
        assert (found[name].table, list(found[name].columns)) == (table, columns), name


def test_the_newest_public_index_holds_public_images_only(engine, engine_migrated_db):
    only_with_partial_indexes(engine)
    found = indexes_named(engine_migrated_db, EXPECTED[engine])

    assert "WHERE" in found["images_public_newest"].sql.upper()
    assert "public" in found["images_public_newest"].sql


def test_postgres_carries_image_id_outside_the_key(engine, engine_migrated_db):
    if engine != "postgres":
        pytest.skip("INCLUDE columns are PostgreSQL's")
    found = indexes_named(engine_migrated_db, EXPECTED[engine])

    assert "INCLUDE (image_id)" in found["user_likes_user_newest"].sql
    assert "INCLUDE (image_id)" in found["image_tags_tag_image"].sql


def test_recent_public_images_are_read_from_the_newest_public_index(engine, gallery):
    if engine == "postgres":
        # The built-in query orders by uploaded_at alone: 002's images_uploaded_at serves
        # it as well, and PostgreSQL's planner takes either; the app's page is below.
        pytest.skip("PostgreSQL may take images_uploaded_at for the built-in query")
    report = explain_builtin(gallery)

    recent = next(query for query in report.queries if query.name == "recent public images")
    assert "images_public_newest" in recent.indexes, recent.plan
    assert not recent.findings, recent.plan  # no full scan, nothing sorted


def test_the_newest_public_page_needs_no_sort(gallery):
    sql = peewee.query_to_string(Image.visible_to(None).limit(20))

    explained = explain(gallery, sql)

    assert explained.indexes == ("images_public_newest",), explained.plan
    assert not explained.findings, explained.plan


def test_a_users_likes_are_read_newest_first_from_their_index(engine, gallery):
    if engine == "mysql":
        pytest.skip("MariaDB sorts liked_by's rows whatever the index: 006 adds none")
    liker = (
        User.select(User)
        .join(UserLike, on=(UserLike.user == User.id))
        .group_by(User.id)
        .order_by(peewee.fn.COUNT(UserLike.image).desc(), User.id)
        .first()
    )
    sql = peewee.query_to_string(Image.liked_by(liker, None).limit(20))

    explained = explain(gallery, sql)

    assert "user_likes_user_newest" in explained.indexes, explained.plan


def test_images_by_tag_read_the_tags_links_from_the_covering_index(engine, gallery):
    only_with_partial_indexes(engine)  # MySQL's 002 index covers already: none is added
    report = explain_builtin(gallery)

    by_tag = next(query for query in report.queries if query.name == "images by tag")
    assert "image_tags_tag_image" in by_tag.indexes, by_tag.plan


def test_down_removes_the_indexes_and_only_them(engine, engine_migrated_db):
    runner = Runner(engine_migrated_db, MIGRATIONS_DIR)
    with_them = all_index_names(engine_migrated_db)

    assert runner.rollback() == [MIGRATION]

    assert indexes_named(engine_migrated_db, EXPECTED[engine]) == {}
    ours = {("images", "images_public_newest")} | {
        (table, name) for name, (table, _) in EXPECTED[engine].items()
    }
    assert all_index_names(engine_migrated_db) == sorted(set(with_them) - ours)


def test_down_then_up_puts_them_back(engine, engine_migrated_db):
    runner = Runner(engine_migrated_db, MIGRATIONS_DIR)

    runner.rollback()
    assert runner.migrate() == [MIGRATION]

    assert sorted(indexes_named(engine_migrated_db, EXPECTED[engine])) == sorted(EXPECTED[engine])
