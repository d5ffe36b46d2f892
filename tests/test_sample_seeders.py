"""Essential and sample seeders: no sample data in a production database by accident.

A seeder is essential (every environment needs its rows) or sample (the demo gallery);
one that says neither is sample. ``--no-sample`` runs only the essential ones; with
``db.environment: production`` a run that would seed a sample seeder is refused before
anything runs, unless ``--force``. The library is driven directly where the result is
data, the real ``invoke`` where it is an exit code or a line; every test that touches a
database runs on each engine (SQLite, PostgreSQL, MySQL).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import closing

import pytest

from db.engines import open_database
from db.errors import SampleRefused, SourceFileError
from db.history import SeederHistory
from db.models import Image, Tag, User
from db.seeders import ESSENTIAL, MISSING, SAMPLE, Seeder, SeedResult
from db.target import Target
from tests.conftest import PROJECT_ROOT, file_writer, ok, one_error_line, run_invoke

SEEDERS_DIR = PROJECT_ROOT / "seeders"
SAMPLE_SEEDERS = [
    "001_users",
    "002_tags",
    "003_images",
    "004_image_tags",
    "005_albums",
    "006_analytics",
]
ESSENTIAL_SEEDERS = ["007_site_tags", "008_editors_pick"]
ESSENTIAL_TAGS = ["editors-pick", "featured", "staff-pick"]
PRODUCTION = {"INVOKE_DB_ENVIRONMENT": "production"}

SITE_TAGS = '''"""The tags every gallery starts with, production included."""

from db.models import Tag

kind = "essential"


def run(db):
    rows = [{"name": "featured", "trending": False}, {"name": "staff-pick", "trending": False}]
    Tag.insert_many(rows).on_conflict_ignore().execute()
'''
EDITORS_PICK = """-- The editors' own tag, once (portable SQL: --force re-runs it).

-- seeder: essential
INSERT INTO tags (name, count, trending)
SELECT 'editors-pick', 0, FALSE FROM (SELECT 1 AS one) AS single_row
WHERE NOT EXISTS (SELECT 1 FROM tags WHERE name = 'editors-pick');
"""
UNMARKED_PY = '''"""A demo tag, with nothing said about its kind."""

from db.models import Tag


def run(db):
    Tag.insert(name="unmarked", trending=False).on_conflict_ignore().execute()
'''
UNMARKED_SQL = """-- A demo tag.
INSERT INTO tags (name, count, trending) VALUES ('unmarked', 0, FALSE);
"""


def sample_rows(url):
    """Return {table: rows} of the tables the sample seeders fill and essential ones do not."""
    with closing(open_database(url)) as database:
        return {
            table: database.execute_sql(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("users", "images", "albums", "analytics")
        }


def tag_names(url):
    with closing(open_database(url)) as database:
        return sorted(row[0] for row in database.execute_sql("SELECT name FROM tags"))


def seeded_names(url):
    """Return the names in the database's seeders table (none when it has no such table)."""
    with closing(open_database(url)) as database:
        return sorted(SeederHistory(database).applied())


NO_SAMPLE_ROWS = {"users": 0, "images": 0, "albums": 0, "analytics": 0}
SAMPLE_GALLERY = {"users": 5, "images": 8, "albums": 6, "analytics": 15}


@pytest.fixture
def mixed_seeders(tmp_path):
    """The project's six sample seeders and two essential ones (Python and SQL)."""
    folder = shutil.copytree(SEEDERS_DIR, tmp_path / "mixed_seeders")
    write = file_writer(folder)
    write("007_site_tags.py", SITE_TAGS)
    write("008_editors_pick.sql", EDITORS_PICK)
    return folder


@pytest.fixture
def essential_only(tmp_path):
    """A seeders folder with the two essential seeders and nothing else."""
    folder = tmp_path / "essential_seeders"
    folder.mkdir()
    write = file_writer(folder)
    write("007_site_tags.py", SITE_TAGS)
    write("008_editors_pick.sql", EDITORS_PICK)
    return folder


@pytest.fixture
def own_seeders(tmp_path):
    """An empty seeders folder and ``write(name, text)`` into it."""
    folder = tmp_path / "own_seeders"
    folder.mkdir()
    return folder, file_writer(folder)


def kinds(seeder):
    return {status.name: status.kind for status in seeder.status()}


# --- Which seeders are which ----------------------------------------------------------------


def test_every_project_seeder_says_explicitly_that_it_is_sample_data(engine_migrated_db):
    for path in sorted(SEEDERS_DIR.glob("[0-9]*.py")):
        assert re.search(r'^kind = "sample"', path.read_text(encoding="utf-8"), re.M), path.name

    assert kinds(Seeder(engine_migrated_db, SEEDERS_DIR)) == dict.fromkeys(SAMPLE_SEEDERS, SAMPLE)


def test_python_and_sql_seeders_are_essential_when_they_say_so(engine_migrated_db, mixed_seeders):
    assert kinds(Seeder(engine_migrated_db, mixed_seeders)) == {
        **dict.fromkeys(SAMPLE_SEEDERS, SAMPLE),
        **dict.fromkeys(ESSENTIAL_SEEDERS, ESSENTIAL),
    }


@pytest.mark.parametrize(
    ("name", "text"),
    [("001_unmarked.py", UNMARKED_PY), ("001_unmarked.sql", UNMARKED_SQL)],
    ids=["python", "sql"],
)
def test_a_seeder_that_says_neither_is_sample_and_left_out_by_no_sample(
    engine_migrated_db, own_seeders, name, text
):
    folder, write = own_seeders
    write(name, text)
    seeder = Seeder(engine_migrated_db, folder)

    assert kinds(seeder) == {"001_unmarked": SAMPLE}
    assert seeder.seed(sample=False) == SeedResult([], [], ["001_unmarked"])
    assert Tag.select().count() == 0
    with pytest.raises(SampleRefused, match="001_unmarked is a sample seeder"):
        seeder.seed(refuse_sample=True)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("001_x.py", 'kind: str = "essential"\n\n\ndef run(db):\n    pass\n'),
        ("001_x.sql", "\n-- Site settings.\n--seeder:essential\n\nSELECT 1;\n"),
        ("001_x.sql", "-- seeder: essential\r\nSELECT 1;\r\n"),
    ],
    ids=["annotated-python", "sql-after-comments-without-blanks", "sql-crlf"],
)
def test_the_kind_may_be_annotated_spaced_or_in_a_crlf_file(migrated_db, own_seeders, name, text):
    folder, write = own_seeders
    write(name, text)

    assert kinds(Seeder(migrated_db, folder)) == {"001_x": ESSENTIAL}


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("001_x.py", 'kind = "Essential"\n\n\ndef run(db):\n    pass\n', "line 1: kind is"),
        ("001_x.py", 'ESSENTIAL = "essential"\nkind = ESSENTIAL\n', "line 2: kind is the string"),
        ("001_x.py", "kind = 1\n", "line 1: kind is the string"),
        ("001_x.py", "kind = 'sample'\ndef run(db:\n", "line 2"),
        ("001_x.sql", "-- seeder: demo\nSELECT 1;\n", "line 1: seeder: is essential or sample"),
        ("001_x.sql", "-- seeder:\nSELECT 1;\n", "line 1: seeder: is essential or sample"),
        ("001_x.sql", "SELECT 1;\n-- seeder: essential\n", "line 2: a seeder has one"),
        ("001_x.sql", "-- seeder: sample\n-- seeder: essential\nSELECT 1;\n", "line 2"),
    ],
    ids=[
        "python-capitalised",
        "python-not-a-literal",
        "python-not-a-string",
        "python-syntax-error",
        "sql-unknown-kind",
        "sql-empty-kind",
        "sql-after-the-first-statement",
        "sql-said-twice",
    ],
)
def test_a_bad_kind_is_refused_naming_the_file_and_line_before_anything_runs(
    migrated_db, own_seeders, name, text, said
):
    folder, write = own_seeders
    write("000_site_tags.py", SITE_TAGS)
    write(name, text)
    seeder = Seeder(migrated_db, folder)

    with pytest.raises(SourceFileError, match=re.escape(f"{folder / name}, {said}")):
        seeder.seed()
    with pytest.raises(SourceFileError, match=re.escape(name)):
        seeder.status()
    assert Tag.select().count() == 0  # the good seeder before it did not run


def test_a_bad_kind_is_one_error_line_and_exit_2_from_invoke(db_url, own_seeders):
    folder, write = own_seeders
    write("001_settings.sql", "-- seeder: essentials\nSELECT 1;\n")

    result = run_invoke("db.status", url=db_url, env={"INVOKE_DB_SEEDERS": str(folder)})

    one_error_line(result, 2, "001_settings.sql", "line 1", "'essentials'")


# --- The library: --no-sample and the refusal --------------------------------------------------


def test_seeding_without_sample_runs_only_the_essential_seeders(engine_migrated_db, mixed_seeders):
    seeder = Seeder(engine_migrated_db, mixed_seeders)

    result = seeder.seed(sample=False)

    assert result == SeedResult(ESSENTIAL_SEEDERS, [], SAMPLE_SEEDERS)
    assert (User.select().count(), Image.select().count()) == (0, 0)
    assert sorted(tag.name for tag in Tag.select()) == ESSENTIAL_TAGS
    assert sorted(SeederHistory(engine_migrated_db).applied()) == ESSENTIAL_SEEDERS
    # The sample seeders stay pending: a later run with them seeds them.
    assert seeder.seed().applied == SAMPLE_SEEDERS
    assert User.select().count() == 5


def test_forcing_without_sample_reruns_the_essential_seeders_only(
    engine_migrated_db, mixed_seeders
):
    seeder = Seeder(engine_migrated_db, mixed_seeders)
    seeder.seed(sample=False)

    result = seeder.seed(force=True, sample=False)

    assert result == SeedResult(ESSENTIAL_SEEDERS, [], SAMPLE_SEEDERS)
    assert User.select().count() == 0
    assert Tag.select().count() == len(ESSENTIAL_TAGS)


def test_refusing_sample_stops_before_any_seeder_runs(engine_migrated_db, mixed_seeders):
    seeder = Seeder(engine_migrated_db, mixed_seeders)

    with pytest.raises(SampleRefused) as refused:
        seeder.seed(refuse_sample=True)

    message = str(refused.value)
    assert all(name in message for name in [*SAMPLE_SEEDERS, "--no-sample", "--force"])
    assert not any(name in message for name in ESSENTIAL_SEEDERS)
    assert refused.value.exit_code == 2
    assert Tag.select().count() == 0  # not even the essential seeders ran
    assert SeederHistory(engine_migrated_db).applied() == {}


def test_refusing_sample_lets_a_run_through_once_no_sample_seeder_is_due(
    engine_migrated_db, mixed_seeders
):
    """Only a run that would seed a sample seeder is refused: a gallery seeded before it
    became production still takes its new essential seeders."""
    (mixed_seeders / "007_site_tags.py").rename(mixed_seeders / "_later.py")
    seeder = Seeder(engine_migrated_db, mixed_seeders)
    seeder.seed(sample=True)
    (mixed_seeders / "_later.py").rename(mixed_seeders / "007_site_tags.py")

    assert seeder.seed(refuse_sample=True).applied == ["007_site_tags"]
    assert "featured" in {tag.name for tag in Tag.select()}


def test_status_marks_each_seeder_essential_or_sample_and_a_deleted_one_unknown(
    engine_migrated_db, mixed_seeders
):
    seeder = Seeder(engine_migrated_db, mixed_seeders)
    seeder.seed()
    (mixed_seeders / "008_editors_pick.sql").unlink()

    statuses = {status.name: status for status in seeder.status()}

    assert statuses["007_site_tags"].kind == ESSENTIAL
    assert statuses["001_users"].kind == SAMPLE
    assert (statuses["008_editors_pick"].state, statuses["008_editors_pick"].kind) == (
        MISSING,
        None,
    )


# --- invoke: db.environment, --no-sample, --force -------------------------------------------


def test_setup_in_production_is_refused_before_the_database_is_created(engine_url):
    result = run_invoke("db.setup", url=engine_url, env=PRODUCTION)

    one_error_line(result, 2, "production", *SAMPLE_SEEDERS, "--no-sample", "--force")
    assert result.stdout == ""  # not one migration ran
    assert not Target(engine_url).exists


def test_setup_in_production_is_refused_on_a_migrated_database_too_and_seeds_nothing(
    engine_url,
):
    ok(run_invoke("db.migrate", url=engine_url))

    result = run_invoke("db.setup", url=engine_url, env=PRODUCTION)

    one_error_line(result, 2, *SAMPLE_SEEDERS, "--no-sample", "--force")
    assert sample_rows(engine_url) == NO_SAMPLE_ROWS
    assert tag_names(engine_url) == []
    assert seeded_names(engine_url) == []


def test_a_production_setup_with_no_sample_has_no_sample_rows_and_the_essential_seeders(
    engine_url, mixed_seeders
):
    seeders = {"INVOKE_DB_SEEDERS": str(mixed_seeders)}

    result = ok(run_invoke("db.setup", "--no-sample", url=engine_url, env=PRODUCTION | seeders))

    assert sample_rows(engine_url) == NO_SAMPLE_ROWS
    assert tag_names(engine_url) == ESSENTIAL_TAGS
    assert seeded_names(engine_url) == ESSENTIAL_SEEDERS
    assert "ran 2 seeder(s)" in result.stdout
    assert f"skipped 6 sample seeder(s) (--no-sample): {', '.join(SAMPLE_SEEDERS)}" in (
        result.stdout
    )
    # Up to date for a deploy gate: pending sample seeders do not count.
    ok(run_invoke("db.status", "--check", url=engine_url, env=PRODUCTION | seeders))


def test_an_essential_seeder_runs_in_production_without_any_flag(engine_url, essential_only):
    seeders = {"INVOKE_DB_SEEDERS": str(essential_only)}

    ok(run_invoke("db.setup", url=engine_url, env=PRODUCTION | seeders))

    assert tag_names(engine_url) == ESSENTIAL_TAGS
    assert seeded_names(engine_url) == ESSENTIAL_SEEDERS


def test_setup_force_in_production_seeds_the_sample_gallery(engine_url):
    ok(run_invoke("db.setup", "--force", url=engine_url, env=PRODUCTION))

    assert sample_rows(engine_url) == SAMPLE_GALLERY
    assert seeded_names(engine_url) == SAMPLE_SEEDERS


def test_seed_in_production_refuses_sample_data_until_no_sample_or_force(engine_url, mixed_seeders):
    env = PRODUCTION | {"INVOKE_DB_SEEDERS": str(mixed_seeders)}
    ok(run_invoke("db.migrate", url=engine_url))

    refused = run_invoke("db.seed", url=engine_url, env=env)
    one_error_line(refused, 2, *SAMPLE_SEEDERS, "--no-sample", "--force")
    assert tag_names(engine_url) == []

    skipped = ok(run_invoke("db.seed", "--no-sample", url=engine_url, env=env))
    assert "seeded 2 seeder(s)" in skipped.stdout
    assert "skipped 6 sample seeder(s) (--no-sample)" in skipped.stdout
    assert sample_rows(engine_url) == NO_SAMPLE_ROWS

    # --force re-runs every seeder, and in production that includes the sample ones.
    ok(run_invoke("db.seed", "--force", url=engine_url, env=env))
    assert sample_rows(engine_url) == SAMPLE_GALLERY
    assert seeded_names(engine_url) == sorted(SAMPLE_SEEDERS + ESSENTIAL_SEEDERS)


def test_outside_production_setup_seeds_the_sample_gallery_unless_no_sample(
    engine_url, other_engine_url
):
    ok(run_invoke("db.setup", url=engine_url))  # db.environment defaults to development
    ok(
        run_invoke(
            "db.setup",
            "--no-sample",
            url=other_engine_url,
            env={"INVOKE_DB_ENVIRONMENT": "staging"},
        )
    )

    assert sample_rows(engine_url) == SAMPLE_GALLERY
    assert sample_rows(other_engine_url) == NO_SAMPLE_ROWS


def test_db_environment_production_in_invoke_yaml_refuses_like_the_variable(
    engine_url, tmp_path, project_migrations
):
    shutil.copytree(SEEDERS_DIR, tmp_path / "seeders")
    (tmp_path / "invoke.yaml").write_text(f"db:\n  url: {engine_url}\n  environment: production\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    clean.pop("DATABASE_URL", None)

    def clonegallery_db(*args):
        return subprocess.run(
            [sys.executable, "-m", "db", "--project", str(tmp_path), *args],
            capture_output=True,
            text=True,
            env=clean,
            timeout=120,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
        )

    one_error_line(clonegallery_db("setup"), 2, *SAMPLE_SEEDERS, "--no-sample", "--force")
    assert not Target(engine_url).exists
    ok(clonegallery_db("setup", "--no-sample"))
    assert sample_rows(engine_url) == NO_SAMPLE_ROWS


def test_status_shows_each_seeders_kind_as_text_and_json(engine_url, mixed_seeders):
    seeders = {"INVOKE_DB_SEEDERS": str(mixed_seeders)}
    ok(run_invoke("db.setup", "--no-sample", url=engine_url, env=seeders))

    text = ok(run_invoke("db.status", url=engine_url, env=seeders)).stdout
    document = json.loads(ok(run_invoke("db.status", "--json", url=engine_url, env=seeders)).stdout)

    assert re.search(r"^seeder\s+state\s+seeded at \(UTC\)\s+kind$", text, re.M)
    assert re.search(r"^001_users\s+pending\s+-\s+sample$", text, re.M)
    assert re.search(r"^007_site_tags\s+applied\s+\S+ \S+\s+essential$", text, re.M)
    assert document["format_version"] == 1
    assert {s["name"]: (s["state"], s["kind"]) for s in document["seeders"]} == {
        **dict.fromkeys(SAMPLE_SEEDERS, ("pending", SAMPLE)),
        **dict.fromkeys(ESSENTIAL_SEEDERS, ("applied", ESSENTIAL)),
    }


# --- Marking the project's seeders changed their checksums: harmless ---------------------------


@pytest.fixture
def seeded_before_marking(engine_url, tmp_path):
    """A database seeded with the project's seeders as they were before they said
    ``kind = "sample"`` (the same files without that line)."""
    folder = shutil.copytree(SEEDERS_DIR, tmp_path / "unmarked_seeders")
    for path in folder.glob("[0-9]*.py"):
        text = path.read_text(encoding="utf-8")
        unmarked = re.sub(r'\nkind = "sample".*\n', "", text)
        assert unmarked != text
        path.write_text(unmarked, encoding="utf-8")
    ok(run_invoke("db.setup", url=engine_url, env={"INVOKE_DB_SEEDERS": str(folder)}))
    return engine_url


def test_a_gallery_seeded_before_the_marking_shows_changed_seeders_and_stays_up_to_date(
    seeded_before_marking,
):
    url = seeded_before_marking
    before = sample_rows(url)

    status = json.loads(ok(run_invoke("db.status", "--json", url=url)).stdout)
    assert {s["state"] for s in status["seeders"]} == {"changed"}
    assert status["up_to_date"] is True
    ok(run_invoke("db.status", "--check", url=url, env=PRODUCTION))
    # Nothing is due: production lets setup and seed through, and they change nothing.
    assert "already set up" in ok(run_invoke("db.setup", url=url, env=PRODUCTION)).stdout
    seeded = ok(run_invoke("db.seed", url=url, env=PRODUCTION)).stdout
    assert "nothing to seed" in seeded
    assert "skipped 001_users: changed since it was seeded" in seeded
    assert sample_rows(url) == before == SAMPLE_GALLERY


def test_an_environment_that_is_not_known_is_refused_so_a_misspelt_production_seeds_nothing(
    tmp_path,
):
    url = f"sqlite:///{tmp_path / 'gallery.db'}"

    result = run_invoke("db.setup", url=url, env={"INVOKE_DB_ENVIRONMENT": "prodution"})

    one_error_line(result, 2, "db.environment 'prodution'", "production")
    assert not (tmp_path / "gallery.db").exists()
