"""Encryption at rest of backup files with age (https://age-encryption.org), through pyrage.

    recipients = parse_recipients(config_value)      # [Recipient]; ConfigError names the setting
    recipient_labels(recipients)                     # ["age1...", "ssh-ed25519 AAAA..."]: manifest
    digest, size = encrypt_file(plain, target, recipients)    # SHA-256 and size of the ciphertext
    identities = read_identities(Path("backup-key.txt"))      # ConfigError names file and option
    digest, size = decrypt_file(target, plain, identities, manifest_recipients)  # of plaintext
    is_age_file(path)                                # the file starts with an age header

Both file functions write into an *existing* file (created 0600 by ``files.finished_file``),
which keeps its mode, and return the digest of what they wrote, computed on the way: the
caller never reads the result a second time. Streams compose without a temporary file,
compression first (a ciphertext does not compress):

    compressor = zstandard.ZstdCompressor(write_checksum=True)
    encrypt_stream(compressor.stream_reader(plain_reader), output, recipients)
    decrypt_stream(reader, zstandard.ZstdDecompressor().stream_writer(output), identities)

(the stream functions leave flushing, truncating and closing ``output`` to their caller).
Recipients (``db.backup_recipients`` in ``invoke.yaml`` or ``CLONEGALLERY_BACKUP_RECIPIENTS``)
are public keys only: age X25519 keys (``age1...``, from ``age-keygen``) separated by
commas, blanks or newlines, and SSH keys (``ssh-ed25519``/``ssh-rsa``), each alone on its
line or between commas (its comment may follow it). Lines starting with ``#`` are skipped.
The identity file (``--identity`` or ``db.backup_identity``) is age's own format (one
``AGE-SECRET-KEY-1...`` per line, ``#`` comments) or an unencrypted OpenSSH private key.
No message ever shows a secret key, nor any part of one.

age authenticates its header and then its payload in 64 KiB chunks, each checked before
it is released: a changed byte, a cut or an addition anywhere fails the decryption with
one BackupError line naming the file. The chunks before the damage have been written by
then, so a caller discards the target on failure (``finished_file`` does). A key that
does not fit is a ConfigError (exit 2): the backup is sound, the option is wrong. age
cannot tell that from an edited key stanza; given the recipients of the backup's
manifest, ``decrypt_file`` can (an identity whose public key is listed, yet no key fits).

pyrage streams through the file objects it is given (8 KiB reads, 64 KiB writes), so
memory stays flat whatever the size of the file. It turns any exception raised in them
(KeyboardInterrupt, a signal handler's, a full disk) into its own error, and drops an
error of its very last write: every read and write therefore passes through a tap that
keeps the first exception and raises it again, unchanged, once pyrage returns.
"""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pyrage
from pyrage import ssh, x25519

from db.errors import BackupError, ConfigError, one_line

AGE_SUFFIX = ".age"
AGE_MAGIC = b"age-encryption.org/v1\n"
AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
RECIPIENTS_SETTING = "db.backup_recipients in invoke.yaml or CLONEGALLERY_BACKUP_RECIPIENTS"
IDENTITY_SETTING = "--identity or db.backup_identity"
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa")
MAX_IDENTITY_BYTES = 64 * 1024  # an identity file is a few lines; a backup given by mistake is not
SHOWN_CHARS = 16

# pyrage's decryption errors are strings; each known one, and what it means for the file.
DECRYPT_FAILURES = (
    ("Incomplete header", "stops short in its age header (truncated file)"),
    ("failed to fill whole buffer", "stops short in its age header (truncated file)"),
    ("Header MAC is invalid", "its age header was edited or damaged"),
    ("Header is invalid", "its age header was edited or damaged"),
    ("Unknown age format", "its age header was edited or damaged"),
    ("age file is truncated", "the age-encrypted data stops short (truncated file)"),
    ("last chunk has been processed", "has data after the end of its age-encrypted data"),
    ("decryption error", "fails age authentication: damaged, cut short or edited"),
)


@dataclass(frozen=True)
class Recipient:
    """A public key to encrypt to: its text (for manifests) and pyrage's object."""

    label: str
    key: object


@dataclass(frozen=True)
class Identities:
    """The secret keys of one identity file, the file (for messages), and the public keys
    of its age keys (an SSH private key does not tell its public key here)."""

    path: Path
    keys: tuple
    public_labels: frozenset = frozenset()


def parse_recipients(value, setting=RECIPIENTS_SETTING):
    """Return the Recipients named by a setting's text (or list of texts), without repeats."""
    texts = [value] if isinstance(value, str) else [str(text) for text in value or []]
    _refuse_secret_keys(texts, setting)
    recipients = {}
    for entry in _recipient_entries(texts):
        recipient = _parse_recipient(entry, setting)
        recipients.setdefault(recipient.label, recipient)
    if not recipients:
        raise ConfigError(
            f"encryption needs at least one recipient: set {setting} to age public keys "
            "(age1..., from age-keygen) or SSH public keys (ssh-ed25519/ssh-rsa)"
        )
    return list(recipients.values())


def recipient_labels(recipients):
    """Return the public keys of ``recipients`` as text, as a manifest records them."""
    return [recipient.label for recipient in recipients]


def read_identities(path, setting=IDENTITY_SETTING):
    """Read the secret keys of an age identity file (or an OpenSSH private key file)."""
    path = Path(path).expanduser()
    content = _identity_file_content(path, setting)
    if content.lstrip().startswith(b"-----BEGIN"):
        keys = [_ssh_identity(content, path, setting)]
    else:
        keys = _age_identities(content, path, setting)
    if not keys:
        raise ConfigError(
            f"identity file {path} holds no key (expected AGE-SECRET-KEY-1... lines); "
            f"give the file that decrypts the backups with {setting}"
        )
    public = frozenset(str(key.to_public()) for key in keys if isinstance(key, x25519.Identity))
    return Identities(path, tuple(keys), public)


def encrypt_file(source, target, recipients):
    """Write ``source`` age-encrypted into the existing file ``target``; return the
    (SHA-256, size) of the ciphertext written."""
    with _opened(source, "rb") as reader, _opened(target, "r+b") as output:
        written = encrypt_stream(reader, output, recipients, source, target)
        _truncate(output, target)
    return written


def decrypt_file(source, target, identities, recipients=()):
    """Write the age file ``source`` decrypted into the existing file ``target``; return
    the (SHA-256, size) of the plaintext written.

    ``recipients``: the labels the backup's manifest lists, if any; when one is the
    public key of an identity that still cannot decrypt, the header was edited."""
    with _opened(source, "rb") as reader, _opened(target, "r+b") as output:
        written = decrypt_stream(reader, output, identities, recipients, source, target)
        _truncate(output, target)
    return written


def encrypt_stream(reader, output, recipients, source_name=None, output_name=None):
    """Read ``reader`` to its end, writing it age-encrypted into ``output``; return the
    (SHA-256, size) of what was written."""
    keys = [recipient.key for recipient in recipients]
    if not keys:
        raise ConfigError(f"encryption needs at least one recipient: set {RECIPIENTS_SETTING}")
    source = _ReadTap(reader, _name_of(reader, source_name))
    sink = _WriteTap(output, _name_of(output, output_name))
    try:
        pyrage.encrypt_io(source, sink, keys)
    except pyrage.EncryptError as exc:
        _raise_kept(source, sink)
        raise BackupError(f"{sink.name}: age encryption failed ({exc})") from exc
    _raise_kept(source, sink)
    return sink.digest.hexdigest(), sink.size


def decrypt_stream(reader, output, identities, recipients=(), source_name=None, output_name=None):
    """Read the age-encrypted ``reader`` to its end, writing the plaintext into
    ``output``; return the (SHA-256, size) of what was written (``recipients``: as for
    decrypt_file)."""
    source = _ReadTap(reader, _name_of(reader, source_name))
    sink = _WriteTap(output, _name_of(output, output_name))
    try:
        pyrage.decrypt_io(source, sink, list(identities.keys))
    except Exception as exc:  # DecryptError, or OSError for a damaged chunk
        _raise_kept(source, sink)
        raise _decryption_failure(source, identities, recipients, exc) from exc
    _raise_kept(source, sink)
    return sink.digest.hexdigest(), sink.size


def is_age_file(path):
    """Tell whether the file at ``path`` starts with an age header (binary or armored)."""
    with open(path, "rb") as stream:
        return _has_age_header(stream.read(len(AGE_ARMOR)))


class _ReadTap:
    """The reader pyrage reads: keeps the first exception and the file's first bytes."""

    def __init__(self, stream, name):
        self.stream, self.name = stream, name
        self.head, self.error = b"", None

    def read(self, size=-1):
        try:
            data = self.stream.read(size)
        except BaseException as exc:
            self.error = self.error or exc
            raise
        if len(self.head) < len(AGE_ARMOR):
            self.head += data[: len(AGE_ARMOR) - len(self.head)]
        return data


class _WriteTap:
    """The writer pyrage writes: hashes and counts what it writes, keeps the first
    exception."""

    def __init__(self, stream, name):
        self.stream, self.name = stream, name
        self.digest, self.size, self.error = hashlib.sha256(), 0, None

    def write(self, data):
        try:
            written = self.stream.write(data)
        except BaseException as exc:
            self.error = self.error or exc
            raise
        # A raw file may write less than it was given (pyrage writes the rest again);
        # a buffered one returns the whole length, or None for some file-likes.
        written = len(data) if written is None else written
        self.digest.update(data[:written])
        self.size += written
        return written


def _raise_kept(source, sink):
    """Raise again what a read or write raised inside pyrage: an OSError as a BackupError
    naming its file, anything else (KeyboardInterrupt...) as it was."""
    for tap, verb in ((source, "read"), (sink, "write")):
        if tap.error is None:
            continue
        if isinstance(tap.error, OSError):
            reason = tap.error.strerror or tap.error
            raise BackupError(f"cannot {verb} {tap.name}: {reason}") from tap.error
        raise tap.error


def _decryption_failure(source, identities, recipients, exc):
    """Return the error that says why ``source`` could not be decrypted."""
    message = str(exc)
    if not _has_age_header(source.head):
        return BackupError(f"{source.name}: not an age-encrypted file (no age header)")
    if "No matching keys found" in message:
        # age cannot tell a key that does not fit from an edited key stanza; the
        # manifest's recipients can.
        if identities.public_labels & set(recipients):
            return BackupError(f"{source.name}: its age header was edited or damaged")
        return ConfigError(
            f"{source.name}: no key in identity file {identities.path} can decrypt it "
            "(encrypted to other recipients, or its header was edited); "
            f"give the right identity file with {IDENTITY_SETTING}"
        )
    for known, meaning in DECRYPT_FAILURES:
        if known in message:
            return BackupError(f"{source.name}: {meaning}")
    return BackupError(f"{source.name}: cannot be decrypted ({one_line(exc)})")


def _has_age_header(head):
    return head.startswith(AGE_MAGIC) or head.startswith(AGE_ARMOR)


def _refuse_secret_keys(texts, setting):
    """Refuse a setting that holds a secret key, before any part of it is shown."""
    for text in texts:
        if "AGE-SECRET-KEY-" in text.upper():
            raise ConfigError(
                f"{setting} holds an age secret key: recipients are public keys (age1..., "
                "'age-keygen -y FILE' prints it); keep the secret key out of the configuration"
            )
        if "PRIVATE KEY" in text:
            raise ConfigError(
                f"{setting} holds a private key: recipients are public keys (age1... or the "
                "ssh-ed25519/ssh-rsa line of a .pub file)"
            )


def _recipient_entries(texts):
    """Yield each recipient text of a setting: split at newlines and commas, then an
    SSH key (with its comment) as one entry, age keys at blanks."""
    for text in texts:
        for segment in re.split(r"[\n,]", text):
            segment = segment.strip()
            if not segment or segment.startswith("#"):
                continue
            if segment.startswith("ssh-") or segment.startswith("ecdsa-"):
                yield segment
            else:
                yield from segment.split()


def _parse_recipient(entry, setting):
    """Return the Recipient of one public key's text; ConfigError when it is not one."""
    try:
        if entry.startswith(("ssh-", "ecdsa-")):
            label = " ".join(entry.split()[:2])  # the comment (often an address) stays out
            return Recipient(label, ssh.Recipient.from_str(label))
        key = x25519.Recipient.from_str(entry)
        return Recipient(str(key), key)
    except pyrage.RecipientError as exc:
        raise ConfigError(
            f"{setting}: {_shortened(entry)!r} is not an age public key (age1...) "
            f"nor an SSH public key ({'/'.join(SSH_KEY_TYPES)})"
        ) from exc


def _shortened(text):
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def _identity_file_content(path, setting):
    """Return the bytes of an identity file; ConfigError when it cannot be one."""
    try:
        with open(path, "rb") as stream:
            content = stream.read(MAX_IDENTITY_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"identity file {path} does not exist; {setting} names the age identity file "
            "(AGE-SECRET-KEY-1...) that decrypts the backups"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read identity file {path}: {exc.strerror or exc} ({setting})"
        ) from None
    if len(content) > MAX_IDENTITY_BYTES:
        raise ConfigError(f"{path} is too big to be an identity file ({setting})")
    return content


def _age_identities(content, path, setting):
    """Return the X25519 identities of an age identity file's lines."""
    try:
        lines = content.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(
            f"identity file {path} is not text: not an age identity file ({setting})"
        ) from None
    keys = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keys.append(_age_identity(line, f"identity file {path} line {number}", setting))
    return keys


def _age_identity(line, where, setting):
    """Return the identity of one line (the line itself never appears in a message)."""
    if line.startswith("age1"):
        raise ConfigError(
            f"{where} is a public key (age1...): the identity file holds the secret key "
            f"(AGE-SECRET-KEY-1...) ({setting})"
        )
    if line.startswith("AGE-PLUGIN-"):
        raise ConfigError(f"{where} is an age plugin identity: not supported ({setting})")
    try:
        return x25519.Identity.from_str(line)
    except pyrage.IdentityError:
        raise ConfigError(
            f"{where} is not an age secret key (AGE-SECRET-KEY-1...) ({setting})"
        ) from None


def _ssh_identity(content, path, setting):
    """Return the identity of an OpenSSH private key file."""
    try:
        return ssh.Identity.from_buffer(content)
    except pyrage.IdentityError as exc:
        if "decrypted first" in str(exc):
            reason = "is protected by a passphrase; use an unprotected copy or an age identity"
        else:
            reason = "is not an SSH private key age can use (ed25519 or RSA)"
        raise ConfigError(f"identity file {path} {reason} ({setting})") from None


class _opened:
    """open(), with a failure to open as a BackupError naming the file."""

    def __init__(self, path, mode):
        self.path, self.mode = path, mode

    def __enter__(self):
        try:
            self.stream = open(self.path, self.mode)  # closed in __exit__
        except OSError as exc:
            verb = "read" if self.mode == "rb" else "write"
            raise BackupError(f"cannot {verb} {self.path}: {exc.strerror or exc}") from exc
        return self.stream

    def __exit__(self, exc_type, exc, traceback):
        try:
            self.stream.close()  # flushes what is buffered: a full disk may show only here
        except OSError as close_error:
            if exc is None:
                raise BackupError(
                    f"cannot write {self.path}: {close_error.strerror or close_error}"
                ) from close_error
            # Already failing: the first error is the one to tell.


def _truncate(output, name):
    """Cut what a longer former content left after the end of what was written."""
    try:
        output.truncate()
    except OSError as exc:
        raise BackupError(f"cannot write {name}: {exc.strerror or exc}") from exc


def _name_of(stream, name):
    return str(name if name is not None else getattr(stream, "name", "the stream"))
