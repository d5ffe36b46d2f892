"""db.diagram: the live schema as an entity-relationship diagram, on every engine."""

import os
import re
import shutil

import pytest

from db.models import ALL_MODELS as MODELS
from tests.conftest import one_error_line, run_invoke

pytestmark = pytest.mark.engine


@pytest.fixture
def migrated_url(engine_url, engine_migrated_db):
    return engine_url


def model_relations():
    """(parent, child, column) for every foreign key the models declare."""
    return {
        (field.rel_model._meta.table_name, model._meta.table_name, field.column_name)
        for model in MODELS
        for field in model._meta.fields.values()
        if hasattr(field, "rel_model")
    }


def test_the_mermaid_diagram_shows_every_table_and_every_foreign_key(migrated_url):
    result = run_invoke("db.diagram", url=migrated_url)

    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("erDiagram\n")
    for model in MODELS:
        assert re.search(rf"^    {model._meta.table_name} {{$", text, re.M), model
    drawn = set(re.findall(r"^    (\w+) \|[|o]--o\{ (\w+) : \"(\w+)\"$", text, re.M))
    assert drawn == model_relations()
    assert "migrations {" not in text  # the toolkit's bookkeeping is not the app's schema


def test_primary_and_foreign_keys_are_marked(migrated_url):
    text = run_invoke("db.diagram", url=migrated_url).stdout

    images = text[text.index("    images {") :].split("}", 1)[0]
    assert re.search(r"^        \w+ id PK$", images, re.M)
    assert re.search(r"^        \w+ uploader_id FK$", images, re.M)


def test_output_names_the_format_by_its_suffix(migrated_url, tmp_path):
    for name, start in (("schema.md", "```mermaid\nerDiagram\n"), ("schema.mmd", "erDiagram\n"),
                        ("schema.dot", "digraph clonegallery {")):  # fmt: skip
        path = tmp_path / name
        result = run_invoke("db.diagram", "--output", str(path), url=migrated_url)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"diagram written to {path}"
        assert path.read_text().startswith(start)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed here")
def test_an_svg_is_drawn_by_graphviz(migrated_url, tmp_path):
    path = tmp_path / "schema.svg"

    assert run_invoke("db.diagram", "--output", str(path), url=migrated_url).returncode == 0
    svg = path.read_text()
    assert "<svg" in svg and "user_likes" in svg


def test_an_svg_without_graphviz_names_the_package_to_install(migrated_url, tmp_path):
    bare = tmp_path / "bin"  # a PATH with Python and nothing else
    bare.mkdir()
    python = os.path.realpath(shutil.which("python3") or "/usr/bin/python3")
    (bare / "python3").symlink_to(python)
    output = tmp_path / "schema.svg"

    result = run_invoke(
        "db.diagram", "--output", str(output), url=migrated_url, env={"PATH": str(bare)}
    )

    one_error_line(result, 2, "Graphviz", "apt install graphviz")
    assert not output.exists()


@pytest.mark.parametrize(
    ("output", "words"),
    [("schema.png", ["schema.png", ".md", ".svg"]), ("no/such/dir/schema.md", ["does not exist"])],
)
def test_a_bad_output_is_refused_in_one_line(migrated_url, tmp_path, output, words):
    result = run_invoke("db.diagram", "--output", str(tmp_path / output), url=migrated_url)

    one_error_line(result, 2, *words)


def test_a_database_that_does_not_exist_yet_is_named(engine_url):
    one_error_line(run_invoke("db.diagram", url=engine_url), 2, "does not exist yet", "db.setup")
