"""The vault port: where every raw submission is kept, unchanged, before anything else happens to it.

One adapter implements it (table_vault.TableVault, Azure Table Storage / Azurite); tests use an
in-memory fake (tests/fakes.py).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import BinaryIO, Protocol

from shared.vault.model import VaultRecord


class Vault(Protocol):
    def put(self, *, source: str, submission_id: str, content_type: str, body: bytes,
            received_at: datetime) -> VaultRecord:
        """Store a body; idempotent for the same id and body. Raises on failure (nothing stored)."""

    def get(self, source: str, submission_id: str) -> VaultRecord | None: ...

    def find(self, submission_id: str) -> VaultRecord | None:
        """The head with this id in any source (slower than get)."""

    def list(self, *, source: str | None = None, since: datetime | None = None) -> Iterator[VaultRecord]: ...

    def ids(self, source: str, *, start: str = "", stop: str) -> Iterator[str]:
        """The submission ids of `source` with start <= id < stop, in order, reading no bodies
        (ids are ULIDs, so a range of ids is a range of receipt times)."""

    def read_body(self, record: VaultRecord) -> bytes:
        """The body exactly as received; VaultCorruptionError if it does not match its head."""

    def open_body(self, record: VaultRecord) -> BinaryIO:
        """The body as a stream, checked when the stream reaches its end."""

    def record_status(self, source: str, submission_id: str, fields: Mapping[str, object]) -> None:
        """Merge fields onto the head (e.g. enqueueError); None removes a field."""

    def erase(self, source: str, submission_id: str, *, reason: str, at: datetime) -> dict[str, object] | None:
        """Delete the body for good, leaving a tombstone (sha256, time, reason); idempotent."""

    def seal_entry(self, record: VaultRecord) -> bool:
        """Encrypt a plain entry in place (False if it was sealed already)."""

    def rewrap_entry(self, record: VaultRecord) -> bool:
        """Wrap the entry's data key under the current key version (False if it already is)."""

    def ping(self) -> None: ...
