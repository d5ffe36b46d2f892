"""``db.locks``: who holds what and who waits on whom, seen from another process, and
``--kill`` ending a blocker. Real processes hold the locks: a holder reads ``images`` in
an open transaction (SQLite: holds the write lock); a waiter alters the table."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from db.engines import engine_for
from db.locks import lock_report, lock_waits
from db.timeouts import session_id
from tests.conftest import PROJECT_ROOT, ok, one_error_line, run_invoke
from tests.factories import make_image, make_user

# One session of the database in a process of its own: it prints its id (the pid, or
# MariaDB's connection id) once it holds what it was told to, then waits to be ended.
#   hold:     read images in an open transaction (SQLite: BEGIN IMMEDIATE, the write lock)
#   row:      update a row of images in an open transaction
#   open:     only have the database open
#   alter:    add a column to images (waits for the holder), then print "done"
#   update:   update the same row as ``row`` (waits for it), then print "done"
SESSION = textwrap.dedent(
    """
    import os, sys, time
    from db.engines import engine_for, open_database
    url, application, action = sys.argv[1:4]
    database = open_database(url, create=False)
    engine = engine_for(database)
    if engine.key == "postgres":
        database.execute_sql(f"SET application_name = '{application}'")
        (me,) = database.execute_sql("SELECT pg_backend_pid()").fetchone()
    elif engine.key == "mysql":
        (me,) = database.execute_sql("SELECT CONNECTION_ID()").fetchone()
    else:
        me = os.getpid()
    print(me, flush=True)
    if action == "open":
        database.execute_sql("SELECT COUNT(*) FROM images").fetchone()
    elif action in ("hold", "row"):
        database.execute_sql("BEGIN IMMEDIATE" if engine.key == "sqlite" else "BEGIN")
        database.execute_sql("SELECT COUNT(*) FROM images").fetchone()
        if action == "row":
            database.execute_sql("UPDATE images SET caption = 'held' WHERE id = '1'")
    elif action == "alter":
        database.execute_sql("ALTER TABLE images ADD COLUMN waited_for INTEGER")
    elif action == "update":
        database.execute_sql("BEGIN")
        database.execute_sql("UPDATE images SET caption = 'waited' WHERE id = '1'")
        database.execute_sql("COMMIT")
    print("done", flush=True)
    time.sleep(120)
    """
)


@pytest.fixture
def gallery(engine_migrated_db):
    """A migrated database with one image (id "1") to lock."""
    make_image(make_user(), id="1")
    return engine_migrated_db


@pytest.fixture
def session(engine_url, tmp_path):
    """Start a session of the database in its own process: ``session(application,
    action)``; returns (process, its id). Every one is killed afterwards."""
    started = []
    script = tmp_path / "session.py"
    script.write_text(SESSION)

    def start(application, action):
        process = subprocess.Popen(
            [sys.executable, str(script), engine_url, application, action],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process, int(process.stdout.readline())

    yield start
    for process in started:
        process.kill()
        process.wait()


def until(condition, seconds=15):
    """Return the first true value of ``condition()`` within ``seconds``; fail after."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not seen within {seconds} s")


def holding(process):
    assert process.stdout.readline().strip() == "done"
    return process


def locks(url, *args):
    return run_invoke("db.locks", *args, url=url)


def locks_json(url):
    return json.loads(ok(locks(url, "--json")).stdout)


def only_servers(engine):
    if engine == "sqlite":
        pytest.skip("SQLite has no lock queue: a waiter retries unseen")


@pytest.fixture
def blocked(engine, gallery, engine_url, session):
    """A holder reading images in an open transaction and a waiter altering the table,
    waiting for it: (holder process, holder id, waiter process, waiter id)."""
    only_servers(engine)
    holder, holder_id = session("cg-holder", "hold")
    holding(holder)
    waiter, waiter_id = session("cg-waiter", "alter")
    until(lambda: lock_waits(engine_for(gallery), gallery))
    return holder, holder_id, waiter, waiter_id


# -- who waits on whom ------------------------------------------------------------------------


def test_a_waiting_alter_is_shown_blocked_by_the_transaction_holding_images(
    engine, blocked, engine_url
):
    _, holder_id, _, waiter_id = blocked

    text = ok(locks(engine_url)).stdout

    assert "who waits on whom:" in text
    waits = text.split("who waits on whom:")[1].split("\n\n")[0]
    assert f"session {waiter_id}" in waits
    assert f"blocked by session {holder_id}" in waits
    assert "ALTER TABLE images ADD COLUMN waited_for" in text  # the waiter's query
    if engine == "postgres":
        assert "AccessExclusiveLock on images" in waits
        assert "cg-holder" in text and "idle in transaction" in text
        assert "AccessShareLock on images" in text  # what the holder holds
    else:
        assert "a table metadata lock" in waits


def test_the_json_names_the_waiter_its_blockers_and_the_holders_transaction(
    engine, blocked, engine_url
):
    _, holder_id, _, waiter_id = blocked

    document = locks_json(engine_url)

    assert document["format_version"] == 1
    assert document["engine"] == engine
    by_id = {session["id"]: session for session in document["sessions"]}
    assert document["waiting"] == [waiter_id]
    assert holder_id in by_id[waiter_id]["blocked_by"]
    assert by_id[holder_id]["state"] == "idle in transaction"
    assert by_id[holder_id]["transaction_since"] is not None
    assert by_id[waiter_id]["waiting_seconds"] >= 0
    if engine == "postgres":
        assert by_id[holder_id]["application"] == "cg-holder"
        assert by_id[holder_id]["query"] == "SELECT COUNT(*) FROM images"


def test_the_callers_own_session_is_never_listed(engine, gallery, engine_url):
    only_servers(engine)
    test_session = session_id(engine_for(gallery), gallery)

    listed = [s["id"] for s in locks_json(engine_url)["sessions"]]

    assert listed == [test_session]  # the test's connection; db.locks's own is not there


def test_a_row_lock_wait_names_the_blocking_transaction(engine, gallery, session):
    only_servers(engine)
    holder, holder_id = session("cg-holder", "row")
    holding(holder)
    session("cg-waiter", "update")

    (wait,) = until(lambda: lock_waits(engine_for(gallery), gallery))

    assert wait.blocked_by == (holder_id,)
    assert wait.seconds >= 0
    (waiter,) = lock_report(engine_for(gallery), gallery).waiting
    assert "row lock" in waiter.waits_for and "images" in waiter.waits_for


# -- --kill -------------------------------------------------------------------------------------


def test_kill_ends_the_blocker_and_the_waiter_goes_on(engine, blocked, engine_url):
    _, holder_id, waiter, _ = blocked

    result = ok(locks(engine_url, "--kill", str(holder_id), "--yes"))

    assert f"ended session {holder_id}" in result.stdout
    assert holding(waiter)  # its ALTER TABLE went through
    assert holder_id not in {s["id"] for s in locks_json(engine_url)["sessions"]}


def test_kill_without_yes_and_without_a_terminal_is_refused_and_ends_nothing(
    engine, blocked, engine_url
):
    _, holder_id, _, waiter_id = blocked

    result = locks(engine_url, "--kill", str(holder_id))

    one_error_line(result, 2, "db.locks --kill", "no terminal", "--yes")
    assert locks_json(engine_url)["waiting"] == [waiter_id]


def test_kill_of_a_session_not_on_this_database_is_refused(engine, blocked, engine_url):
    _, _, _, waiter_id = blocked

    result = locks(engine_url, "--kill", "999999", "--yes")

    one_error_line(result, 2, "db.locks --kill 999999", "no such session")
    assert locks_json(engine_url)["waiting"] == [waiter_id]


# -- SQLite: processes and the write lock ------------------------------------------------------


def only_sqlite(engine):
    if engine != "sqlite":
        pytest.skip("about SQLite's processes")


def test_sqlite_names_the_process_holding_the_write_transaction_by_pid(
    engine, gallery, engine_url, session
):
    only_sqlite(engine)
    holder, pid = session("cg-holder", "hold")
    holding(holder)
    reader, reader_pid = session("cg-reader", "open")
    holding(reader)

    by_id = {s["id"]: s for s in locks_json(engine_url)["sessions"]}

    assert by_id[pid]["state"] == "write transaction"
    assert by_id[pid]["holds"] == ["write lock"]
    assert "database" in by_id[pid]["files"]
    # Its command line, the program by name (the line is shortened where paths are long).
    assert by_id[pid]["application"].startswith(f"{Path(sys.executable).name} ")
    assert by_id[reader_pid]["state"] == "open"
    assert by_id[reader_pid]["holds"] == []
    assert by_id[os.getpid()]["state"] == "open"  # the test's own connection: another process


def test_sqlite_text_shows_the_writer_and_says_waiters_are_not_seen(
    engine, gallery, engine_url, session
):
    only_sqlite(engine)
    holder, pid = session("cg-holder", "hold")
    holding(holder)

    text = ok(locks(engine_url)).stdout

    assert f"{pid:>8}  " in text and "write transaction" in text
    assert "holds: write lock" in text
    assert "note: SQLite has no lock queue" in text


def test_kill_on_sqlite_is_refused_and_the_writer_keeps_its_lock(
    engine, gallery, engine_url, session
):
    only_sqlite(engine)
    holder, pid = session("cg-holder", "hold")
    holding(holder)

    result = locks(engine_url, "--kill", str(pid), "--yes")

    one_error_line(result, 2, "does not end processes on SQLite", str(pid))
    assert holder.poll() is None
    assert {s["id"]: s["state"] for s in locks_json(engine_url)["sessions"]}[pid] == (
        "write transaction"
    )
