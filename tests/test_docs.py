"""The documented examples, run: a console example that no longer matches what the tasks
print, or a Python example that no longer runs, fails here.

The examples are read from README.md and from every page of docs/ (the MkDocs site), each
named by its file and line. A page that includes a part of the README (MkDocs' snippets,
``--8<-- "README.md:tasks"``) shows the README's examples there too; they run once, as
the README's.

Console examples are the ```console blocks. Each runs in a fresh project (a
copy of tasks.py, migrations/ and seeders/ in a temporary folder) against a database of
its own, each ``$`` line through bash; what it prints (stdout and stderr, as a terminal
shows them) is compared with the lines below it:

    ...                a line of its own: any number of lines, left out of the example
    ... in a line      any text within the line (times, dates, sizes, backup names)
    /home/me/clonegallery   the project folder; ``clonegallery`` names a server database

A command that exits non-zero must be followed by ``$ echo $?`` showing its exit code.
An HTML comment just before a block says what it needs:

    <!-- example: given=setup engine=postgres type=clonegallery.db -->

``given`` is the database's state before the first command (``none``: no database yet,
the default; ``migrated``; ``setup``: migrated and seeded), ``engine`` the engine of the
configured database (sqlite by default), ``target`` the engine of a second database, on
a server, that the commands name (``clonegallery`` there too), ``type`` what a user
types at a prompt (that command then runs on a terminal), ``skip`` why the example
cannot run here.

Python examples (```python blocks) run in order in one namespace (the README's first, then
the pages' by file name), over the sample gallery on SQLite, with the names the text leaves
to the reader (``user``, ``image``...) set by
test_the_python_examples_run. A ```python or ```sql block after
``<!-- example: migration=NNN_name.py -->`` is a whole migration file: it is put beside
the project's migrations, applied and rolled back, on every engine (or on those that
``engines=sqlite,postgres`` names).
"""

import os
import pty
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sybil import Sybil
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

from db import backups
from db.access import as_system
from db.engines.base import database_name_of
from db.models import Album, Image, User, bind_models
from db.runner import Runner
from db.search import DERIVED_TABLE_PREFIXES
from db.target import Target
from tests import servers
from tests.conftest import LATEST_VERSION, MIGRATIONS_DIR, NEXT_VERSION, PROJECT_ROOT, sqlite_url
from tests.test_access import DIEGO, LIAM, MAYA

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
DOCUMENTS = [README, *sorted(DOCS.rglob("*.md"))]
SCHEMA_PAGE = DOCS / "schema.md"
CI_SCRIPT = PROJECT_ROOT / ".ci" / "run"
STAND_IN_PROJECT = "/home/me/clonegallery"
STAND_IN_DATABASE = "clonegallery"
DIRECTIVE = re.compile(r"<!--\s*example:(?P<arguments>(?:(?!-->).)*)-->\s*\Z", re.DOTALL)
ANY_LINES, ANY_TEXT = "...", "..."
PROMPT_SECONDS = 60


# --- reading the examples -----------------------------------------------------------------


@dataclass
class Command:
    line: str
    expected: list = field(default_factory=list)


@dataclass
class ConsoleExample:
    """One ```console block: its commands, each with the lines it should print."""

    document: str  # its file, relative to the project folder
    line: int
    commands: list
    given: str = "none"
    engine: str = "sqlite"
    target: str | None = None
    typed: str | None = None
    skip: str | None = None


class BlockParser:
    """A Sybil parser for the fenced blocks of ``language`` (a pattern) and the directive
    comment just before each: ``read(document, line, lexemes, options)`` makes the example
    (the tests below run it)."""

    def __init__(self, language, read):
        self.lexer = FencedCodeBlockLexer(language)
        self.read = read

    def __call__(self, document):
        name = Path(document.path).relative_to(PROJECT_ROOT).as_posix()
        for region in self.lexer(document):
            options = directive_before(document.text[: region.start])
            line = document.text.count("\n", 0, region.start) + 1
            region.parsed = self.read(name, line, region.lexemes, options)
            region.evaluator = lambda example: None  # run by the tests below
            yield region


def directive_before(text):
    """Return the options of the ``<!-- example: ... -->`` comment ending ``text``."""
    found = DIRECTIVE.search(text)
    if not found:
        return {}
    options = dict(word.split("=", 1) for word in shlex.split(found["arguments"]))
    return {"typed" if key == "type" else key: value for key, value in options.items()}


def commands_of(source):
    commands = []
    for text in source.rstrip("\n").splitlines():
        if text.startswith("$ "):
            commands.append(Command(text[2:]))
        else:
            assert commands, f"output before the first command: {text!r}"
            commands[-1].expected.append(text.rstrip())
    return commands


def examples_of(paths, parser):
    """Return the examples of the documents ``paths``, in order."""
    sybil = Sybil(parsers=[parser])
    return [example.parsed for path in paths for example in sybil.parse(Path(path))]


@dataclass
class CodeExample:
    """One ```python or ```sql block: its source, and the migration file it is (or None)."""

    document: str
    line: int
    language: str
    source: str
    migration: str | None = None
    engines: str = "sqlite,postgres,mysql"  # where a migration example runs


def console_example(document, line, lexemes, options):
    return ConsoleExample(document, line, commands_of(lexemes["source"]), **options)


def code_example(document, line, lexemes, options):
    return CodeExample(document, line, lexemes["language"], str(lexemes["source"]), **options)


def place(example):
    """Where an example is written: ``docs/backups.md line 12``."""
    return f"{example.document} line {example.line}"


CONSOLE_EXAMPLES = examples_of(DOCUMENTS, BlockParser("console", console_example))
CODE_EXAMPLES = examples_of(DOCUMENTS, BlockParser("python|sql", code_example))
MIGRATION_EXAMPLES = [example for example in CODE_EXAMPLES if example.migration]
PYTHON_EXAMPLES = [
    example
    for example in CODE_EXAMPLES
    if example.language == "python" and example not in MIGRATION_EXAMPLES
]


# --- running them -------------------------------------------------------------------------


@dataclass
class Project:
    """A fresh copy of the project to run an example's commands in."""

    folder: Path
    environment: dict
    server_database: str | None  # the server database the examples call clonegallery

    def stand_ins(self, text):
        """``text`` with the project folder and database named as the examples name them."""
        text = text.replace(str(self.folder), STAND_IN_PROJECT)
        if self.server_database:
            text = text.replace(self.server_database, STAND_IN_DATABASE)
        return text

    def actual(self, text):
        """A command of an example with the stand-ins replaced by this project's names."""
        text = text.replace(STAND_IN_PROJECT, str(self.folder))
        if self.server_database:
            text = text.replace(f"/{STAND_IN_DATABASE}", f"/{self.server_database}")
        return text


def new_project(folder, url, server_url=None):
    """Return a fresh Project in ``folder`` whose database is ``url``; ``server_url``, the
    URL of the server database its examples call clonegallery (default: ``url``)."""
    folder.mkdir()
    shutil.copy(PROJECT_ROOT / "tasks.py", folder)
    for name in ("migrations", "seeders"):
        shutil.copytree(PROJECT_ROOT / name, folder / name)
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("INVOKE_", "CLONEGALLERY_BACKUP")) and key != "DATABASE_URL"
    }
    environment.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}",
        PYTHONUNBUFFERED="1",  # stdout and stderr in the order they were written
        HOME=str(folder),
        **({} if url.startswith("sqlite") else {"DATABASE_URL": url}),
    )
    server_url = server_url or (None if url.startswith("sqlite") else url)
    return Project(folder, environment, server_url and database_name_of(server_url))


def run(project, command, last_exit_code, typed=None):
    """Run ``command`` as bash would from the project folder (``$?`` is the previous
    command's exit code); return (exit code, what it printed)."""
    script = f"(exit {last_exit_code}); {project.actual(command)}"
    if typed is None:
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=project.folder,
            env=project.environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
        return done.returncode, done.stdout
    return run_on_terminal(project, script, typed)


def run_on_terminal(project, script, typed):
    """Run ``script`` on a pseudo-terminal, typing ``typed`` at its prompt."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=project.folder,
        env=project.environment,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    printed = b""
    try:
        while chunk := read_some(controller):
            printed += chunk
            if typed is not None and printed.rstrip(b" ").endswith(b":"):
                os.write(controller, typed.encode() + b"\n")
                typed = None
    finally:
        os.close(controller)
    return process.wait(timeout=PROMPT_SECONDS), printed.decode().replace("\r\n", "\n")


def read_some(descriptor):
    try:
        return os.read(descriptor, 4096)
    except OSError:  # EIO: the command ended and closed the terminal
        return b""


def matches(expected_lines, printed):
    """Whether ``printed`` is ``expected_lines`` (with their ``...``) line for line."""
    pattern = ""
    for line in expected_lines:
        if line == ANY_LINES:
            pattern += r"(?:[^\n]*\n)*?"
        else:
            pattern += r"[^\n]*?".join(re.escape(part) for part in line.split(ANY_TEXT)) + r"\n"
    lines = [line.rstrip() for line in printed.splitlines()]
    return re.fullmatch(pattern, "".join(f"{line}\n" for line in lines)) is not None


def typed_at(example, command):
    """What the user types at the command's prompt (None: it asks nothing)."""
    asked = example.typed and any(line.endswith(f": {example.typed}") for line in command.expected)
    return example.typed if asked else None


def prepare(project, given):
    steps = {"none": [], "migrated": ["invoke db.migrate"], "setup": ["invoke db.setup"]}
    for command in steps[given]:
        code, printed = run(project, command, 0)
        assert code == 0, printed


@pytest.fixture
def server_databases():
    """Return new_url(engine): the URL of a new test database; all dropped afterwards."""
    made = []

    def new_url(engine):
        servers.require_server(engine)
        made.append(servers.new_database_url(engine))
        return made[-1]

    yield new_url
    for url in made:
        servers.drop_database(url)


@pytest.mark.parametrize(
    "example",
    CONSOLE_EXAMPLES,
    ids=[f"{example.document}-line-{example.line}" for example in CONSOLE_EXAMPLES],
)
def test_console_example(example, server_databases, tmp_path):
    if example.skip:
        pytest.skip(example.skip)
    folder = tmp_path / "project"
    if example.engine == "sqlite":
        url = sqlite_url(folder / "clonegallery.db")
    else:
        url = server_databases(example.engine)
    target_url = server_databases(example.target) if example.target else None
    project = new_project(folder, url, target_url)
    prepare(project, example.given)

    exit_code = 0
    for command in example.commands:
        if exit_code and command.line != "echo $?":
            pytest.fail(
                f"{place(example)}: the command before {command.line!r} exited "
                f"{exit_code}: show it with $ echo $?"
            )
        exit_code, printed = run(project, command.line, exit_code, typed_at(example, command))
        printed = project.stand_ins(printed)
        assert matches(command.expected, printed), (
            f"{place(example)}: $ {command.line}\n"
            f"--- {example.document} shows ---\n" + "\n".join(command.expected) + "\n"
            f"--- it printed (exit code {exit_code}) ---\n{printed}"
        )
    assert exit_code == 0, f"{place(example)}: the last command exited {exit_code}"


# --- the Python examples ------------------------------------------------------------------


def test_the_python_examples_run(migrated_db, gallery, db_url, monkeypatch):
    """The documents' Python blocks, in order, over the sample gallery: Diego (an editor)
    acts on his own image, Maya is an author, Liam a liker."""
    diego, maya, liam = (User.get(User.email == email) for email in (DIEGO, MAYA, LIAM))
    image = Image.select().where(Image.uploader == diego).order_by(Image.id).first()
    monkeypatch.setenv("DATABASE_URL", db_url)  # the application example opens it
    scene = {
        "user": diego,
        "image": image,
        "author": maya,
        "liker": liam,
        "album": Album.select().order_by(Album.id).first(),
        "other_user": liam,
        "session_user_id": diego.id,
    }
    assert PYTHON_EXAMPLES, "the documents show no Python example"

    for example in PYTHON_EXAMPLES:
        code = compile(
            example.source, f"{example.document}, the example at line {example.line}", "exec"
        )
        exec(code, scene)

    bind_models(migrated_db)  # the application example bound them to its own connection
    assert Image.get_by_id(image.id).title == "Dawn"  # the first example saved it
    assert scene["images"], "the application example found no image"


@pytest.mark.parametrize(
    "example", MIGRATION_EXAMPLES, ids=[example.migration for example in MIGRATION_EXAMPLES]
)
def test_a_migration_example_applies_and_rolls_back(example, engine, engine_db, tmp_path):
    if engine not in example.engines.split(","):
        pytest.skip(f"{place(example)} gives this migration for {example.engines}")
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder)
    # Numbered after the project's newest, whatever number the page shows it with.
    name = NEXT_VERSION + example.migration[len(NEXT_VERSION) :]
    (folder / name).write_text(example.source, encoding="utf-8")
    runner = Runner(engine_db, folder)
    with as_system():
        runner.migrate()
        before = set(engine_db.get_tables())

        assert runner.rollback() == [Path(name).stem]

    assert runner.current_version() == LATEST_VERSION
    assert set(engine_db.get_tables()) <= before


def test_the_schema_pages_table_names_every_table(migrated_db, gallery, db_url, tmp_path):
    backups.create_backup(
        Target.around(migrated_db, db_url), tmp_path
    )  # the first backup makes its id
    section = section_of(SCHEMA_PAGE, "## Tables")

    listed = re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)

    # FTS5's shadow tables are its virtual table's storage: the page names that one.
    tables = [t for t in migrated_db.get_tables() if not t.startswith(DERIVED_TABLE_PREFIXES)]
    assert sorted(listed) == sorted(tables)


def section_of(path, heading):
    """Return the text under ``heading`` (a whole line, ``## Tables``) in the Markdown file
    ``path``, up to the next heading of its level or above."""
    text = path.read_text(encoding="utf-8")
    level = heading.split(" ", 1)[0]
    found = re.search(
        rf"^{re.escape(heading)}\n(.*?)(?=^#{{1,{len(level)}}} |\Z)", text, re.M | re.S
    )
    assert found, f"{path.relative_to(PROJECT_ROOT)} has no {heading!r} heading"
    return found[1]


# --- the README and the documentation site ------------------------------------------------


def test_the_readme_opens_with_the_setup_and_test_commands_and_ci_runs_the_second():
    opening = README.read_text(encoding="utf-8").split("```bash\n", 1)[1].split("```", 1)[0]
    setup, test = opening.splitlines()

    assert setup.endswith(".venv/bin/invoke db.setup")
    assert test.endswith(".venv/bin/nox")
    assert CI_SCRIPT.read_text(encoding="utf-8").rstrip().splitlines()[-1] == test


def test_the_readme_stays_a_newcomers_page_and_the_rest_lives_in_the_docs():
    lines = README.read_text(encoding="utf-8").count("\n")
    documents_with_examples = {example.document for example in CONSOLE_EXAMPLES + CODE_EXAMPLES}

    assert lines < 300, f"README.md has {lines} lines: move the details to docs/"
    assert {"docs/getting-started.md", "docs/migrations.md", "docs/security.md"} <= (
        documents_with_examples
    )
