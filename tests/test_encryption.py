"""Encryption at rest (db/backups/encryption.py): real age encryption through pyrage,
real files, real keys (age X25519 from pyrage, SSH from ssh-keygen)."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import zstandard
from pyrage import x25519

from db.backups.encryption import (
    decrypt_file,
    decrypt_stream,
    encrypt_file,
    encrypt_stream,
    is_age_file,
    parse_recipients,
    read_identities,
    recipient_labels,
)
from db.backups.files import create_private, file_digest
from db.errors import BackupError, ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
AGE_CHUNK = 64 * 1024
MARKER = b"CloneGallery plaintext marker "


def write_content(path, size):
    """Write ``size`` bytes of varied content (a marker, then random) into ``path``."""
    with open(path, "wb") as stream:
        block = (MARKER + os.urandom(MIB))[:MIB]
        while size > 0:
            stream.write(block[:size])
            size -= len(block)
    return path


def private_file(path):
    create_private(path)
    return path


@pytest.fixture
def identity():
    return x25519.Identity.generate()


@pytest.fixture
def recipients(identity):
    return parse_recipients(str(identity.to_public()))


@pytest.fixture
def identity_file(tmp_path, identity):
    path = tmp_path / "backup-key.txt"
    path.write_text(f"# created: today\n# public key: {identity.to_public()}\n{identity}\n")
    return path


@pytest.fixture
def encrypted(tmp_path, recipients):
    """An age file of 5 chunks and a bit, and the plaintext it holds."""
    plain = write_content(tmp_path / "plain.db", 5 * AGE_CHUNK + 123)
    cipher = private_file(tmp_path / "plain.db.age")
    encrypt_file(plain, cipher, recipients)
    return cipher, plain


def one_line(excinfo, error_class, *names):
    """Assert the error is exactly ``error_class`` with a one-line message naming each of
    ``names``; return the message."""
    assert type(excinfo.value) is error_class, excinfo.value
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message, message
    for name in names:
        assert str(name) in message, f"{name!r} not named in {message!r}"
    return message


def ssh_key(folder, name="id_ed25519", passphrase=""):
    """Create an OpenSSH ed25519 key pair with ssh-keygen; return (private path, public line)."""
    private = folder / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "ops@example.org",
         "-f", str(private)],
        check=True,
    )  # fmt: skip
    return private, (folder / f"{name}.pub").read_text().strip()


# Round trips


@pytest.mark.parametrize("size", [0, 1, AGE_CHUNK, AGE_CHUNK + 1, 3 * MIB + 7])
def test_a_round_trip_gives_back_every_byte(tmp_path, recipients, identity_file, size):
    plain = write_content(tmp_path / "plain.db", size)
    cipher = private_file(tmp_path / "plain.db.age")
    back = private_file(tmp_path / "back.db")

    assert encrypt_file(plain, cipher, recipients) == file_digest(cipher)
    assert decrypt_file(cipher, back, read_identities(identity_file)) == file_digest(plain)

    assert back.read_bytes() == plain.read_bytes()
    assert is_age_file(cipher)
    assert cipher.stat().st_size > size  # header and a tag per chunk
    if size > len(MARKER):
        assert MARKER not in cipher.read_bytes()


def test_a_file_bigger_than_every_buffer_streams_through(tmp_path, recipients, identity_file):
    plain = write_content(tmp_path / "plain.db", 24 * MIB + 5)
    cipher = private_file(tmp_path / "plain.db.age")
    back = private_file(tmp_path / "back.db")

    cipher_digest = encrypt_file(plain, cipher, recipients)
    plain_digest = decrypt_file(cipher, back, read_identities(identity_file))

    assert cipher_digest == file_digest(cipher)
    assert plain_digest == file_digest(plain) == file_digest(back)


def test_the_target_keeps_its_private_mode_and_nothing_of_its_former_content(
    tmp_path, recipients, identity_file
):
    plain = write_content(tmp_path / "plain.db", 100_000)
    cipher = private_file(tmp_path / "plain.db.age")
    cipher.write_bytes(b"older and longer content " * 100_000)
    back = private_file(tmp_path / "back.db")
    back.write_bytes(b"older and longer content " * 100_000)

    written = encrypt_file(plain, cipher, recipients)
    decrypt_file(cipher, back, read_identities(identity_file))

    assert written[1] == cipher.stat().st_size
    assert back.read_bytes() == plain.read_bytes()
    for path in (cipher, back):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_memory_stays_flat_whatever_the_size_of_the_file(tmp_path, identity, identity_file):
    # A child process, so that its peak resident size is this work's alone; pyrage's
    # buffers are in Rust, out of tracemalloc's sight.
    plain = write_content(tmp_path / "plain.db", 64 * MIB)
    script = textwrap.dedent(f"""
        import resource, sys
        from db.backups.encryption import (
            decrypt_file, encrypt_file, parse_recipients, read_identities)
        from db.backups.files import create_private
        recipients = parse_recipients({str(identity.to_public())!r})
        identities = read_identities({str(identity_file)!r})
        for path in ({str(tmp_path / "c")!r}, {str(tmp_path / "p")!r}):
            create_private(path)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        encrypt_file({str(plain)!r}, {str(tmp_path / "c")!r}, recipients)
        decrypt_file({str(tmp_path / "c")!r}, {str(tmp_path / "p")!r}, identities)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
        check=True, timeout=120,
    )  # fmt: skip

    growth_kib = int(result.stdout)
    assert growth_kib < 8 * 1024, f"peak memory grew by {growth_kib} KiB for a 64 MiB file"
    assert file_digest(tmp_path / "p") == file_digest(plain)


def test_compression_then_encryption_composes_in_one_pass(tmp_path, recipients, identity_file):
    plain = tmp_path / "plain.sql"
    plain.write_bytes(b"INSERT INTO images VALUES (1, 'a sunset');\n" * 50_000)
    cipher = private_file(tmp_path / "plain.sql.zst.age")
    back = private_file(tmp_path / "back.sql")

    with open(plain, "rb") as reader, open(cipher, "r+b") as output:
        compressed = zstandard.ZstdCompressor(write_checksum=True).stream_reader(reader)
        encrypt_stream(compressed, output, recipients)
    with open(cipher, "rb") as reader, open(back, "r+b") as output:
        decompressor = zstandard.ZstdDecompressor().stream_writer(output, closefd=False)
        decrypt_stream(reader, decompressor, read_identities(identity_file))
        decompressor.flush()

    assert cipher.stat().st_size < plain.stat().st_size / 20
    assert back.read_bytes() == plain.read_bytes()


# Recipients and identities


def test_each_of_two_recipients_can_decrypt_alone(tmp_path, identity, identity_file):
    ssh_private, ssh_public = ssh_key(tmp_path)
    setting = f"{identity.to_public()},\n{ssh_public}\n"
    plain = write_content(tmp_path / "plain.db", MIB + 3)
    cipher = private_file(tmp_path / "plain.db.age")

    encrypt_file(plain, cipher, parse_recipients(setting))

    for key_file in (identity_file, ssh_private):
        back = private_file(tmp_path / f"back-{key_file.name}")
        decrypt_file(cipher, back, read_identities(key_file))
        assert back.read_bytes() == plain.read_bytes()


def test_recipients_are_read_from_text_or_a_list_and_labelled_by_their_public_key(tmp_path):
    first, second = (str(x25519.Identity.generate().to_public()) for _ in range(2))
    _, ssh_public = ssh_key(tmp_path)
    ssh_type, ssh_blob, _comment = ssh_public.split()
    expected = [first, second, f"{ssh_type} {ssh_blob}"]

    texts = [
        f"{first} {second}, {ssh_public}",
        f"# ops team\n{first}\n{second}\n\n{ssh_public}\n{first}\n",
        [first, f"{second} ", ssh_public],
    ]

    for text in texts:
        assert recipient_labels(parse_recipients(text)) == expected


def test_a_secret_key_is_never_taken_for_a_recipient_nor_shown(tmp_path, identity):
    secret = str(identity)
    ssh_private = ssh_key(tmp_path)[0].read_text()
    pasted = {
        "an age secret key": (f"{identity.to_public()}, {secret}", "secret key"),
        "one in lower case": ([str(identity.to_public()), secret.lower()], "secret key"),
        "an SSH private key": (f"{identity.to_public()}\n{ssh_private}", "private key"),
    }

    for value, said in pasted.values():
        with pytest.raises(ConfigError) as excinfo:
            parse_recipients(value)

        message = one_line(excinfo, ConfigError, "CLONEGALLERY_BACKUP_RECIPIENTS", said)
        assert "-----" not in message
        assert secret[len("AGE-SECRET-KEY-1") :][:6].lower() not in message.lower()


@pytest.mark.parametrize(
    "value, shown",
    [
        ("age1notakey", "age1notakey"),
        ("backup-team@example.org", "backup-team@exam..."),
        ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAy", "ecdsa-sha2-nistp..."),
        ("ssh-ed25519 AAAAtruncated me@host", "ssh-ed25519 AAAA..."),
    ],
)
def test_a_recipient_that_is_not_a_public_key_is_named_with_the_setting(identity, value, shown):
    with pytest.raises(ConfigError) as excinfo:
        parse_recipients(f"{identity.to_public()}\n{value}")

    one_line(excinfo, ConfigError, shown, "db.backup_recipients", "CLONEGALLERY_BACKUP_RECIPIENTS")


@pytest.mark.parametrize("value", [None, "", " \n, ", "# nobody yet\n", []])
def test_encrypting_to_nobody_is_refused(value):
    with pytest.raises(ConfigError) as excinfo:
        parse_recipients(value)

    one_line(excinfo, ConfigError, "at least one recipient", "db.backup_recipients")


def write_identity_problem(tmp_path, problem, identity):
    """Return the path of an identity file with ``problem``."""
    path = tmp_path / "key.txt"
    if problem == "missing":
        return path
    if problem == "a folder":
        path.mkdir()
    elif problem == "unreadable":
        path.write_text(f"{identity}\n")
        path.chmod(0)
    elif problem == "a passphrase-protected SSH key":
        path = ssh_key(tmp_path, "protected", passphrase="correct horse")[0]
    else:
        path.write_bytes(
            {
                "empty": b"",
                "comments only": b"# created: today\n\n",
                "garbage": f"# key\n{str(identity)[:-3]}xyz\n".encode(),
                "a public key": f"{identity.to_public()}\n".encode(),
                "binary": os.urandom(512),
                "a backup given by mistake": os.urandom(200_000),
            }[problem]
        )
    return path


@pytest.mark.parametrize(
    "problem, said",
    [
        ("missing", "does not exist"),
        ("a folder", "Is a directory"),
        ("unreadable", "Permission denied"),
        ("empty", "holds no key"),
        ("comments only", "holds no key"),
        ("garbage", "line 2 is not an age secret key"),
        ("a public key", "line 1 is a public key"),
        ("binary", "not"),
        ("a backup given by mistake", "too big"),
        ("a passphrase-protected SSH key", "passphrase"),
    ],
)
def test_an_unusable_identity_file_is_one_line_naming_it_and_the_option(
    tmp_path, identity, problem, said
):
    path = write_identity_problem(tmp_path, problem, identity)
    if problem == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads any file")

    with pytest.raises(ConfigError) as excinfo:
        read_identities(path)

    message = one_line(excinfo, ConfigError, path, said, "--identity", "db.backup_identity")
    assert str(identity)[len("AGE-SECRET-KEY-1") :][:6] not in message


def test_a_key_that_does_not_fit_names_the_backup_and_the_identity_file(tmp_path, encrypted):
    cipher, _ = encrypted
    stranger = tmp_path / "stranger.txt"
    stranger.write_text(f"{x25519.Identity.generate()}\n")
    back = private_file(tmp_path / "back.db")

    with pytest.raises(ConfigError) as excinfo:
        decrypt_file(cipher, back, read_identities(stranger))

    one_line(excinfo, ConfigError, cipher, stranger, "no key", "--identity")
    assert back.read_bytes() == b""


# Damaged, edited and foreign files


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def other_base64_letter(path, offset):
    """Put another base64 letter at ``offset`` (a flipped bit may make no letter at all)."""
    data = bytearray(path.read_bytes())
    data[offset] = ord("B") if data[offset] == ord("A") else ord("A")
    path.write_bytes(bytes(data))


def cut(path, size):
    with open(path, "r+b") as stream:
        stream.truncate(size)


def header_size(path):
    """Return the size of an age file's header (up to its MAC line's end)."""
    data = path.read_bytes()
    return data.index(b"\n", data.index(b"\n--- ") + 1) + 1


def mac_offset(path):
    """Return the offset of a byte of an age header's MAC."""
    return path.read_bytes().index(b"\n--- ") + 10


def stanza_offset(path):
    """Return the offset of a byte of the key wrapped for the first recipient."""
    return path.read_bytes().index(b"\n", len(b"age-encryption.org/v1\n")) + 5


DAMAGE = {
    "a byte changed in the middle": (
        lambda path: flip_byte(path, path.stat().st_size // 2), "fails age authentication"),
    "a byte changed in the last chunk": (lambda path: flip_byte(path, -5), "authentication"),
    "a byte changed in the header's MAC": (
        lambda path: flip_byte(path, mac_offset(path)), "header was edited"),
    "a byte changed in the magic": (lambda path: flip_byte(path, 2), "not an age-encrypted"),
    "a byte changed in the version": (lambda path: flip_byte(path, 20), "not an age-encrypted"),
    "cut in the middle of a chunk": (
        lambda path: cut(path, path.stat().st_size // 2), "authentication"),
    "cut at a chunk boundary": (
        lambda path: cut(path, header_size(path) + 16 + 2 * (AGE_CHUNK + 16)), "truncated"),
    "cut after the header": (lambda path: cut(path, header_size(path)), "truncated"),
    "cut in the header": (lambda path: cut(path, 60), "truncated"),
    "bytes appended": (
        lambda path: path.write_bytes(path.read_bytes() + b"DROP"), "authentication"),
}  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_or_edited_age_file_fails_in_one_line_naming_it(
    tmp_path, encrypted, identity_file, damage
):
    cipher, _ = encrypted
    harm, said = DAMAGE[damage]
    harm(cipher)
    back = private_file(tmp_path / "back.db")

    with pytest.raises(BackupError) as excinfo:
        decrypt_file(cipher, back, read_identities(identity_file))

    one_line(excinfo, BackupError, cipher, said)


@pytest.mark.parametrize("content", [b"", b"SQLite format 3\x00" + os.urandom(5000)])
def test_a_file_that_is_not_age_encrypted_is_named(tmp_path, identity_file, content):
    plain = tmp_path / "backup.db"
    plain.write_bytes(content)
    back = private_file(tmp_path / "back.db")

    assert not is_age_file(plain)
    with pytest.raises(BackupError) as excinfo:
        decrypt_file(plain, back, read_identities(identity_file))

    one_line(excinfo, BackupError, plain, "not an age-encrypted file")


def test_a_missing_source_or_target_is_named(tmp_path, recipients, encrypted, identity_file):
    cipher, _ = encrypted
    identities = read_identities(identity_file)

    with pytest.raises(BackupError) as excinfo:
        encrypt_file(tmp_path / "gone.db", private_file(tmp_path / "out.age"), recipients)
    one_line(excinfo, BackupError, "gone.db", "cannot read")

    with pytest.raises(BackupError) as excinfo:
        decrypt_file(cipher, tmp_path / "no-such-folder" / "back.db", identities)
    one_line(excinfo, BackupError, "back.db", "cannot write")


# The process around pyrage: full disks and signals


def run_limited(script, limit):
    """Run ``script`` in a fresh Python from the project; ``limit`` (an expression of the
    script's names) becomes its file size limit before ``# limited`` (a write past it
    fails with EFBIG, as on a full disk)."""
    preamble = "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    limited = f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))"
    script = preamble + textwrap.dedent(script).replace("# limited", limited)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


ENCRYPT_INTO = {
    # pyrage drops an error of its last write (a Rust BufWriter of 8 KiB flushed on drop):
    # into an unbuffered stream, that write is the file's last chunk, after 4 full ones.
    "a raw stream": """
        with open(plain, "rb") as reader, open(cipher, "wb", buffering=0) as output:
            encrypt_stream(reader, output, recipients)
    """,
    # Through Python's buffered file, the last chunk stays in its buffer until the end.
    "a file": """
        create_private(cipher)
        encrypt_file(plain, cipher, recipients)
    """,
}


@pytest.mark.parametrize("into", ENCRYPT_INTO)
def test_a_full_disk_at_the_last_write_is_an_error_not_a_short_file(tmp_path, identity, into):
    plain = write_content(tmp_path / "plain.db", 4 * AGE_CHUNK + 8000)
    cipher = tmp_path / "plain.db.age"
    script = f"""
        import pyrage
        from db.backups.encryption import encrypt_file, encrypt_stream, parse_recipients
        from db.backups.files import create_private
        from db.errors import BackupError
        plain, cipher = {str(plain)!r}, {str(cipher)!r}
        recipients = parse_recipients({str(identity.to_public())!r})
        full_size = len(pyrage.encrypt(open(plain, "rb").read(), [recipients[0].key]))
        # limited
        try:
{textwrap.indent(textwrap.dedent(ENCRYPT_INTO[into]), " " * 12)}
        except BackupError as exc:
            print("BackupError:", exc)
    """
    # The limit falls in the last chunk whatever the length of age's random grease stanza.
    result = run_limited(script, "full_size - 4000")

    assert result.stdout.strip() == f"BackupError: cannot write {cipher}: File too large", (
        result.stdout,
        result.stderr,
    )


def test_a_full_disk_while_decrypting_names_the_target(tmp_path, encrypted, identity_file):
    cipher, _ = encrypted
    back = private_file(tmp_path / "back.db")
    script = f"""
        from db.backups.encryption import decrypt_file, read_identities
        from db.errors import BackupError
        identities = read_identities({str(identity_file)!r})
        # limited
        try:
            decrypt_file({str(cipher)!r}, {str(back)!r}, identities)
        except BackupError as exc:
            print("BackupError:", exc)
    """
    result = run_limited(script, "100_000")

    assert result.stdout.strip() == f"BackupError: cannot write {back}: File too large", (
        result.stdout,
        result.stderr,
    )


def test_a_signal_during_encryption_raises_its_own_exception(tmp_path, recipients):
    # pyrage would turn an exception raised inside its reads into an EncryptError; a
    # caller stopping on SIGTERM or Ctrl-C must see its own exception. The reader is a
    # pipe that never ends, so the signal always comes mid-encryption.
    class Stopped(Exception):
        pass

    def stop(signum, frame):
        raise Stopped

    read_end, write_end = os.pipe()
    os.write(write_end, b"some data, then the writer never closes")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with (
            open(read_end, "rb") as reader,
            open(tmp_path / "out.age", "wb") as output,
            pytest.raises(Stopped),
        ):
            encrypt_stream(reader, output, recipients)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.close(write_end)


def test_an_edited_key_stanza_is_told_from_a_wrong_key_by_the_manifests_recipients(
    tmp_path, encrypted, identity_file, recipients
):
    # age cannot tell them apart: the identity's key fails to unwrap either way.
    cipher, _ = encrypted
    other_base64_letter(cipher, stanza_offset(cipher))  # still a well-formed header
    back = private_file(tmp_path / "back.db")
    identities = read_identities(identity_file)

    with pytest.raises(BackupError) as excinfo:
        decrypt_file(cipher, back, identities, recipient_labels(recipients))
    one_line(excinfo, BackupError, cipher, "header was edited")

    with pytest.raises(ConfigError) as excinfo:
        decrypt_file(cipher, back, identities)
    one_line(excinfo, ConfigError, cipher, identity_file, "or its header was edited")
