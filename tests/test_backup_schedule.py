"""Backups left running: ``db.backup --every DURATION`` until SIGTERM or Ctrl-C, and
``db.backups --max-age DURATION``, the check a monitor runs.

The loop is the real CLI as a subprocess: it makes one verified backup per period (a
line each), reports a failed run in one line and goes on, and stops cleanly on SIGTERM
or SIGINT, even in the middle of a backup (the backup in the making is discarded: no
partial file, no file under a final name without its manifest), exit 0.
"""

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import peewee
import pytest

from db import backups, commands
from db.access import as_system
from db.config import Settings
from db.engines import engine_for_url, open_database
from db.engines.base import database_name_of
from db.models import bind_models
from db.populate import GalleryPlan, populate
from db.runner import Runner
from tests.conftest import (
    MIGRATIONS_DIR,
    PROJECT_ROOT,
    ctrl_c_reaches_python,
    one_error_line,
    run_invoke,
    sqlite_url,
)
from tests.test_backup_ownership import seeded

BACKUP_LINE = re.compile(r"^backup: (\S+) \(.*verified\)$", re.MULTILINE)
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_ROOT)]
BIG_GALLERY_IMAGES = 20_000  # ~17 MB: a compressed backup of it takes a good half second


# --- the loop as a subprocess -------------------------------------------------------------


class Loop:
    """A running ``invoke db.backup --every ...``, its output in files (read at any time)."""

    def __init__(self, url, folder, logs, *args, preexec_fn=None):
        environment = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
        # PYTHONFAULTHANDLER: a loop that does not stop is aborted with every thread's stack.
        environment.update(DATABASE_URL=url, INVOKE_DB_BACKUPS=str(folder), PYTHONFAULTHANDLER="1")
        self.out, self.err = logs / "stdout", logs / "stderr"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                [*INVOKE, "db.backup", "--every", *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=environment,
                preexec_fn=preexec_fn,
            )

    @property
    def stdout(self):
        return self.out.read_text()

    @property
    def stderr(self):
        return self.err.read_text()

    def backups_made(self):
        return BACKUP_LINE.findall(self.stdout)

    def errors(self):
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]

    def wait_until(self, condition, what, timeout=60):
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, (what, self.stdout, self.stderr)
            assert time.monotonic() < deadline, (
                f"timed out waiting for {what}",
                self.stdout,
                self.stderr,
            )
            time.sleep(0.05)

    def stop(self, number=signal.SIGTERM, timeout=60):
        """Send ``number`` and return the exit code; fail with the loop's stacks when it
        does not end within ``timeout`` seconds."""
        self.process.send_signal(number)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)  # faulthandler prints the stacks
            self.process.wait()
            pytest.fail(f"the loop did not stop within {timeout} s:\n{self.stderr}")

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def loops(tmp_path):
    """Start loops with ``loops(url, folder, *args)``; any still running is killed after."""
    started = []

    def start(url, folder, *args, **kwargs):
        logs = tmp_path / f"loop-{len(started)}"
        logs.mkdir()
        started.append(Loop(url, folder, logs, *args, **kwargs))
        return started[-1]

    yield start
    for loop in started:
        loop.kill()


def in_the_making(folder):
    """Return the files in the making (``.NAME.partial-PID...``) in ``folder``."""
    return sorted(p.name for p in Path(folder).glob(".*partial*")) if Path(folder).is_dir() else []


def assert_only_complete_backups(folder):
    """Every file in ``folder`` is a backup with its manifest, or a manifest with its
    backup; nothing in the making is left."""
    assert in_the_making(folder) == []
    files = {p.name for p in Path(folder).iterdir()} if Path(folder).is_dir() else set()
    manifests = {name for name in files if name.endswith(".json")}
    assert {name.removesuffix(".json") for name in manifests} == files - manifests


@pytest.fixture
def gallery_on(engine, engine_url):
    """The seeded gallery on the engine under test (SQLite, and PostgreSQL standing for
    the servers); returns its URL."""
    if engine == "mysql":
        pytest.skip("the loop is the same code on every server: PostgreSQL stands for MySQL")
    return seeded(engine_url)


# --- --every ------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_makes_a_verified_backup_each_period_keeps_by_retention_and_stops_on_sigterm(
    gallery_on, backups_dir, loops
):
    loop = loops(gallery_on, backups_dir, "1s", "--keep", "2")

    loop.wait_until(lambda: len(loop.backups_made()) >= 3, "three backups")
    code = loop.stop(signal.SIGTERM)

    assert code == 0, loop.stderr
    assert loop.stderr == ""
    made = loop.backups_made()
    lines = loop.stdout.splitlines()
    assert lines[-1].startswith("stopped by SIGTERM")
    assert all(line.startswith(("backup: ", "pruned: ")) for line in lines[:-1]), lines
    assert len({Path(path).name for path in made}) == len(made) >= 3
    assert_only_complete_backups(backups_dir)
    left = backups.list_backups(backups_dir)
    assert [info.path for info in left] == [Path(p) for p in made[::-1][: len(left)]]
    assert len(left) == 2 and all(info.verified for info in left)


@pytest.fixture(scope="module")
def big_gallery(tmp_path_factory):
    """An SQLite gallery large enough that a compressed backup takes a while (shared by
    this module's tests, which only read it)."""
    path = tmp_path_factory.mktemp("big") / "big.db"
    database = open_database(sqlite_url(path))
    try:
        with as_system():
            Runner(database, MIGRATIONS_DIR).migrate()
            bind_models(database)
            populate(database, GalleryPlan.sized(images=BIG_GALLERY_IMAGES))
    finally:
        database.close()
    return sqlite_url(path)


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_in_the_middle_of_a_backup_discards_it_and_ends_the_loop(
    big_gallery, backups_dir, loops, number
):
    loop = loops(big_gallery, backups_dir, "1s", "--compress", preexec_fn=ctrl_c_reaches_python)

    deadline = time.monotonic() + 60
    while not in_the_making(backups_dir):  # as soon as the first backup is being written
        assert loop.process.poll() is None and time.monotonic() < deadline, loop.stderr
        time.sleep(0.001)
    code = loop.stop(number)

    assert code == 0, loop.stderr
    assert "Traceback" not in loop.stderr and loop.errors() == []
    assert loop.stdout.splitlines() == [
        f"stopped by {signal.Signals(number).name}; no backup was in progress or it was discarded"
    ]
    assert_only_complete_backups(backups_dir)
    assert list(backups_dir.iterdir()) == []  # the one in progress was discarded


@pytest.mark.slow
def test_a_failed_run_is_one_line_and_the_next_period_tries_again(
    engine, gallery_on, backups_dir, loops, tmp_path
):
    loop = loops(gallery_on, backups_dir, "1s")
    loop.wait_until(lambda: len(loop.backups_made()) >= 1, "a first backup")

    with the_database_away(engine, gallery_on, tmp_path):
        loop.wait_until(lambda: len(loop.errors()) >= 2, "two failed runs")
        made_while_away = len(loop.backups_made())
    loop.wait_until(lambda: len(loop.backups_made()) > made_while_away, "a backup once back")
    code = loop.stop(signal.SIGTERM)

    assert code == 0, loop.stderr
    assert "Traceback" not in loop.stderr
    errors = loop.stderr.splitlines()
    assert errors == loop.errors() and len(errors) >= 2
    assert all(database_name_of(gallery_on) in line for line in errors), errors
    assert_only_complete_backups(backups_dir)
    assert all(info.verified for info in backups.list_backups(backups_dir))


@contextmanager
def the_database_away(engine, url, tmp_path):
    """Take the database away while the loop runs (the SQLite file moved elsewhere, the
    PostgreSQL database renamed), and bring it back afterwards."""
    name = database_name_of(url)
    if engine == "sqlite":
        Path(name).rename(tmp_path / "aside.db")
    else:
        renamed(url, name, f"{name}_away")
    try:
        yield
    finally:
        if engine == "sqlite":
            (tmp_path / "aside.db").rename(name)
        else:
            renamed(url, f"{name}_away", name)


def renamed(url, old, new, attempts=50):
    """Rename a PostgreSQL database, retrying while the loop's run is connected to it."""
    for attempt in range(attempts):
        try:
            with engine_for_url(url).maintenance(url) as maintenance:
                maintenance.execute_sql(f'ALTER DATABASE "{old}" RENAME TO "{new}"')
            return
        except peewee.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


@pytest.mark.slow
def test_a_server_that_does_not_answer_fails_each_run_in_one_line_and_the_loop_goes_on(
    backups_dir, loops
):
    url = f"postgresql://postgres@127.0.0.1:{unused_port()}/gallery"
    loop = loops(url, backups_dir, "1s")

    loop.wait_until(lambda: len(loop.errors()) >= 2, "two failed runs")
    code = loop.stop(signal.SIGTERM)

    assert code == 0, loop.stderr
    assert "Traceback" not in loop.stderr
    assert loop.stderr.splitlines() == loop.errors()
    assert loop.backups_made() == []
    assert_only_complete_backups(backups_dir)


def unused_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--every", "0s"], "--every"),
        (["--every", "abc"], "--every"),
        (["--every", "5x"], "--every"),
        (["--every", "1s", "--output", "OUTPUT"], "--output"),
    ],
    ids=["0s", "abc", "5x", "with-output"],
)
def test_a_bad_every_is_refused_in_one_line_before_any_backup(
    gallery, backups_dir, tmp_path, args, named
):
    args = [str(tmp_path / "out.db") if arg == "OUTPUT" else arg for arg in args]

    refused = run_invoke(
        "db.backup", *args, url=sqlite_url(gallery), env={"INVOKE_DB_BACKUPS": str(backups_dir)}
    )

    one_error_line(refused, 2, named)
    assert not backups_dir.exists() or list(backups_dir.iterdir()) == []
    assert not (tmp_path / "out.db").exists()


# --- --max-age ----------------------------------------------------------------------------


def max_age(url, folder, limit="26h"):
    return run_invoke(
        "db.backups", "--max-age", limit, url=url, env={"INVOKE_DB_BACKUPS": str(folder)}
    )


def backed_up(url, folder, verify=True, age=None):
    """Back up the database of ``url``; with ``age``, make its manifest that old."""
    settings = Settings(url, MIGRATIONS_DIR, backups_dir=folder)
    path = commands.backup(settings, verify=verify).backup.path
    if age is not None:
        manifest_file = backups.manifest_path(path)
        manifest = json.loads(manifest_file.read_text())
        created = (datetime.datetime.now(datetime.timezone.utc) - age).isoformat()
        manifest.update(created_at=created, verified_at=created if verify else None)
        manifest_file.write_text(json.dumps(manifest))
    return path


def test_max_age_passes_with_a_fresh_verified_backup_and_fails_once_it_is_older(
    engine, engine_url, backups_dir
):
    url = seeded(engine_url)
    fresh = backed_up(url, backups_dir)

    passed = max_age(url, backups_dir)
    assert passed.returncode == 0, passed.stderr
    assert f"OK: the newest verified backup is younger than 1d2h: {fresh.name}" in passed.stdout

    manifest_file = backups.manifest_path(fresh)
    manifest = json.loads(manifest_file.read_text())
    two_days_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)
    manifest["created_at"] = two_days_ago.isoformat()
    manifest_file.write_text(json.dumps(manifest))

    failed = max_age(url, backups_dir)
    line = one_error_line(failed, 3, "2d", "--max-age 1d2h", fresh.name)
    assert "older" in line or "old" in line
    assert fresh.name in failed.stdout  # the listing still shows it


@pytest.mark.parametrize(
    "backups_there", ["none", "only-unverified", "fresh-unverified-old-verified"]
)
def test_max_age_fails_in_one_line_without_a_young_enough_verified_backup(
    gallery, backups_dir, backups_there
):
    url = sqlite_url(gallery)
    if backups_there == "only-unverified":
        backed_up(url, backups_dir, verify=False)
    if backups_there == "fresh-unverified-old-verified":
        backed_up(url, backups_dir, age=datetime.timedelta(hours=27))
        backed_up(url, backups_dir, verify=False)

    failed = max_age(url, backups_dir)

    line = one_error_line(failed, 3, str(Path(gallery).resolve()))
    if backups_there == "fresh-unverified-old-verified":
        assert "1d3h old" in line
    else:
        assert "no verified backup" in line


@pytest.mark.parametrize("limit", ["0s", "26", "abc", "1y"])
def test_a_bad_max_age_is_refused_in_one_line(gallery, backups_dir, limit):
    one_error_line(max_age(sqlite_url(gallery), backups_dir, limit), 2, "--max-age", limit)


@pytest.mark.slow
def test_a_loop_whose_reader_goes_away_ends_quietly_after_a_whole_backup(gallery, backups_dir):
    """``db.backup --every 1s | head -1``: once head has its line and exits, the next
    backup's line meets a closed pipe; the loop ends (141) rather than reporting the
    closed pipe as a failed run every period, and what it made is whole."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    environment.update(DATABASE_URL=sqlite_url(gallery), INVOKE_DB_BACKUPS=str(backups_dir))
    loop = subprocess.Popen(
        [*INVOKE, "db.backup", "--every", "1s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=environment,
    )  # fmt: skip
    try:
        assert BACKUP_LINE.match(loop.stdout.readline().decode().rstrip("\n"))
        loop.stdout.close()  # head -1 exits
        code = loop.wait(timeout=60)
    finally:
        loop.kill()
        loop.wait()

    assert code == 141
    assert loop.stderr.read().decode() == ""
    assert_only_complete_backups(backups_dir)
