"""What the vault stores about a submission, its errors, and the key rules of Table Storage."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.vault.crypto import Envelope

FORMAT_PLAIN = 1  # compressed body stored as is (entries written before encryption)
FORMAT_ENCRYPTED = 2  # compressed, then sealed with AES-256-GCM under a wrapped data key (crypto.py)
FORMAT_VERSION = FORMAT_ENCRYPTED  # what put() writes
PROPERTY_BYTES = 64 * 1024  # Table Storage cap for one property (binary bytes, or UTF-16 string bytes)
CHUNK_PARTITION_SUFFIX = "~chunks"

# Properties the vault writes on a head entity; record_status may never overwrite them.
HEAD_PROPERTIES = frozenset({
    "PartitionKey", "RowKey", "Timestamp", "ContentType", "ReceivedAt", "ByteSize", "Sha256",
    "Compression", "CompressedSize", "FormatVersion", "ChunkCount", "Body",
    "Algorithm", "KeyId", "KeyWrap", "WrappedKey", "Nonce",  # the envelope of an encrypted entry
})

# Table keys may not contain / \ # ? or control characters; "~" is reserved here so a source can
# never collide with a chunk partition ("<source>~chunks"). Keys are at most 1 KiB.
_FORBIDDEN_KEY_CHARS = re.compile(r"[/\\#?~\x00-\x1f\x7f-\x9f]")
_SUBMISSION_ID = re.compile(r"[0-9A-Za-z_-]{1,128}")


class VaultError(Exception):
    """The vault could not store or read a submission."""


class VaultCorruptionError(VaultError):
    """A stored body does not match its head: a chunk is missing, or the size or sha256 differs."""


@dataclass(frozen=True)
class VaultRecord:
    source: str
    submission_id: str
    content_type: str
    received_at: datetime  # tz-aware UTC
    byte_size: int
    sha256: str
    compression: str
    compressed_size: int
    format_version: int
    chunk_count: int  # 0 when the stored bytes sit on the head itself (`inline`)
    status: dict[str, object]  # every other property on the head (enqueueError, ...)
    inline: bytes | None = None  # the stored (compressed) bytes of a small body, kept on the head
    envelope: Envelope | None = None  # FORMAT_ENCRYPTED: how the stored bytes are sealed


def check_source(source: str) -> str:
    if not isinstance(source, str) or not source:
        raise ValueError(f"vault source must be a non-empty string, not {source!r}")
    if len(source) > 200:
        raise ValueError(f"vault source is longer than 200 characters: {source[:40]!r}...")
    bad = _FORBIDDEN_KEY_CHARS.search(source)
    if bad:
        raise ValueError(
            f"vault source {source!r} contains {bad.group()!r}; "
            "Table Storage keys may not contain / \\ # ? ~ or control characters"
        )
    return source


def check_submission_id(submission_id: str) -> str:
    if not isinstance(submission_id, str) or not _SUBMISSION_ID.fullmatch(submission_id):
        raise ValueError(
            f"submission id {submission_id!r} must be 1-128 characters of A-Z a-z 0-9 _ - (a ULID string)"
        )
    return submission_id


def as_utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, not {value!r}")
    return value.astimezone(UTC)


def plain_datetime(value: datetime) -> datetime:
    """The SDK returns a datetime subclass carrying the service text; hand out a plain UTC datetime."""
    return datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                    value.microsecond, tzinfo=UTC)


def odata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
