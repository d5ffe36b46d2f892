"""The manifest beside every backup (db/backups/manifest.py): what it records, how it is
written and read back, which files count as backups, and when a backup was made."""

import datetime
import json
import os
import re
import stat
from importlib import metadata

import pytest

from db import backups
from db.backups.manifest import (
    TOOL,
    backup_name,
    checksum_problems,
    created_at,
    created_moment,
    list_backups,
    manifest_path,
    mark_verified,
    new_manifest,
    read_manifest,
    with_deferred_checksum,
    write_manifest,
)

UTC = datetime.timezone.utc


@pytest.fixture
def backup_file(tmp_path):
    """A stand-in backup file (the manifest reads only its bytes)."""
    path = tmp_path / "gallery-20260301T000000000000Z.db"
    path.write_bytes(b"not really a database, but bytes to hash")
    return path


def utc_now():
    return datetime.datetime.now(UTC)


def aware(text):
    moment = datetime.datetime.fromisoformat(text)
    assert moment.utcoffset() == datetime.timedelta(0), text
    return moment


# --- what a new manifest records ----------------------------------------------------------


def test_a_new_manifest_records_the_file_its_database_and_when(backup_file):
    before = utc_now()
    manifest = new_manifest(backup_file, "sqlite", "004", {"users": 3})
    after = utc_now()

    digest, size = backups.file_digest(backup_file)
    assert manifest == {
        "format": 3,
        "tool": TOOL,
        "tool_version": metadata.version(TOOL),
        "engine": "sqlite",
        "created_at": manifest["created_at"],
        "schema_version": "004",
        "row_counts": {"users": 3},
        "sha256": digest,
        "size": size,
        "compressed": False,
        "content_sha256": digest,
        "content_size": size,
        "verified_at": None,
    }
    assert before <= aware(manifest["created_at"]) <= after


def test_a_verified_manifest_verified_when_it_was_made(backup_file):
    manifest = new_manifest(backup_file, "sqlite", "004", {}, verified=True)

    assert manifest["verified_at"] == manifest["created_at"]


def test_a_compressed_backup_records_its_content_apart_from_its_file(backup_file):
    manifest = new_manifest(backup_file, "sqlite", "004", {}, content=("c0ffee", 123_456))

    assert manifest["compressed"] == "zstd"
    assert (manifest["content_sha256"], manifest["content_size"]) == ("c0ffee", 123_456)
    assert (manifest["sha256"], manifest["size"]) == backups.file_digest(backup_file)


def test_a_digest_already_known_is_not_taken_again(backup_file):
    manifest = new_manifest(backup_file, "sqlite", "004", {}, digest=("known", 7))

    assert (manifest["sha256"], manifest["size"]) == ("known", 7)
    assert (manifest["content_sha256"], manifest["content_size"]) == ("known", 7)


DIGEST_KEYS = {"sha256", "size", "content_sha256", "content_size", "checksum_deferred"}


def without_digests(manifest):
    return {k: v for k, v in manifest.items() if k not in DIGEST_KEYS}


def test_a_deferred_checksum_is_taken_at_the_first_verification(backup_file):
    deferred = new_manifest(backup_file, "sqlite", "004", {}, checksum_deferred=True)
    assert deferred["sha256"] is None
    assert deferred["size"] == backup_file.stat().st_size
    assert deferred["checksum_deferred"] is True

    taken = with_deferred_checksum(backup_file, deferred)

    digest, size = backups.file_digest(backup_file)
    assert "checksum_deferred" not in taken
    assert (taken["sha256"], taken["size"]) == (digest, size)
    assert (taken["content_sha256"], taken["content_size"]) == (digest, size)
    assert without_digests(taken) == without_digests(deferred)


def test_a_checksum_not_deferred_is_left_as_it_is(backup_file):
    manifest = new_manifest(backup_file, "sqlite", "004", {})
    compressed = {**manifest, "compressed": "zstd", "checksum_deferred": True}

    assert with_deferred_checksum(backup_file, manifest) is manifest
    assert with_deferred_checksum(backup_file, compressed) is compressed


# --- writing and reading it ---------------------------------------------------------------


def test_the_manifest_sits_beside_its_backup_named_after_it(backup_file):
    assert manifest_path(backup_file) == backup_file.with_name(backup_file.name + ".json")
    assert manifest_path(str(backup_file)) == manifest_path(backup_file)


def test_a_written_manifest_is_private_sorted_json_and_reads_back(backup_file):
    manifest = {"tool": TOOL, "engine": "sqlite", "row_counts": {"users": 3}}

    write_manifest(backup_file, manifest)

    written = manifest_path(backup_file)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert written.read_text(encoding="utf-8") == json.dumps(manifest, indent=2, sort_keys=True)
    assert read_manifest(backup_file) == manifest
    assert sorted(p.name for p in backup_file.parent.iterdir()) == [
        backup_file.name,
        written.name,
    ]  # no file in the making left beside them


def test_a_format_2_manifest_that_spells_postgresql_reads_as_postgres(backup_file):
    """Format 3 names every engine by its key; what format 2 wrote still reads."""
    database = {"engine": "postgresql", "host": "db", "port": 5432, "name": "gallery", "id": None}
    manifest_path(backup_file).write_text(
        json.dumps({"format": 2, "engine": "postgresql", "database": database})
    )

    assert read_manifest(backup_file)["engine"] == "postgres"
    assert backups.Owner.from_manifest(read_manifest(backup_file)).engine == "postgres"


@pytest.mark.parametrize("content", [None, b"{not json", b"[1, 2]", b'"a string"', b"\xff\xfe{}"])
def test_a_missing_or_unreadable_manifest_reads_as_none(backup_file, content):
    if content is not None:
        manifest_path(backup_file).write_bytes(content)

    assert read_manifest(backup_file) is None


def test_a_file_that_matches_its_manifest_has_no_checksum_problem(backup_file):
    manifest = new_manifest(backup_file, "sqlite", "004", {})
    assert checksum_problems(backup_file, manifest) == []

    backup_file.write_bytes(backup_file.read_bytes()[:-1] + b"?")  # same size, one byte off

    assert checksum_problems(backup_file, manifest) == [
        f"{backup_file}: checksum differs from the manifest (damaged or tampered)"
    ]
    same_bytes_other_size = {**manifest, "sha256": backups.file_digest(backup_file)[0], "size": 1}
    assert checksum_problems(backup_file, same_bytes_other_size) != []


def test_marking_a_backup_verified_records_when_on_disk(backup_file):
    on_disk = {**new_manifest(backup_file, "sqlite", "004", {}), "note": "as written"}
    write_manifest(backup_file, on_disk)
    stale = backups.BackupInfo(backup_file, {"tool": TOOL})

    before = utc_now()
    marked = mark_verified(stale)
    after = utc_now()

    assert marked.verified and marked.path == backup_file
    assert read_manifest(backup_file) == marked.manifest
    assert marked.manifest["note"] == "as written"  # the file's manifest, not the stale copy
    assert before <= aware(marked.manifest["verified_at"]) <= after


def test_marking_verified_a_backup_whose_manifest_is_gone_writes_the_one_it_had(backup_file):
    marked = mark_verified(backups.BackupInfo(backup_file, {"tool": TOOL, "engine": "sqlite"}))

    assert read_manifest(backup_file) == {**marked.manifest}
    assert marked.manifest["engine"] == "sqlite" and marked.manifest["verified_at"]


# --- which files are backups --------------------------------------------------------------


def test_only_backup_files_are_listed_hidden_ones_and_folders_left_out(tmp_path):
    names = ["a.db", "b.db.zst", "c.pgdump", "d.sql", "e.sql.zst", "f.db.age", "g.sql.zst.age"]
    for name in [*names, "notes.txt", "h.db.json", ".hidden.db", ".x.db.partial-12"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.db").mkdir()

    listed = list_backups(tmp_path)

    assert sorted(info.path.name for info in listed) == names
    assert all(info.manifest is None for info in listed)


def test_a_missing_folder_has_no_backups(tmp_path):
    assert list_backups(tmp_path / "nowhere") == []
    (tmp_path / "a-file").write_text("")
    assert list_backups(tmp_path / "a-file") == []


def test_a_databases_backups_are_those_this_tool_made_of_it(tmp_path):
    owner = backups.Owner("sqlite", None, None, "/srv/gallery.db", None)
    ours = {"tool": TOOL, "database": owner.as_manifest()}
    for name, manifest in [
        ("ours.db", ours),
        ("other-tool.db", {**ours, "tool": "someone-else"}),
        ("no-tool.db", {"database": owner.as_manifest()}),
        ("other-database.db", {**ours, "database": {**owner.as_manifest(), "name": "/x.db"}}),
    ]:
        (tmp_path / name).write_bytes(b"x")
        write_manifest(tmp_path / name, manifest)
    (tmp_path / "no-manifest.db").write_bytes(b"x")

    assert [info.path.name for info in list_backups(tmp_path, owner)] == ["ours.db"]
    assert len(list_backups(tmp_path)) == 5


# --- a new backup's name ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine_name", "compress", "encrypted", "suffix"),
    [
        ("sqlite", False, False, ".db"),
        ("sqlite", True, False, ".db.zst"),
        ("sqlite", True, True, ".db.zst.age"),
        ("postgres", True, False, ".pgdump"),  # pg_dump's own format is compressed
        ("postgres", False, True, ".pgdump.age"),
        ("mysql", False, False, ".sql"),
        ("mysql", True, False, ".sql.zst"),
    ],
)
def test_a_backup_is_named_after_its_database_the_utc_time_and_its_kind(
    engine_name, compress, encrypted, suffix
):
    before = utc_now()
    name = backup_name(engine_name, compress, prefix="gallery", encrypted=encrypted)
    after = utc_now()

    found = re.fullmatch(r"gallery-(\d{8}T\d{12})Z(\..+)", name)
    assert found, name
    stamp = datetime.datetime.strptime(found.group(1), "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
    assert before <= stamp <= after
    assert found.group(2) == suffix


def test_a_backups_default_name_is_clonegallery_and_unencrypted():
    assert re.fullmatch(r"clonegallery-\d{8}T\d{12}Z\.db", backup_name("sqlite", False))


# --- when a backup was made ---------------------------------------------------------------


def with_mtime(path, text):
    moment = datetime.datetime.fromisoformat(text).timestamp()
    os.utime(path, (moment, moment))
    return path


@pytest.mark.parametrize(
    ("recorded", "made"),
    [
        ("2026-02-01T01:00:00+03:00", "2026-01-31T22:00:00+00:00"),  # said in UTC
        ("2026-02-01T01:00:00", "2025-06-01T12:00:00+00:00"),  # no zone: the file's time
        ("yesterday", "2025-06-01T12:00:00+00:00"),
        (1767225600, "2025-06-01T12:00:00+00:00"),  # not a text
        (None, "2025-06-01T12:00:00+00:00"),
    ],
)
def test_a_backup_was_made_when_its_manifest_says_else_when_its_file_was(
    backup_file, recorded, made
):
    with_mtime(backup_file, "2025-06-01T12:00:00+00:00")
    info = backups.BackupInfo(backup_file, {"created_at": recorded})

    assert created_moment(info) == datetime.datetime.fromisoformat(made)
    assert created_moment(info).tzinfo == UTC
    assert created_at(info) == made


def test_a_backup_without_a_manifest_was_made_when_its_file_was(backup_file):
    with_mtime(backup_file, "2025-06-01T12:00:00+00:00")

    assert created_at(backups.BackupInfo(backup_file, None)) == "2025-06-01T12:00:00+00:00"


def test_a_backups_time_is_said_in_utc_whatever_the_machines_zone(backup_file, new_york_time):
    info = backups.BackupInfo(backup_file, {"created_at": "2026-02-01T01:00:00+03:00"})

    assert created_at(info) == "2026-01-31T22:00:00+00:00"
    with_mtime(backup_file, "2025-06-01T12:00:00+00:00")
    assert created_at(backups.BackupInfo(backup_file, None)) == "2025-06-01T12:00:00+00:00"


def test_a_backups_name_carries_the_utc_time_whatever_the_machines_zone(new_york_time):
    before = utc_now()
    name = backup_name("sqlite", False)
    after = utc_now()

    stamp = datetime.datetime.strptime(name[len("clonegallery-") : -len("Z.db")], "%Y%m%dT%H%M%S%f")
    assert before <= stamp.replace(tzinfo=UTC) <= after
