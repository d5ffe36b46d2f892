"""db.populate: a realistic gallery at scale, the same for the same seed, always consistent.

Every test runs on each engine: PostgreSQL loads the rows with COPY, MySQL and SQLite
with executemany (``Engine.bulk_insert``).
"""

import statistics

import pytest

import db.populate
from db.engines import open_database
from db.errors import ConfigError
from db.models import (
    AIGenerationMeta,
    Album,
    AlbumImage,
    Image,
    ImageTag,
    Tag,
    User,
    UserLike,
)
from db.populate import ALBUM_SIZES, GalleryPlan, populate
from db.runner import Runner
from db.seeders import Seeder
from tests.conftest import MIGRATIONS_DIR, PROJECT_ROOT
from tests.snapshots import checksum, orphans

PLAN = GalleryPlan(users=200, images=3_000, seed=11)


def build(url, plan=PLAN, seeded=False):
    """Migrate a fresh database at ``url`` (seed it if asked), populate it, close it."""
    database = open_database(url)
    Runner(database, MIGRATIONS_DIR).migrate()
    if seeded:
        Seeder(database, PROJECT_ROOT / "seeders").seed()
    result = populate(database, plan)
    database.close()
    return result


@pytest.fixture
def populated(engine_migrated_db):
    """The project's migrated database with PLAN populated into it."""
    populate(engine_migrated_db, PLAN)
    return engine_migrated_db


def scalar(database, sql):
    return database.execute_sql(sql).fetchone()[0]


def test_the_same_seed_gives_the_same_database(engine_url, other_engine_url):
    build(engine_url)
    build(other_engine_url)

    assert checksum(engine_url) == checksum(other_engine_url)


def test_another_seed_gives_another_gallery(engine_url, other_engine_url):
    build(engine_url)
    build(other_engine_url, GalleryPlan(users=200, images=3_000, seed=12))

    assert checksum(engine_url) != checksum(other_engine_url)


def test_it_makes_the_planned_users_and_images(populated):
    assert User.select().count() == PLAN.users
    assert Image.select().count() == PLAN.images


def test_every_image_gets_its_search_row_and_a_search_finds_it_by_its_title_and_tag(populated):
    image = Image.select().where(Image.privacy == "public").order_by(Image.id).first()
    tag = Tag.select().join(ImageTag).where(ImageTag.image == image.id).first()

    found = [found.id for found in Image.search(f"{image.title} {tag.name}", None)]

    assert scalar(populated, "SELECT COUNT(*) FROM image_search") == PLAN.images
    assert image.id in found


def test_every_foreign_key_holds(populated, engine):
    assert orphans(populated) == []
    if engine == "sqlite":
        assert populated.execute_sql("PRAGMA foreign_key_check").fetchall() == []


@pytest.mark.parametrize(
    ("counter", "truth"),
    [
        ("SELECT id, count FROM tags", "SELECT tag_id, COUNT(*) FROM image_tags GROUP BY 1"),
        (
            "SELECT id, image_count FROM albums",
            "SELECT album_id, COUNT(*) FROM album_images GROUP BY 1",
        ),
        ("SELECT id, uploads FROM users", "SELECT uploader_id, COUNT(*) FROM images GROUP BY 1"),
    ],
    ids=["tags.count", "albums.image_count", "users.uploads"],
)
def test_the_trigger_kept_counters_equal_the_real_counts(populated, counter, truth):
    counted = {key: value for key, value in populated.execute_sql(counter) if value}
    assert counted == dict(populated.execute_sql(truth).fetchall())


def test_images_have_about_three_tags_with_a_long_tail_of_popularity(populated):
    per_image = [n for (n,) in populated.execute_sql(
        "SELECT COUNT(*) FROM image_tags GROUP BY image_id")]  # fmt: skip
    per_tag = sorted((t.count for t in Tag.select()), reverse=True)

    assert len(per_image) == PLAN.images
    assert 2.5 <= statistics.mean(per_image) <= 3.5
    assert max(per_image) <= 6
    # Long tail: the most popular tag is used far more often than the median one.
    assert per_tag[0] >= 10 * max(1, statistics.median(per_tag))


def test_about_a_fifth_of_the_images_are_ai_generated_with_their_metadata(populated):
    ai_images = Image.select().where(Image.is_ai_generated).count()

    assert 0.15 * PLAN.images <= ai_images <= 0.25 * PLAN.images
    assert AIGenerationMeta.select().count() == ai_images
    assert AIGenerationMeta.select().join(Image).where(~Image.is_ai_generated).count() == 0


def test_likes_follow_a_power_law(populated):
    per_image = sorted(
        (n for (n,) in populated.execute_sql("SELECT COUNT(*) FROM user_likes GROUP BY image_id")),
        reverse=True,
    )

    assert UserLike.select().count() > 0
    assert per_image[0] >= 10 * statistics.median(per_image)


def test_albums_hold_10_to_200_images_in_order_with_one_of_them_as_cover(populated):
    albums = list(Album.select())

    assert len(albums) == PLAN.images // 100
    for album in albums:
        positions = [
            link.position for link in AlbumImage.select().where(AlbumImage.album == album.id)
        ]
        assert ALBUM_SIZES[0] <= len(positions) <= ALBUM_SIZES[1]
        assert sorted(positions) == list(range(len(positions)))
        cover_link = AlbumImage.get_or_none(
            (AlbumImage.album == album.id) & (AlbumImage.image == album.cover_image_id)
        )
        assert cover_link is not None


def test_upload_times_spread_over_years(populated):
    years = {image.uploaded_at.year for image in Image.select(Image.uploaded_at)}

    assert len(years) >= 5


def test_it_works_on_top_of_the_sample_seed_and_reuses_its_tags(engine_url):
    build(engine_url, seeded=True)
    database = open_database(engine_url)
    try:
        names = [name for (name,) in database.execute_sql("SELECT name FROM tags")]
        assert len(names) == len(set(names))
        assert scalar(database, "SELECT COUNT(*) FROM images") == PLAN.images + 8
        assert orphans(database) == []
    finally:
        database.close()


def test_a_second_run_with_the_same_seed_is_refused_and_changes_nothing(engine_url):
    build(engine_url)
    before = checksum(engine_url)
    database = open_database(engine_url)
    try:
        with pytest.raises(ConfigError, match="already populated with --seed 11"):
            populate(database, PLAN)
    finally:
        database.close()

    assert checksum(engine_url) == before


def test_an_empty_gallery_of_users_only_is_fine(engine_migrated_db):
    result = populate(engine_migrated_db, GalleryPlan(users=3, images=0, seed=1))

    assert result.rows["users"] == 3
    assert result.rows["images"] == 0


@pytest.mark.parametrize(
    ("plan", "option"),
    [
        (GalleryPlan(users=10, images=-5), "--images"),
        (GalleryPlan(users=0, images=10), "--users"),
        (GalleryPlan(users=10, images="abc"), "--images"),
        (GalleryPlan(users=10, images=10, seed="x"), "--seed"),
    ],
)
def test_impossible_plans_are_refused_naming_the_option(engine_migrated_db, plan, option):
    with pytest.raises(ConfigError, match=option):
        populate(engine_migrated_db, plan)

    assert Image.select().count() == 0


def test_progress_is_reported_per_chunk_up_to_the_total(engine_migrated_db, monkeypatch):
    # Small chunks: three of them without a gallery of 25,000 images.
    monkeypatch.setattr(db.populate, "CHUNK_IMAGES", 100)
    seen = []

    populate(
        engine_migrated_db,
        GalleryPlan(users=50, images=250, seed=3),
        on_progress=lambda done, total: seen.append((done, total)),
    )

    assert seen == [(100, 250), (200, 250), (250, 250)]
