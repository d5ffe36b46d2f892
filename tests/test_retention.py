"""Retention by count and by age: --keep N, --keep-daily/--keep-weekly/--keep-monthly N
(grandfather-father-son, as restic's ``forget``), run only after the new backup verified,
never deleting the newest verified backup.

``Retention.kept`` is tested over backups whose manifests say when they were made (files
written in tmp_path); ``prune_backups`` and the CLI look at what is left in the folder.
"""

import datetime
import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from db import backups, commands
from db.backups.manifest import TOOL
from db.config import Settings
from db.engines import open_database
from db.errors import ConfigError
from db.stats import latest_backup
from tests.conftest import MIGRATIONS_DIR, one_error_line, run_invoke, sqlite_url
from tests.test_backup_ownership import names, seeded

UTC = datetime.timezone.utc
OWNER = backups.Owner(
    "sqlite", None, None, "/srv/gallery.db", "f3c1e2a4-0000-4000-8000-000000000001"
)
STRANGER = backups.Owner(
    "sqlite", None, None, "/srv/other.db", "f3c1e2a4-0000-4000-8000-000000000002"
)

# When each backup of the calendar was made; B is written with an offset: in UTC it was
# made on 31 January, so it is January's newest, not February's.
CALENDAR = {
    "A": "2026-01-10T12:00:00+00:00",  # Saturday, ISO week 2
    "B": "2026-02-01T01:00:00+03:00",  # = 2026-01-31 22:00 UTC, Saturday, week 5
    "C": "2026-02-14T10:00:00+00:00",  # Saturday, week 7
    "D": "2026-02-28T09:00:00+00:00",  # Saturday, week 9
    "E": "2026-03-02T08:00:00+00:00",  # Monday, week 10
    "F": "2026-03-02T20:00:00+00:00",  # Monday, week 10
    "G": "2026-03-03T09:00:00+00:00",  # Tuesday, week 10
    "H": "2026-03-08T22:00:00+00:00",  # Sunday, week 10
    "I": "2026-03-09T06:00:00+00:00",  # Monday, week 11
    "J": "2026-03-09T07:00:00+00:00",  # Monday, week 11
}


def written_backup(folder, label, created_at, owner=OWNER, verified=True):
    """Write a stand-in backup file with a manifest of this tool made at ``created_at``
    (retention reads only the manifest); return its BackupInfo."""
    folder.mkdir(exist_ok=True)
    path = folder / f"gallery-{label}.db"
    path.write_bytes(label.encode())
    manifest = {
        "tool": TOOL,
        "engine": "sqlite",
        "created_at": created_at,
        "verified_at": created_at if verified else None,
        "database": owner.as_manifest(),
    }
    backups.manifest_path(path).write_text(json.dumps(manifest))
    return backups.BackupInfo(path, manifest)


@pytest.fixture
def calendar(tmp_path):
    """The CALENDAR's backups, newest first (as list_backups gives them)."""
    for label, created_at in CALENDAR.items():
        written_backup(tmp_path / "backups", label, created_at)
    return backups.list_backups(tmp_path / "backups", OWNER)


def labels(paths):
    return {Path(path).stem.removeprefix("gallery-") for path in paths}


# --- which backups each rule keeps --------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "kept"),
    [
        ({"last": 3}, "JIH"),
        ({"daily": 3}, "JHG"),  # the newest of each of the last 3 days with a backup
        ({"daily": 100}, "JHGFDCBA"),  # one a day: E and I lose to F and J, later that day
        ({"weekly": 2}, "JH"),  # ISO weeks 11 and 10
        ({"weekly": 4}, "JHDC"),  # weeks 11, 10, 9, 7 (8 has none)
        ({"monthly": 3}, "JDB"),  # March, February, and January in UTC
        ({"last": 2, "monthly": 2}, "JID"),
        ({"last": 1, "daily": 2, "weekly": 3, "monthly": 3}, "JHDB"),
    ],
    ids=lambda value: (
        value if isinstance(value, str) else ",".join(f"{k}={v}" for k, v in value.items())
    ),
)
def test_each_rule_keeps_the_newest_backup_of_its_periods_and_the_rules_add_up(
    calendar, rules, kept
):
    assert [info.path.stem[-1] for info in calendar] == list("JIHGFEDCBA")

    assert labels(backups.Retention(**rules).kept(calendar)) == set(kept)


def test_no_rule_keeps_nothing_and_prunes_nothing(calendar, tmp_path):
    retention = backups.Retention()

    assert not retention.active
    assert backups.prune_backups(tmp_path / "backups", OWNER, retention) == []
    assert len(list((tmp_path / "backups").glob("*.db"))) == len(CALENDAR)


@pytest.mark.parametrize("rule", ["last", "daily", "weekly", "monthly"])
@pytest.mark.parametrize("value", [0, -1])
def test_a_rule_below_one_is_refused_naming_its_option(rule, value):
    option = "--keep" if rule == "last" else f"--keep-{rule}"
    with pytest.raises(ConfigError) as error:
        backups.Retention(**{rule: value})
    assert str(error.value) == f"{option} must be 1 or more, not {value}"


# --- what pruning deletes -----------------------------------------------------------------


def test_pruning_deletes_what_no_rule_keeps_files_and_manifests(calendar, tmp_path):
    folder = tmp_path / "backups"

    deleted = backups.prune_backups(folder, OWNER, backups.Retention(last=1, weekly=2))

    assert labels(deleted) == set("IGFEDCBA")
    assert labels(folder.glob("*.db")) == set("JH")
    assert {p.name for p in folder.glob("*.json")} == {"gallery-J.db.json", "gallery-H.db.json"}


def test_the_newest_verified_backup_is_never_pruned(tmp_path):
    folder = tmp_path / "backups"
    for label, created_at in CALENDAR.items():
        written_backup(folder, label, created_at, verified=label in "AB")  # C..J never verified

    deleted = backups.prune_backups(folder, OWNER, backups.Retention(last=1, monthly=1))

    # J is kept by the rules; B, the newest verified, whatever they say.
    assert labels(folder.glob("*.db")) == set("JB")
    assert labels(deleted) == set("IHGFEDCA")


def test_with_no_verified_backup_the_rules_alone_decide(tmp_path):
    folder = tmp_path / "backups"
    for label, created_at in CALENDAR.items():
        written_backup(folder, label, created_at, verified=False)

    deleted = backups.prune_backups(folder, OWNER, backups.Retention(last=2))

    assert labels(folder.glob("*.db")) == set("JI")
    assert labels(deleted) == set("HGFEDCBA")


def test_pruning_never_touches_another_databases_or_another_tools_files(tmp_path):
    folder = tmp_path / "backups"
    for label, created_at in CALENDAR.items():
        written_backup(folder, label, created_at)
    written_backup(folder, "stranger", "2025-01-01T00:00:00+00:00", owner=STRANGER)
    (folder / "gallery-no-manifest.db").write_bytes(b"someone's file")

    backups.prune_backups(folder, OWNER, backups.Retention(last=1))

    assert labels(folder.glob("*.db")) == {"J", "stranger", "no-manifest"}


# --- the manifest's time, not the file's -------------------------------------------------


def moment(text):
    return datetime.datetime.fromisoformat(text).timestamp()


def test_backups_are_ordered_by_their_manifests_time_not_their_files(tmp_path):
    # Copied back from elsewhere, the older backup's file is the newest on disk and the
    # newer one's the oldest; a file without a manifest has only its file's time.
    folder = tmp_path / "backups"
    older = written_backup(folder, "older", "2026-01-10T12:00:00+00:00")
    newer = written_backup(folder, "newer", "2026-03-09T07:00:00+00:00")
    orphan = folder / "gallery-orphan.db"
    orphan.write_bytes(b"no manifest")
    for path, mtime in [
        (older.path, "2026-06-01T00:00:00+00:00"),
        (newer.path, "2025-06-01T00:00:00+00:00"),
        (orphan, "2026-02-01T00:00:00+00:00"),
    ]:
        os.utime(path, (moment(mtime), moment(mtime)))

    assert [i.path for i in backups.list_backups(folder, OWNER)] == [newer.path, older.path]
    assert [i.path for i in backups.list_backups(folder)] == [newer.path, orphan, older.path]
    assert latest_backup(folder, OWNER).path == newer.path

    deleted = backups.prune_backups(folder, OWNER, backups.Retention(last=1))

    assert deleted == [older.path]
    assert labels(folder.glob("*.db")) == {"newer", "orphan"}


# --- the CLI ------------------------------------------------------------------------------


def cli(url, folder, *args):
    return run_invoke(*args, url=url, env={"INVOKE_DB_BACKUPS": str(folder)})


def aged_backup(url, folder, age):
    """Back up the database of ``url`` and make its manifest say it is ``age`` old."""
    settings = Settings(url, MIGRATIONS_DIR, backups_dir=folder)
    path = commands.backup(settings, verify=True).backup.path
    manifest_file = backups.manifest_path(path)
    manifest = json.loads(manifest_file.read_text())
    created = datetime.datetime.now(UTC) - age
    manifest.update(created_at=created.isoformat(), verified_at=created.isoformat())
    manifest_file.write_text(json.dumps(manifest))
    return path


@pytest.fixture
def engine_gallery(engine, engine_url):
    """The seeded sample gallery on the engine under test; returns its URL."""
    return seeded(engine_url)


def test_the_cli_keeps_by_count_and_by_age_after_the_new_backup_verified(
    engine_gallery, backups_dir
):
    day = datetime.timedelta(days=1)
    ancient, old, two_days, yesterday = (
        aged_backup(engine_gallery, backups_dir, age)
        for age in (800 * day, 400 * day, 2 * day, day)
    )

    made = cli(
        engine_gallery,
        backups_dir,
        "db.backup",
        "--keep", "1", "--keep-daily", "2", "--keep-weekly", "1", "--keep-monthly", "1",
    )  # fmt: skip

    assert made.returncode == 0, made.stderr
    new = Path(made.stdout.split()[1])
    assert "verified" in made.stdout.splitlines()[0]
    # The new one (every rule's newest) and yesterday's (the daily rule's second day).
    left = {p.name for p in backups_dir.iterdir() if not p.name.endswith(".json")}
    assert left == names(new, yesterday)
    assert {p.name for p in backups_dir.glob("*.json")} == {f"{n}.json" for n in left}
    assert {line.removeprefix("pruned: ") for line in made.stdout.splitlines()[1:]} == {
        str(p) for p in (ancient, old, two_days)
    }


def break_a_foreign_key(engine, url):
    """Write a row that points at no image, as a buggy writer with the checks off would."""
    if engine == "sqlite":
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
            connection.execute("INSERT INTO image_tags (image_id, tag_id) VALUES ('no-such', 1)")
            connection.commit()
        return
    database = open_database(url, create=False)
    try:
        if engine == "mysql":
            database.execute_sql("SET FOREIGN_KEY_CHECKS = 0")
        else:
            database.execute_sql("SET session_replication_role = replica")  # no FK triggers
        database.execute_sql("INSERT INTO image_tags (image_id, tag_id) VALUES ('no-such', 1)")
    finally:
        database.close()


def test_a_backup_that_fails_verification_prunes_nothing(engine, engine_gallery, backups_dir):
    older = [aged_backup(engine_gallery, backups_dir, datetime.timedelta(days=d)) for d in (3, 2)]
    break_a_foreign_key(engine, engine_gallery)

    failed = cli(engine_gallery, backups_dir, "db.backup", "--keep", "1", "--keep-daily", "1")

    one_error_line(failed, 1, "foreign key" if engine == "sqlite" else "image_tags")
    for path in older:
        assert path.exists() and backups.manifest_path(path).exists()
    listed = backups.list_backups(backups_dir)
    assert len(listed) == 3 and sum(info.verified for info in listed) == 2


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--keep-daily", "0"),
        ("--keep-daily", "-1"),
        ("--keep-daily", "abc"),
        ("--keep-weekly", "0"),
        ("--keep-monthly", "abc"),
        ("--keep", "-1"),
    ],
)
def test_a_bad_retention_value_is_one_line_and_no_backup_is_made(
    gallery, backups_dir, option, value
):
    refused = cli(sqlite_url(gallery), backups_dir, "db.backup", option, value)

    line = one_error_line(refused, 2, option, value)
    assert ("whole number" if value == "abc" else "1 or more") in line
    assert not backups_dir.exists() or not any(backups_dir.iterdir())
