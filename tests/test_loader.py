"""Finding migration files: names, versions, checksums and SQL sections."""

import pytest

from db.engines import SqliteEngine
from db.errors import SourceFileError, StatementFailed
from db.loader import discover, load_migration, next_version, slugify


def test_migrations_are_found_in_version_order(write_migration, migrations_dir):
    write_migration("010_later.sql", "SELECT 1;")
    write_migration("002_second.py", "def up(migrator, db): pass\n")
    write_migration("001_first.sql", "SELECT 1;")

    assert [f.name for f in discover(migrations_dir)] == ["001_first", "002_second", "010_later"]


IGNORED = [
    "__init__.py", "_common.py", "README", "README.md", ".gitkeep", ".DS_Store",
    ".002_second.sql.swp", "002_second.sql~", "002_second.sql.bak", "002_second.py.orig",
    "#002_second.sql#",
]  # fmt: skip


@pytest.mark.parametrize("noun", ["migration", "seeder"])
def test_helpers_notes_hidden_files_and_editor_backups_are_left_alone(
    write_migration, migrations_dir, noun
):
    write_migration("001_first.sql", "SELECT 1;")
    for name in IGNORED:
        write_migration(name, "SELECT 1;")
    (migrations_dir / "__pycache__").mkdir()

    assert [f.name for f in discover(migrations_dir, noun)] == ["001_first"]


@pytest.mark.parametrize(
    "name",
    ["4_short.py", "004-dash.sql", "004_Upper.py", "004_x.txt", "helper.py", "notes.txt", "NOTES"],
)
def test_a_misnamed_file_is_refused_by_name(write_migration, migrations_dir, name):
    write_migration(name, "")

    with pytest.raises(SourceFileError, match=name.replace(".", r"\.")):
        discover(migrations_dir)


def test_two_files_with_one_version_are_refused(write_migration, migrations_dir):
    write_migration("003_one.sql", "SELECT 1;")
    write_migration("003_other.py", "def up(migrator, db): pass\n")

    with pytest.raises(SourceFileError, match=r"version 003 is also used by 003_one\.sql"):
        discover(migrations_dir)


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(SourceFileError, match="nowhere"):
        discover(tmp_path / "nowhere")


def test_the_checksum_ignores_line_endings_but_not_content(write_migration, migrations_dir):
    path = write_migration("001_a.sql", "CREATE TABLE a (id INTEGER);\nSELECT 1;\n")
    lf = discover(migrations_dir)[0].checksum
    path.write_bytes(b"CREATE TABLE a (id INTEGER);\r\nSELECT 1;\r\n")
    crlf = discover(migrations_dir)[0].checksum
    path.write_bytes(b"CREATE TABLE a (id INTEGER);\nSELECT 2;\n")
    edited = discover(migrations_dir)[0].checksum

    assert lf == crlf
    assert edited != lf


def test_an_sql_file_without_markers_is_up_only(write_migration, migrations_dir):
    write_migration("001_a.sql", "CREATE TABLE a (id INTEGER);")

    steps = load_migration(discover(migrations_dir)[0], SqliteEngine())

    assert steps.up is not None
    assert steps.down is None


def test_an_sql_file_with_markers_has_both_directions(write_migration, migrations_dir):
    write_migration("001_a.sql", "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;\n")

    steps = load_migration(discover(migrations_dir)[0], SqliteEngine())

    assert steps.up is not None
    assert steps.down is not None


MARKERS_NEEDED = "needs exactly one '-- migrate:up' and at most one '-- migrate:down' marker"
DOWN_AFTER_UP = "'-- migrate:down' must come after '-- migrate:up'"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("-- migrate:down\nSELECT 2;\n-- migrate:up\nSELECT 1;\n", DOWN_AFTER_UP),
        ("DROP TABLE users;\n-- migrate:down\nSELECT 2;\n", MARKERS_NEEDED),  # no up to run
        ("-- migrate:up\nSELECT 1;\n-- migrate:up\nSELECT 2;\n", MARKERS_NEEDED),
        (
            "-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 2;\n-- migrate:down\nSELECT 3;\n",
            MARKERS_NEEDED,
        ),
    ],
    ids=["down before up", "down only", "two ups", "two downs"],
)
def test_misplaced_or_repeated_markers_are_refused_before_anything_runs(
    write_migration, migrations_dir, text, problem
):
    path = write_migration("001_a.sql", text)

    with pytest.raises(SourceFileError) as refused:
        load_migration(discover(migrations_dir)[0], SqliteEngine())

    assert str(refused.value) == f"{path}: {problem}"


LINES_APART = """-- Tags.

-- migrate:up
CREATE TABLE a (id INTEGER PRIMARY KEY);
INSERT INTO nowhere VALUES (1);

-- migrate:down
DROP TABLE a;
DROP TABLE nowhere;
"""


def test_a_failing_statement_is_named_by_its_line_in_the_file_up_and_down(
    write_migration, migrations_dir, fresh_db
):
    write_migration("001_a.sql", LINES_APART)
    steps = load_migration(discover(migrations_dir)[0], SqliteEngine())

    with pytest.raises(StatementFailed, match=r"^line 5: no such table: nowhere"):
        steps.up(None, fresh_db)
    with pytest.raises(StatementFailed, match=r"^line 9: no such table: nowhere"):
        steps.down(None, fresh_db)
    assert fresh_db.get_tables() == []  # line 4 ran, then line 8 dropped it


def test_a_python_down_that_is_not_a_function_is_no_down(write_migration, migrations_dir):
    write_migration("001_a.py", "def up(migrator, db): pass\n\ndown = 'not written yet'\n")

    steps = load_migration(discover(migrations_dir)[0], SqliteEngine())

    assert callable(steps.up)
    assert steps.down is None


def test_a_python_migration_without_up_is_refused(write_migration, migrations_dir):
    write_migration("001_a.py", "def down(migrator, db): pass\n")

    with pytest.raises(SourceFileError, match=r"001_a\.py: defines no up"):
        load_migration(discover(migrations_dir)[0], SqliteEngine())


def test_a_python_migration_that_does_not_import_is_refused(write_migration, migrations_dir):
    write_migration("001_a.py", "import no_such_module\n")

    with pytest.raises(SourceFileError, match=r"001_a\.py: cannot be loaded"):
        load_migration(discover(migrations_dir)[0], SqliteEngine())


def test_sql_statements_are_split_without_breaking_trigger_bodies():
    sql = """
    -- a comment
    CREATE TABLE a (id INTEGER, n TEXT DEFAULT ';');
    CREATE TRIGGER t AFTER INSERT ON a BEGIN
        UPDATE a SET n = 'x;y' WHERE id = NEW.id;
        UPDATE a SET n = n || '!' WHERE id = NEW.id;
    END;
    INSERT INTO a (id) VALUES (1);
    """

    statements = SqliteEngine().split_statements(sql)

    assert [s.line for s in statements] == [3, 4, 8]
    assert statements[1].sql.startswith("CREATE TRIGGER") and statements[1].sql.endswith("END;")


def test_new_migrations_get_the_next_number_and_a_slug(write_migration, migrations_dir):
    write_migration("007_x.sql", "")

    assert next_version(discover(migrations_dir)) == "008"
    assert next_version([]) == "001"
    assert slugify("  Add karma to Users! ") == "add_karma_to_users"


@pytest.mark.parametrize("noun", ["migration", "seeder"])
def test_a_misnamed_file_is_refused_saying_what_names_look_like(
    write_migration, migrations_dir, noun
):
    path = write_migration("helper.py", "")

    with pytest.raises(SourceFileError) as refused:
        discover(migrations_dir, noun)

    assert str(refused.value) == (
        f"{path}: {noun} file names must look like NNN_description.py or "
        "NNN_description.sql (digits, underscore, lower-case words)"
    )


def test_by_default_the_files_found_are_migrations(write_migration, migrations_dir):
    write_migration("helper.py", "")

    with pytest.raises(SourceFileError, match=r": migration file names must look like"):
        discover(migrations_dir)


def test_lines_are_counted_from_the_files_first_even_when_it_is_blank(
    write_migration, migrations_dir, fresh_db
):
    write_migration("001_a.sql", "\n-- migrate:up\nINSERT INTO nowhere VALUES (1);\n")
    steps = load_migration(discover(migrations_dir)[0], SqliteEngine())

    with pytest.raises(StatementFailed, match=r"^line 3: "):
        steps.up(None, fresh_db)
