"""Files that are either complete or absent: private, written under a temporary name,
fsynced, then renamed; and the zstd codec for compressed backups.

    with finished_file(target) as partial:     # partial exists, empty, mode 0600
        write_into(partial)
    # target now exists, complete; after a failure, neither exists

zstd (the ``zstandard`` binding) compresses at several hundred MB/s per core, on
every core at once, and decompresses faster still, at a ratio close to gzip -9:
the right trade for a backup that must not take longer than the copy it replaces.
"""

import errno
import hashlib
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import zstandard

from db.errors import BackupError

CHUNK_BYTES = 1 << 20
# Reading and hashing a whole file: fewer, larger system calls.
WHOLE_FILE_CHUNK_BYTES = 4 << 20
ZSTD_LEVEL = 3
ZSTD_SUFFIX = ".zst"


@contextmanager
def finished_file(target):
    """Yield a private temporary path beside ``target``; rename it to ``target`` once
    the block succeeds, delete it when the block fails."""
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        create_private(partial)
        yield partial
        fsync(partial)
        os.replace(partial, target)
        fsync_folder(target.parent)
    finally:
        with suppress(FileNotFoundError):
            partial.unlink()


# What finished_file calls a file in the making: ".NAME.partial-PID", maybe with a suffix
# (".plain": the uncompressed copy beside a file being compressed).
PARTIAL_NAME = re.compile(r"^\..+\.partial-(\d+)(\.[a-z]+)?$")


def remove_leftovers(folder):
    """Delete the files in the making that killed runs left in ``folder`` (those whose
    process is gone; a run still going keeps its own); return their paths."""
    removed = []
    for path in Path(folder).glob(".*.partial-*"):
        found = PARTIAL_NAME.match(path.name)
        if found and not _process_alive(int(found.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def create_private(path):
    """Create ``path`` empty and 0600 before anything is written into it (whatever the
    umask), refusing to reuse an existing file."""
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def file_digest(path):
    """Return (SHA-256 hex digest, size) of a file, read in chunks."""
    with open(path, "rb", buffering=0) as stream:
        return stream_digest(stream)


def stream_digest(stream):
    """Return (SHA-256 hex digest, size) of what is left to read in a binary stream."""
    digest, size = hashlib.sha256(), 0
    buffer = bytearray(WHOLE_FILE_CHUNK_BYTES)
    while count := stream.readinto(buffer):
        digest.update(memoryview(buffer)[:count])
        size += count
    return digest.hexdigest(), size


@contextmanager
def hashed_copy(source, target, patches=()):
    """Copy ``source`` into the existing file ``target``, reading each byte of it once;
    yield a Future of the (SHA-256, size) of what was written into ``target``. The copy
    is complete when the block starts, and may be read there while the hash finishes.
    ``patches`` are (offset, bytes) written over the copy's first chunk before it is
    hashed (a header to change).

    Hashing what was written (not the source apart) is what proves the copy: a write
    that fails (a full disk) raises OSError here instead of going unnoticed. On Linux
    the kernel copies each chunk (no trip through Python) while a second thread hashes
    the chunk before it, as written, from the page cache; elsewhere each chunk is read,
    hashed and written in turn.
    """
    with (
        open(source, "rb", buffering=0) as reader,
        open(target, "r+b", buffering=0) as writer,
        ThreadPoolExecutor(max_workers=1) as hasher,  # one worker: chunks hashed in order
    ):
        if hasattr(os, "sendfile") and sys.platform == "linux":
            content = _copied_in_kernel(reader.fileno(), writer.fileno(), hasher, patches)
        else:
            content = hasher.submit(_copied_through_buffer, reader, writer, patches)
            content.result()
        yield content


def _copied_in_kernel(source, target, hasher, patches):
    digest, size, hashed = hashlib.sha256(), 0, []
    while sent := os.sendfile(target, source, size, WHOLE_FILE_CHUNK_BYTES):
        if size == 0:
            for offset, data in patches:
                os.pwrite(target, data, offset)
        hashed.append(hasher.submit(_hash_written, digest, target, size, sent))
        size += sent
    os.ftruncate(target, size)

    def result():
        for chunk in hashed:  # all done by now: they ran before, in order
            chunk.result()
        return digest.hexdigest(), size

    return hasher.submit(result)


def _hash_written(digest, descriptor, offset, length):
    while length:
        chunk = os.pread(descriptor, length, offset)
        if not chunk:
            raise OSError(errno.EIO, "the copy is shorter than what was written into it")
        digest.update(chunk)
        offset, length = offset + len(chunk), length - len(chunk)


def _copied_through_buffer(reader, writer, patches):
    digest, size = hashlib.sha256(), 0
    buffer = bytearray(WHOLE_FILE_CHUNK_BYTES)
    while count := reader.readinto(buffer):
        if size == 0:
            for offset, data in patches:
                buffer[offset : offset + len(data)] = data
        chunk = memoryview(buffer)[:count]
        digest.update(chunk)
        while chunk:  # an unbuffered write may take only part of it
            chunk = chunk[writer.write(chunk) :]
        size += count
    writer.truncate(size)
    return digest.hexdigest(), size


def compress_file(source, target):
    """Write ``source`` zstd-compressed into the existing file ``target``; return the
    (SHA-256, size) of ``source``, computed on the way."""
    with open(source, "rb") as reader, open(target, "r+b") as output:
        content = compress_stream(reader, output)
        output.truncate()
    return content


def compress_stream(reader, output):
    """Read ``reader`` to its end, writing it zstd-compressed (one frame, with its
    checksum) into ``output``; return the (SHA-256, size) of what was read."""
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1, write_checksum=True)
    writer = compressor.stream_writer(output, write_size=CHUNK_BYTES, closefd=False)
    digest, size = hashlib.sha256(), 0
    while chunk := reader.read(CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
        writer.write(chunk)
    writer.flush(zstandard.FLUSH_FRAME)
    return digest.hexdigest(), size


def decompress_file(source, target):
    """Write the zstd file ``source`` decompressed into the existing file ``target``;
    return the (SHA-256, size) of what was written; raise BackupError when ``source`` is
    not zstd, is damaged or stops short."""
    digest, size = hashlib.sha256(), 0
    with open(target, "r+b") as writer:
        for chunk in decompressed_chunks(source):
            digest.update(chunk)
            size += len(chunk)
            writer.write(chunk)
        writer.truncate()
    return digest.hexdigest(), size


def decompressed_chunks(source):
    """Yield the decompressed content of the zstd file ``source``, chunk by chunk."""
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    with open(source, "rb") as reader:
        try:
            while chunk := reader.read(CHUNK_BYTES):
                yield decompressor.decompress(chunk)
        except zstandard.ZstdError as exc:
            raise BackupError(f"cannot be decompressed ({exc})") from exc
    # The zstandard reader stops quietly at the end of a cut file: only a frame read
    # to its end (and its checksum) proves nothing is missing.
    if not decompressor.eof:
        raise BackupError("the compressed data stops short (truncated file)")


def fsync(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_folder(folder):
    fsync(folder)
