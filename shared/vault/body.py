"""Compressing a body for the vault, and reading it back with its size and sha256 verified."""
from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from typing import BinaryIO

from shared.vault.model import VaultCorruptionError, VaultRecord

# gzip level 3, chosen by measuring a 50,000-result document (85.5 MB; bench/vault_roundtrip.py, Azurite):
#   level  compress  stored   full put
#   1      0.22 s    5.3 MB   0.54 s
#   3      0.23 s    4.8 MB   0.56 s
#   6      0.90 s    2.9 MB   1.15 s
#   9      2.27 s    2.4 MB   4.58 s
# The receiver answers only after the put, so level 6 would double its latency to save ~2 MB of
# storage; level 3 costs what level 1 costs and stores 10% less. Reads are ~0.3 s at every level.
GZIP_LEVEL = 3
GZIP = "gzip"
IDENTITY = "identity"  # bodies gzip cannot shrink (random or already-compressed bytes) are stored as is


def compress(body: bytes, level: int = GZIP_LEVEL) -> tuple[str, bytes]:
    # mtime=0 makes the output a function of the body alone, so a retried put writes identical chunks.
    packed = gzip.compress(body, compresslevel=level, mtime=0)
    if len(packed) >= len(body):
        return IDENTITY, body
    return GZIP, packed


def _describe(record: VaultRecord) -> str:
    return f"submission {record.source}/{record.submission_id}"


def _check(record: VaultRecord, size: int, digest: str) -> None:
    if size != record.byte_size:
        raise VaultCorruptionError(f"{_describe(record)}: body is {size} bytes, head says {record.byte_size}")
    if digest != record.sha256:
        raise VaultCorruptionError(f"{_describe(record)}: body sha256 {digest} does not match head {record.sha256}")


def decompress(record: VaultRecord, stored: bytes) -> bytes:
    if record.compression == IDENTITY:
        body = stored
    elif record.compression == GZIP:
        try:
            body = gzip.decompress(stored)
        except (OSError, EOFError, zlib.error) as exc:
            raise VaultCorruptionError(f"{_describe(record)}: gzip data is damaged: {exc}") from exc
    else:
        raise VaultCorruptionError(f"{_describe(record)}: unknown compression {record.compression!r}")
    _check(record, len(body), hashlib.sha256(body).hexdigest())
    return body


class _VerifiedStream(io.RawIOBase):
    """Decompresses as it is read; at the end checks size and sha256 (VaultCorruptionError if wrong)."""

    def __init__(self, record: VaultRecord, inner: BinaryIO) -> None:
        self._record = record
        self._inner = inner
        self._hash = hashlib.sha256()
        self._size = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - any writable buffer
        try:
            n = self._inner.readinto(buffer)
        except (OSError, EOFError, zlib.error) as exc:
            raise VaultCorruptionError(f"{_describe(self._record)}: gzip data is damaged: {exc}") from exc
        if n:
            self._hash.update(memoryview(buffer)[:n])
            self._size += n
            if self._size > self._record.byte_size:
                _check(self._record, self._size, self._hash.hexdigest())
        elif not self._checked:
            self._checked = True
            _check(self._record, self._size, self._hash.hexdigest())
        return n

    def close(self) -> None:
        self._inner.close()
        super().close()


def open_stream(record: VaultRecord, stored: bytes) -> BinaryIO:
    if record.compression == IDENTITY:
        inner: BinaryIO = io.BytesIO(stored)
    elif record.compression == GZIP:
        inner = gzip.GzipFile(fileobj=io.BytesIO(stored), mode="rb")  # type: ignore[assignment]
    else:
        raise VaultCorruptionError(f"{_describe(record)}: unknown compression {record.compression!r}")
    return io.BufferedReader(_VerifiedStream(record, inner), buffer_size=1024 * 1024)  # type: ignore[return-value]
