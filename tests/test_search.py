"""Full-text search (migration 005, db/search.py) on every engine: what ``Image.search``
finds and in what order, how the triggers keep it current, who sees what, hostile text
read as words, tag autocomplete, and what rolling 005 back leaves.

Each test writes and commits on a database of its own: InnoDB indexes FULLTEXT changes
only when their transaction commits, so a rolled-back fixture would hide them there."""

import datetime

import pytest

from db import maintenance, search
from db.access import acting_as
from db.engines import engine_for
from db.explain import explain_query
from db.models import AIGenerationMeta, Image, ImageTag, Tag, bind_models
from db.runner import Runner
from db.search import words_of
from tests.conftest import MIGRATIONS_DIR
from tests.factories import image_fields, make_image, make_user

# Text that means syntax to one engine's query parser or another's, or to LIKE.
HOSTILE = (
    '"',
    '" OR ""="',
    "NEAR(harbour",
    "harbour*",
    "-harbour",
    "AND OR NOT",
    "harbour & !misty | (x) :*",
    '+harbour -misty <x >y ( ) ~z *w "v" @3',
    "%",
    "_",
    "x'); DROP TABLE images; --",
    "back\\slash",
)


@pytest.fixture
def gallery(engine_migrated_db):
    """Two editors' images on the engine under test: Ada's public harbour and forest, and
    her private lighthouse; Ben's public market."""
    ada, ben = make_user("Ada"), make_user("Ben")
    images = {
        "harbour": make_image(ada, "Misty harbour at dawn", caption="Boats in the fog"),
        "forest": make_image(ada, "Forest path", caption="Moss and ferns by the harbour wall"),
        "secret": make_image(ada, "Lighthouse sketch", privacy="private"),
        "market": make_image(ben, "Night market"),
    }
    return {"ada": ada, "ben": ben, **images}


def found(text, viewer=None):
    """Return the titles ``viewer`` finds for ``text``, in the order given."""
    return [image.title for image in Image.search(text, viewer)]


def tag(image, name):
    """File ``image`` under the tag ``name`` (made if new); return the tag."""
    label, _ = Tag.get_or_create(name=name)
    ImageTag.create(image=image, tag=label)
    return label


def test_the_image_holding_the_word_twice_comes_first(gallery):
    # "harbour" is in one image's title and tag, and in another's caption: the engines
    # score differently (InnoDB ignores a document's length, and breaks a tie newest
    # first), but each ranks the image holding the word twice above the one holding it once.
    tag(gallery["harbour"], "harbour")

    assert found("harbour") == ["Misty harbour at dawn", "Forest path"]


def uploaded_in_turn(uploader, *titles):
    """Create an image per title, a day apart, the last one newest; return them."""
    first = datetime.datetime(2026, 1, 1)
    return [
        make_image(uploader, title, uploaded_at=first + datetime.timedelta(days=day))
        for day, title in enumerate(titles)
    ]


@pytest.fixture
def harbours(engine_migrated_db):
    """Three harbour images, uploaded oldest to newest: the oldest holds the word most."""
    return uploaded_in_turn(
        make_user("Ada"),
        "Harbour harbour harbour",
        "Harbour wall beside the old fish market",
        "Harbour fog over grey water at dawn",
    )


def test_a_few_matches_come_best_first(harbours):
    assert [image.id for image in Image.search("harbour", None)] == [
        harbours[0].id,
        *(image.id for image in reversed(harbours[1:])),  # equal ranks: newest first
    ]


def test_more_matches_than_are_ranked_come_newest_first(harbours, monkeypatch):
    # Ranking reads every match: past search.RANKED of them a search lists them newest
    # first and reads only the page (on SQLite, the most recently indexed first).
    monkeypatch.setattr(search, "RANKED", 2)

    assert [image.id for image in Image.search("harbour", None)] == [
        image.id for image in reversed(harbours)
    ]
    assert [image.id for image in Image.search("harbour", None).limit(1)] == [harbours[-1].id]


def test_a_common_word_narrows_the_matches_of_a_rare_one(harbours, monkeypatch):
    # MariaDB tests a common word on the text of the rare word's matches; the others
    # read both from the index. Every engine finds the same image.
    monkeypatch.setattr(search, "RANKED", 2)

    wall = "Harbour wall beside the old fish market"
    assert found("harbour wall") == [wall]
    assert found("wall harbour") == [wall]
    assert found("fog wall") == []


def test_mariadb_judges_a_word_common_from_the_newest_images(engine, harbours, monkeypatch):
    # InnoDB counts a word's matches only by reading them all, so MariaDB extrapolates:
    # both of the newest two images hold "harbour", which at that rate is every image
    # of its (estimated) three, more than RANKED.
    if engine != "mysql":
        pytest.skip("the other engines count the matches, up to RANKED, on their index")
    monkeypatch.setattr(search.MySQLSearcher, "SAMPLE", 2)
    monkeypatch.setattr(search, "RANKED", 2)
    _bound().execute_sql("ANALYZE TABLE image_search").fetchall()

    assert [image.id for image in Image.search("harbour", None)] == [
        image.id for image in reversed(harbours)
    ]


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("misty", "Misty harbour at dawn"),  # title
        ("fog", "Misty harbour at dawn"),  # caption
        ("MOSS FERNS", "Forest path"),  # caption, any case, every word
        ("mar", "Night market"),  # the start of a word
    ],
)
def test_title_and_caption_words_are_found(gallery, text, title):
    assert found(text) == [title]


def test_a_tag_is_found_and_taking_it_off_forgets_it(gallery):
    label = tag(gallery["market"], "streetfood")
    assert found("streetfood") == ["Night market"]

    ImageTag.delete().where(ImageTag.image == gallery["market"].id).execute()

    assert found("streetfood") == []
    assert Tag.get_by_id(label.id).name == "streetfood"


def test_renaming_a_tag_renames_it_in_every_image(gallery):
    label = tag(gallery["market"], "nightlife")
    tag(gallery["harbour"], "nightlife")

    label.name = "afterdark"
    label.save()

    assert sorted(found("afterdark")) == ["Misty harbour at dawn", "Night market"]
    assert found("nightlife") == []


def test_deleting_a_tag_forgets_it(gallery):
    label = tag(gallery["market"], "lanterns")

    label.delete_instance()

    assert found("lanterns") == []
    assert found("night") == ["Night market"]


def test_an_ai_prompt_is_found_and_follows_its_changes(gallery):
    meta = AIGenerationMeta.create(
        image=gallery["forest"], model="sdxl", prompt="enchanted woodland, volumetric light"
    )
    assert found("volumetric") == ["Forest path"]

    meta.prompt = "ancient oaks"
    meta.save()
    assert (found("volumetric"), found("oaks")) == ([], ["Forest path"])

    meta.delete_instance()
    assert found("oaks") == []


def test_a_new_title_replaces_the_old_one(gallery):
    image = gallery["market"]

    image.title = "Evening bazaar"
    image.save()

    assert found("bazaar") == ["Evening bazaar"]
    assert found("market") == []


def test_a_deleted_image_is_not_found(gallery):
    tag(gallery["market"], "stalls")

    gallery["market"].delete_instance()

    assert found("night") == [] and found("stalls") == []
    assert count_search_rows() == 3


def test_a_private_image_is_found_by_its_owner_only(gallery):
    ada, ben = gallery["ada"], gallery["ben"]

    assert found("lighthouse", ada) == ["Lighthouse sketch"]
    assert found("lighthouse", ben) == []
    assert found("lighthouse") == []


def test_the_acting_user_changes_nothing_of_what_others_find(gallery):
    with acting_as(gallery["ada"]):
        image = make_image(gallery["ada"], "Quiet cove")

    assert found("cove") == ["Quiet cove"]
    assert found("cove", gallery["ben"]) == [image.title]


@pytest.mark.parametrize("text", ["", "   ", "\t\n", "%_*\"()+-<>~@&|!:'"])
def test_text_without_a_word_finds_nothing(gallery, text):
    assert words_of(text) == []
    assert found(text) == []


@pytest.mark.parametrize("text", HOSTILE)
def test_query_syntax_is_read_as_plain_words(gallery, text):
    """The engine never sees the text as syntax: no error, and only the words count."""
    expected = found(" ".join(words_of(text))) if words_of(text) else []

    assert found(text) == expected
    assert Image.select().count() == 4  # nothing dropped


@pytest.mark.parametrize("text", HOSTILE)
def test_a_title_made_of_query_syntax_is_found_by_itself(gallery, text):
    if not words_of(text):
        pytest.skip("no word to find")
    image = make_image(gallery["ben"], f"Title {text} end")

    assert [found.id for found in Image.search(f"Title {text} end", None)] == [image.id]


def test_short_words_and_stopwords_are_found_on_every_engine(gallery):
    """MariaDB would skip them (innodb_ft_min_token_size, stopwords): 005 marks them."""
    make_image(gallery["ben"], "A boat or a raft? The 2 of us")

    assert found("a or the 2 of") == ["A boat or a raft? The 2 of us"]


def test_autocomplete_finds_tags_by_their_start_most_used_first(gallery):
    tag(gallery["market"], "landscape")
    tag(gallery["harbour"], "landscape")
    tag(gallery["forest"], "lanterns")
    tag(gallery["forest"], "portrait")

    assert [label.name for label in Tag.autocomplete("LAN")] == ["landscape", "lanterns"]
    assert [label.name for label in Tag.autocomplete("lan", limit=1)] == ["landscape"]
    assert list(Tag.autocomplete("")) == []


@pytest.mark.parametrize("typed", ["%", "_", "a%", "a_", "\\", "'"])
def test_autocomplete_reads_wildcards_as_plain_characters(gallery, typed):
    tag(gallery["market"], "abc")
    tag(gallery["market"], f"{typed}tag")

    assert [label.name for label in Tag.autocomplete(typed)] == [f"{typed}tag"]


def test_search_and_autocomplete_read_their_index(gallery):
    """Explained among thousands of tags: the planners then prefer the index."""
    Tag.insert_many([{"name": f"tag{n:05d}"} for n in range(3000)]).execute()
    uploader = gallery["ben"]
    Image.insert_many([image_fields(uploader, f"Photo {n}") for n in range(2000)]).execute()
    database = _bound()
    maintenance.optimize(engine_for(database), database)

    searched = explain_query(database, Image.search("harbour", None))
    completed = explain_query(database, Tag.autocomplete("tag0012"))

    assert [index for index in searched.indexes if "image_search" in index], searched.plan
    assert completed.indexes and not completed.full_scans, completed.plan


def test_rolling_005_back_removes_the_search_and_migrating_again_refills_it(engine_db):
    runner = Runner(engine_db, MIGRATIONS_DIR)
    runner.migrate(to="005")
    bind_models(engine_db)
    make_image(make_user("Ada"), "Misty harbour at dawn")

    assert runner.rollback(steps=1) == ["005_full_text_search"]
    assert not {t for t in engine_db.get_tables() if t.startswith("image_search")}
    assert not [t for t in engine_for(engine_db).triggers(engine_db) if "search" in t]
    assert not [i for i in engine_db.get_indexes("tags") if i.name.startswith("tags_name_")]

    runner.migrate(to="005")
    assert found("harbour") == ["Misty harbour at dawn"]  # the rows there, backfilled


def test_005_analyses_a_filled_gallery_before_its_backfill_on_postgresql(engine, engine_db):
    # The backfill's plan needs the gallery's statistics: a bulk load autovacuum has not
    # analysed yet made it read every tag per image. An empty gallery is left unanalysed.
    if engine != "postgres":
        pytest.skip("PostgreSQL's planner only: the others have no statistics to refresh")
    runner = Runner(engine_db, MIGRATIONS_DIR)
    runner.migrate(to="004")
    bind_models(engine_db)
    uploaded_in_turn(make_user("Ada"), "Misty harbour", "Forest path")

    runner.migrate(to="005")

    (images,) = engine_db.execute_sql(
        "SELECT reltuples FROM pg_class WHERE oid = 'images'::regclass"
    ).fetchone()
    assert images == 2
    assert found("harbour") == ["Misty harbour"]


def count_search_rows():
    """Return the rows of the search table: one per image."""
    return _bound().execute_sql("SELECT COUNT(*) FROM image_search").fetchone()[0]


def _bound():
    database = Image._meta.database
    return getattr(database, "obj", database)
