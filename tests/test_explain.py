"""``db.explain`` on every engine: a populated gallery's typical queries use an index, an
unindexed filter is flagged as a full scan, and nothing but one SELECT is ever run."""

import pytest

from db import maintenance
from db.engines import engine_for, open_database
from db.models import bind_models
from db.populate import GalleryPlan, count_rows, populate
from db.runner import Runner
from tests import servers
from tests.conftest import MIGRATIONS_DIR, one_error_line, run_invoke, sqlite_url

IMAGES = 3_000
BUILTIN = ("recent public images", "images by tag", "an album's images", "a user's likes",
           "trending tags", "image search", "tag autocomplete")  # fmt: skip


@pytest.fixture(scope="module")
def galleries(tmp_path_factory):
    """Populated galleries, one per engine, made the first time a test asks (see gallery_url)."""
    urls = {}
    yield urls
    for engine, url in urls.items():
        if engine != "sqlite":
            servers.drop_database(url)


@pytest.fixture
def gallery_url(engine, galleries, tmp_path_factory):
    """The URL of a migrated gallery of ~3,000 images on the engine, its statistics fresh."""
    if engine not in galleries:
        if engine == "sqlite":
            url = sqlite_url(tmp_path_factory.mktemp("explain") / "gallery.db")
        else:
            url = servers.new_database_url(engine)
        galleries[engine] = url
        database = open_database(url)
        try:
            Runner(database, MIGRATIONS_DIR).migrate()
            bind_models(database)
            populate(database, GalleryPlan.sized(images=IMAGES))
            maintenance.optimize(engine_for(database), database)  # ANALYZE: sizes learnt
        finally:
            database.close()
    return galleries[engine]


def test_builtin_queries_each_use_an_index(gallery_url):
    result = run_invoke("db.explain", "--builtin", url=gallery_url)

    assert result.returncode == 0, (result.stdout, result.stderr)
    for name in BUILTIN:
        assert name in result.stdout
    assert "no index serves" not in result.stdout
    assert "no full scan of a large table" in result.stdout


def test_an_unindexed_filter_is_flagged_as_a_full_scan_of_images(gallery_url):
    sql = "SELECT * FROM images WHERE caption = 'x'"

    result = run_invoke("db.explain", "--sql", sql, url=gallery_url)

    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "full scan of images (" in result.stdout
    assert "no index serves this filter" in result.stdout


def test_an_indexed_filter_is_not_flagged(gallery_url):
    sql = "SELECT * FROM images WHERE uploaded_at > '2025-12-30' ORDER BY uploaded_at"

    result = run_invoke("db.explain", "--sql", sql, url=gallery_url)

    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "full scan" not in result.stdout


def test_a_statement_other_than_select_is_refused_and_nothing_is_deleted(gallery_url):
    result = run_invoke("db.explain", "--sql", "DELETE FROM images", url=gallery_url)

    one_error_line(result, 2, "SELECT", "DELETE")
    database = open_database(gallery_url, create=False)
    try:
        assert count_rows(database, ("images",))["images"] >= IMAGES
    finally:
        database.close()


def test_bad_sql_is_one_line_naming_the_engines_complaint(gallery_url):
    result = run_invoke("db.explain", "--sql", "SELECT * FROM no_such_table", url=gallery_url)

    one_error_line(result, 2, "refused the query", "no_such_table")


def test_neither_sql_nor_builtin_is_invokes_missing_argument_error(gallery_url):
    """Under ``invoke`` the parser's own message and exit 1 (clonegallery-db: exit 2)."""
    result = run_invoke("db.explain", url=gallery_url)

    assert result.returncode == 1
    assert "did not receive required positional arguments: 'sql'" in result.stderr
