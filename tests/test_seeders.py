"""Seeders: the project's sample data, and the engine that runs seeder files once each.

The first half describes what ``seeders/`` puts in a migrated database and proves it
idempotent; the second half drives the engine with small seeders written per test.
Every test runs on each engine (SQLite, PostgreSQL, MySQL) through ``engine_migrated_db``.
"""

import shutil
from collections import Counter

import pytest

from db.engines import open_database
from db.errors import SeedFailed, SourceFileError
from db.models import (
    AIGenerationMeta,
    Album,
    AlbumImage,
    Analytics,
    Image,
    ImageTag,
    Tag,
    User,
)
from db.runner import Runner
from db.seeders import APPLIED, CHANGED, MISSING, PENDING, Seeder, SeederStatus, SeedResult
from tests.conftest import MIGRATIONS_DIR, PROJECT_ROOT, file_writer, sqlite_url
from tests.snapshots import content, orphans

SEEDERS_DIR = PROJECT_ROOT / "seeders"
SEEDER_NAMES = [
    "001_users",
    "002_tags",
    "003_images",
    "004_image_tags",
    "005_albums",
    "006_analytics",
]


def row_counts():
    return {
        "users": User.select().count(),
        "tags": Tag.select().count(),
        "images": Image.select().count(),
        "albums": Album.select().count(),
        "analytics": Analytics.select().count(),
    }


def states(seeder):
    return {status.name: status.state for status in seeder.status()}


def tag_names():
    return sorted(tag.name for tag in Tag.select())


@pytest.fixture
def seeded_db(engine_migrated_db):
    """The migrated database with the project's seeders run once."""
    Seeder(engine_migrated_db, SEEDERS_DIR).seed()
    return engine_migrated_db


@pytest.fixture
def other_migrated_db(other_engine_url):
    """A second migrated database of the engine under test; the models stay bound elsewhere."""
    database = open_database(other_engine_url)
    Runner(database, MIGRATIONS_DIR).migrate()
    yield database
    database.close()


@pytest.fixture
def copied_seeders(tmp_path):
    """A copy of the project's seeders, free to edit or delete."""
    return shutil.copytree(SEEDERS_DIR, tmp_path / "seeders")


@pytest.fixture
def seeders_dir(tmp_path):
    """An empty seeders folder for tests that write their own seeders."""
    folder = tmp_path / "own_seeders"
    folder.mkdir()
    return folder


@pytest.fixture
def write_seeder(seeders_dir):
    """Write a seeder file into ``seeders_dir``: ``write_seeder(name, text)``."""
    return file_writer(seeders_dir)


# --- The sample data ----------------------------------------------------------------------


def test_seeding_runs_every_project_seeder_in_order(engine_migrated_db):
    result = Seeder(engine_migrated_db, SEEDERS_DIR).seed()

    assert result.applied == SEEDER_NAMES
    assert result.skipped_changed == []


def test_seeding_gives_the_sample_data_of_the_product_doc(seeded_db):
    assert row_counts() == {"users": 5, "tags": 20, "images": 8, "albums": 6, "analytics": 15}


def test_the_users_include_every_role_and_only_admins_and_editors_upload(seeded_db):
    assert Counter(user.role for user in User.select()) == {"admin": 1, "editor": 2, "visitor": 2}
    assert {image.uploader.role for image in Image.select()} <= {"admin", "editor"}


def test_some_tags_are_trending(seeded_db):
    assert 0 < Tag.select().where(Tag.trending).count() < 20


def test_the_images_mix_formats_and_privacy(seeded_db):
    assert len({image.format for image in Image.select()}) >= 4
    assert Counter(image.privacy for image in Image.select()) == {"public": 6, "private": 2}
    assert all(image.alt_text and image.url.startswith("https://") for image in Image.select())


def test_exactly_the_ai_generated_images_have_generation_meta(seeded_db):
    ai_images = {image.id for image in Image.select().where(Image.is_ai_generated)}
    with_meta = {meta.image_id for meta in AIGenerationMeta.select()}

    assert len(ai_images) == 3
    assert with_meta == ai_images


def test_every_image_is_filed_under_tags(seeded_db):
    tags_per_image = Counter(link.image_id for link in ImageTag.select())

    assert set(tags_per_image) == {image.id for image in Image.select()}
    assert all(2 <= count <= 4 for count in tags_per_image.values())


def test_every_album_has_one_of_its_own_images_as_cover(seeded_db):
    for album in Album.select():
        own_images = {link.image_id for link in album.image_links}
        assert album.cover_image_id in own_images, album.title


def test_album_positions_run_from_zero_without_gaps(seeded_db):
    for album in Album.select():
        positions = sorted(link.position for link in album.image_links)
        assert positions == list(range(len(positions))), album.title


def test_the_trigger_kept_counters_match_the_rows_they_count(seeded_db):
    links_per_tag = Counter(link.tag_id for link in ImageTag.select())
    images_per_album = Counter(link.album_id for link in AlbumImage.select())
    uploads_per_user = Counter(image.uploader_id for image in Image.select())

    assert {tag.id: tag.count for tag in Tag.select()} == {
        tag.id: links_per_tag[tag.id] for tag in Tag.select()
    }
    assert {album.id: album.image_count for album in Album.select()} == {
        album.id: images_per_album[album.id] for album in Album.select()
    }
    assert {user.id: user.uploads for user in User.select()} == {
        user.id: uploads_per_user[user.id] for user in User.select()
    }


def test_seeded_rows_break_no_foreign_key(seeded_db, engine):
    assert orphans(seeded_db) == []
    if engine == "sqlite":
        assert seeded_db.execute_sql("PRAGMA foreign_key_check").fetchall() == []


# --- Idempotence --------------------------------------------------------------------------


def test_a_second_seed_runs_nothing(seeded_db):
    result = Seeder(seeded_db, SEEDERS_DIR).seed()

    assert result.applied == []
    assert row_counts() == {"users": 5, "tags": 20, "images": 8, "albums": 6, "analytics": 15}


def test_forcing_twice_leaves_every_table_exactly_as_seeded(seeded_db):
    seeder = Seeder(seeded_db, SEEDERS_DIR)
    seeded = content(seeded_db)

    assert seeder.seed(force=True).applied == SEEDER_NAMES
    assert content(seeded_db) == seeded
    assert seeder.seed(force=True).applied == SEEDER_NAMES
    assert content(seeded_db) == seeded


def test_two_databases_seeded_apart_hold_the_same_rows(seeded_db, other_migrated_db):
    # Fixed values only: a now() anywhere in a seeder would make the two differ.
    Seeder(other_migrated_db, SEEDERS_DIR).seed()

    assert content(other_migrated_db) == content(seeded_db)


# --- Status: pending, applied, changed, missing -------------------------------------------


def test_status_shows_every_seeder_pending_before_and_applied_after_seeding(engine_migrated_db):
    seeder = Seeder(engine_migrated_db, SEEDERS_DIR)

    assert seeder.status() == [SeederStatus(name, PENDING) for name in SEEDER_NAMES]
    seeder.seed()
    statuses = seeder.status()
    assert [(s.name, s.state) for s in statuses] == [(name, APPLIED) for name in SEEDER_NAMES]
    assert all(status.applied_at is not None for status in statuses)


def test_an_edited_seeder_is_changed_skipped_by_seed_and_rerun_by_force(
    engine_migrated_db, copied_seeders
):
    seeder = Seeder(engine_migrated_db, copied_seeders)
    seeder.seed()
    with (copied_seeders / "002_tags.py").open("a", encoding="utf-8") as tags_seeder:
        tags_seeder.write("\n# reviewed by the photo desk\n")

    assert states(seeder)["002_tags"] == CHANGED
    assert seeder.seed() == SeedResult(applied=[], skipped_changed=["002_tags"])
    assert seeder.seed(force=True).applied == SEEDER_NAMES
    assert set(states(seeder).values()) == {APPLIED}
    assert row_counts()["tags"] == 20


def test_a_deleted_seeder_is_missing_and_keeps_its_history(engine_migrated_db, copied_seeders):
    seeder = Seeder(engine_migrated_db, copied_seeders)
    seeder.seed()
    (copied_seeders / "006_analytics.py").unlink()

    last = seeder.status()[-1]
    assert (last.name, last.state) == ("006_analytics", MISSING)
    assert last.applied_at is not None
    assert seeder.seed().applied == []


# --- The engine, with small seeders of the test's own ---------------------------------------


def test_an_sql_error_names_file_and_line_and_rolls_back_only_that_seeder(
    engine_migrated_db, seeders_dir, write_seeder
):
    write_seeder("001_sunrise.sql", "INSERT INTO tags (name) VALUES ('sunrise');\n")
    write_seeder(
        "002_broken.sql",
        "INSERT INTO tags (name) VALUES ('dusk');\n"
        "INSERT INTO tags (name) VALUES ('dawn');\n"
        "INSERT INTO no_such_table (name) VALUES ('nowhere');\n",
    )
    write_seeder("003_later.sql", "INSERT INTO tags (name) VALUES ('never');\n")
    seeder = Seeder(engine_migrated_db, seeders_dir)

    # Each engine words it its own way, but every one names the table.
    with pytest.raises(SeedFailed, match=r"002_broken\.sql failed: line 3: .*no_such_table"):
        seeder.seed()

    assert tag_names() == ["sunrise"]
    assert states(seeder) == {
        "001_sunrise": APPLIED,
        "002_broken": PENDING,
        "003_later": PENDING,
    }


def test_a_python_seeder_that_raises_names_file_and_line_and_leaves_nothing(
    engine_migrated_db, seeders_dir, write_seeder
):
    write_seeder(
        "001_flaky.py",
        "from db.models import Tag\n"
        "\n"
        "def run(db):\n"
        "    Tag.create(name='half-done')\n"
        "    raise RuntimeError('the CDN is unreachable')\n",
    )
    seeder = Seeder(engine_migrated_db, seeders_dir)

    with pytest.raises(
        SeedFailed, match=r"001_flaky\.py failed: line 5: RuntimeError: the CDN is unreachable"
    ):
        seeder.seed()

    assert tag_names() == []
    assert states(seeder) == {"001_flaky": PENDING}


def test_a_python_seeder_without_run_is_refused_before_any_seeder_runs(
    engine_migrated_db, seeders_dir, write_seeder
):
    write_seeder("001_fine.sql", "INSERT INTO tags (name) VALUES ('fine');\n")
    write_seeder("002_no_run.py", "TAGS = ('forgotten',)\n")

    with pytest.raises(SourceFileError, match=r"002_no_run\.py: defines no run\(db\)"):
        Seeder(engine_migrated_db, seeders_dir).seed()

    assert tag_names() == []


def test_an_sql_seeder_is_split_into_statements_around_comments_and_quoted_semicolons(
    engine_migrated_db, seeders_dir, write_seeder
):
    write_seeder(
        "001_mixed.sql",
        "-- Seeder: tags and metrics written by hand\n"
        "INSERT INTO tags (name, trending)\n"
        "VALUES ('semi;colon', TRUE);\n"
        "\n"
        "INSERT INTO tags (name) VALUES ('double--dash');  -- not a comment inside quotes\n"
        "INSERT INTO analytics (metric, value, unit) VALUES\n"
        "    ('page_views', 10, 'views'),\n"
        "    ('avg_load_time', 812.5, 'ms');\n",
    )

    assert Seeder(engine_migrated_db, seeders_dir).seed().applied == ["001_mixed"]
    assert tag_names() == ["double--dash", "semi;colon"]
    assert Tag.get(Tag.name == "semi;colon").trending
    assert Analytics.select().count() == 2


def test_a_python_seeder_writes_to_the_database_it_is_run_on(
    engine_migrated_db, other_migrated_db, seeders_dir, write_seeder
):
    # The models are bound to engine_migrated_db; while seeding the other they must point there.
    write_seeder(
        "001_elsewhere.py",
        "from db.models import Tag\n\ndef run(db):\n    Tag.create(name='elsewhere')\n",
    )

    Seeder(other_migrated_db, seeders_dir).seed()

    assert [name for (name,) in other_migrated_db.execute_sql("SELECT name FROM tags")] == [
        "elsewhere"
    ]
    assert tag_names() == []


def test_a_python_seeder_breaking_a_constraint_names_its_line(
    engine_migrated_db, seeders_dir, write_seeder
):
    write_seeder(
        "001_twice.py",
        "from db.models import Tag\n"
        "\n"
        "def run(db):\n"
        "    Tag.create(name='night')\n"
        "    Tag.create(name='night')\n",
    )

    # SQLite says "UNIQUE constraint failed", PostgreSQL "duplicate key", MySQL "Duplicate entry".
    with pytest.raises(SeedFailed, match=r"(?i)001_twice\.py failed: line 5: .*(unique|duplicate)"):
        Seeder(engine_migrated_db, seeders_dir).seed()

    assert tag_names() == []


def test_the_sample_data_is_the_same_on_every_engine(seeded_db, tmp_path):
    reference = sqlite_url(tmp_path / "reference.db")
    database = open_database(reference)
    Runner(database, MIGRATIONS_DIR).migrate()
    Seeder(database, SEEDERS_DIR).seed()
    database.close()

    assert content(seeded_db) == content(reference)
