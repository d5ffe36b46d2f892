"""Encrypted backups on every engine: db.backup --encrypt, db.verify/db.restore --identity.

A backup is compressed (when asked), then encrypted with age to the public keys of
CLONEGALLERY_BACKUP_RECIPIENTS (or db.backup_recipients); it is verified before it is
encrypted, so the machine that makes backups needs no secret key. Reading it back takes
the identity file (--identity, or db.backup_identity). Real keys, files, servers and the
real CLI.
"""

import json
import stat

import pyrage
import pytest

from db import backups
from tests.conftest import one_error_line, printed_path, run_invoke
from tests.snapshots import content


@pytest.fixture
def key_pair(tmp_path):
    """An age identity file (0600) and its public key."""
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / "backup-key.txt"
    path.write_text(f"# a test key\n{identity}\n")
    path.chmod(0o600)
    return path, str(identity.to_public())


@pytest.fixture
def cli(engine_url, backups_dir, key_pair):
    """Run ``invoke ARGS`` on the engine under test, recipients set to the key pair's."""

    def run(*args, env=None, **kwargs):
        environment = {
            "INVOKE_DB_BACKUPS": str(backups_dir),
            "CLONEGALLERY_BACKUP_RECIPIENTS": key_pair[1],
            **(env or {}),
        }
        return run_invoke(*args, url=engine_url, env=environment, **kwargs)

    return run


@pytest.fixture
def gallery_url(engine_url):
    """The seeded sample gallery on the engine under test."""
    result = run_invoke("db.setup", url=engine_url)
    assert result.returncode == 0, result.stderr
    return engine_url


def backup_path(result):
    """Return the backup a db.backup run printed."""
    return printed_path(result, "backup")


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_an_encrypted_backup_verifies_before_encryption_and_restores_with_the_identity(
    cli, engine, gallery_url, key_pair, compress
):
    identity, public = key_pair
    made = cli("db.backup", "--encrypt", "--verify", *(["--compress"] if compress else []))
    path = backup_path(made)
    before = content(gallery_url)

    assert path.name.endswith(".age") and "verified" in made.stdout
    assert path.read_bytes().startswith(b"age-encryption.org/v1\n")
    manifest = json.loads(backups.manifest_path(path).read_text())
    assert manifest["encrypted"] == {"format": "age", "recipients": [public]}
    assert (manifest["sha256"], manifest["size"]) == backups.file_digest(path)
    assert "AGE-SECRET-KEY" not in json.dumps(manifest)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    verified = cli("db.verify", str(path), "--identity", str(identity))
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("OK: ") and "age-encrypted" in verified.stdout

    run_invoke("db.reset", "--yes", "--data-only", url=gallery_url)
    restored = cli("db.restore", str(path), "--yes", "--identity", str(identity))
    assert restored.returncode == 0, restored.stderr
    assert content(gallery_url) == before


def test_reading_an_encrypted_backup_without_the_right_identity_is_one_line(
    cli, engine, gallery_url, tmp_path
):
    path = backup_path(cli("db.backup", "--encrypt"))
    stranger = tmp_path / "someone-else.txt"
    stranger.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    before = content(gallery_url)

    one_error_line(cli("db.verify", str(path)), 2, str(path), "--identity")
    one_error_line(cli("db.restore", str(path), "--yes"), 2, str(path), "--identity")
    wrong = cli("db.restore", str(path), "--yes", "--identity", str(stranger))
    line = one_error_line(wrong, 2, str(stranger))
    assert "AGE-SECRET-KEY" not in line
    missing = cli("db.verify", str(path), "--identity", str(tmp_path / "nowhere.txt"))
    one_error_line(missing, 2, "nowhere.txt")
    assert content(gallery_url) == before


def test_encrypting_without_recipients_is_refused_before_anything_is_written(
    engine_url, backups_dir, gallery_url
):
    env = {"INVOKE_DB_BACKUPS": str(backups_dir), "CLONEGALLERY_BACKUP_RECIPIENTS": ""}
    result = run_invoke("db.backup", "--encrypt", url=engine_url, env=env)
    one_error_line(result, 2, "CLONEGALLERY_BACKUP_RECIPIENTS")
    bad = {**env, "CLONEGALLERY_BACKUP_RECIPIENTS": "age1notakey"}
    one_error_line(run_invoke("db.backup", "--encrypt", url=engine_url, env=bad), 2)
    assert not backups_dir.exists() or list(backups_dir.iterdir()) == []


def test_a_changed_byte_in_an_encrypted_backup_fails_verification(
    cli, engine, gallery_url, key_pair
):
    identity, _ = key_pair
    path = backup_path(cli("db.backup", "--encrypt"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    manifest_file = backups.manifest_path(path)
    manifest = json.loads(manifest_file.read_text())
    manifest["sha256"], manifest["size"] = backups.file_digest(path)  # a forged checksum
    manifest_file.write_text(json.dumps(manifest))

    result = cli("db.verify", str(path), "--identity", str(identity))

    one_error_line(result, 1, str(path))


def test_the_identity_can_come_from_the_configuration(cli, engine, gallery_url, key_pair):
    identity, _ = key_pair
    path = backup_path(cli("db.backup", "--encrypt"))
    result = cli("db.verify", str(path), env={"INVOKE_DB_BACKUP_IDENTITY": str(identity)})
    assert result.returncode == 0, result.stderr
