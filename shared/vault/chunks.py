"""The stored body, split over chunk entities in the "<source>~chunks" partition ("<source>~sealed"
for encrypted entries: `vault encrypt` writes the sealed copy beside the plain one and switches the
head over before it deletes the plain chunks, so an interrupted migration never loses a body).

Sizes (measured limits: a property holds 64 KiB of binary, Azurite caps an entity at ~750 KiB of
binary and Azure at 1 MiB, a transaction holds 100 entities of one partition and 4 MiB of payload,
where binary travels base64-encoded, i.e. 4/3 larger):
- a chunk entity carries up to 4 properties D0..D3 of 64 KiB = 256 KiB, a third of the entity cap;
- a transaction carries up to 4 chunk entities = 1 MiB raw, ~1.4 MiB on the wire. On Azurite, bigger
  transactions or parallel transactions were not faster (one node process does the work).
"""
from __future__ import annotations

from collections.abc import Iterator

from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableClient, UpdateMode

from shared.vault.model import (
    CHUNK_PARTITION_SUFFIX,
    PROPERTY_BYTES,
    VaultCorruptionError,
    VaultError,
    odata_string,
)

PROPERTIES_PER_CHUNK = 4
CHUNK_BYTES = PROPERTY_BYTES * PROPERTIES_PER_CHUNK
CHUNKS_PER_TRANSACTION = 4


SEALED_PARTITION_SUFFIX = "~sealed"


def chunk_partition(source: str, sealed: bool = False) -> str:
    return source + (SEALED_PARTITION_SUFFIX if sealed else CHUNK_PARTITION_SUFFIX)


def chunk_row(submission_id: str, n: int) -> str:
    return f"{submission_id}-{n:05d}"


def chunk_count(size: int) -> int:
    return -(-size // CHUNK_BYTES)


def _entities(source: str, submission_id: str, data: bytes, sealed: bool) -> Iterator[dict]:
    view = memoryview(data)
    for n in range(chunk_count(len(data))):
        piece = view[n * CHUNK_BYTES:(n + 1) * CHUNK_BYTES]
        entity: dict = {"PartitionKey": chunk_partition(source, sealed), "RowKey": chunk_row(submission_id, n)}
        for i in range(0, len(piece), PROPERTY_BYTES):
            entity[f"D{i // PROPERTY_BYTES}"] = bytes(piece[i:i + PROPERTY_BYTES])
        yield entity


def write_chunks(table: TableClient, source: str, submission_id: str, data: bytes, sealed: bool = False) -> int:
    """Upsert every chunk (a retried put overwrites its own earlier chunks); returns the count."""
    batch: list = []
    written = 0
    for entity in _entities(source, submission_id, data, sealed):
        batch.append(("upsert", entity, {"mode": UpdateMode.REPLACE}))
        if len(batch) == CHUNKS_PER_TRANSACTION:
            _submit(table, batch)
            written += len(batch)
            batch = []
    if batch:
        _submit(table, batch)
        written += len(batch)
    return written


def _submit(table: TableClient, batch: list) -> None:
    try:
        table.submit_transaction(batch)
    except HttpResponseError as exc:
        first, last = batch[0][1]["RowKey"], batch[-1][1]["RowKey"]
        raise VaultError(f"writing chunks {first}..{last} failed: {exc.message or exc}") from exc


def _query(source: str, submission_id: str, sealed: bool) -> str:
    prefix = f"{submission_id}-"
    return (f"PartitionKey eq {odata_string(chunk_partition(source, sealed))} and "
            f"RowKey ge {odata_string(prefix)} and RowKey lt {odata_string(submission_id + '.')}")


def _own(entity: dict, submission_id: str) -> int | None:
    suffix = entity["RowKey"][len(submission_id) + 1:]
    if len(suffix) != 5 or not suffix.isdigit():
        return None  # another submission whose id starts with this one ("<id>-x")
    return int(suffix)


def delete_chunks(table: TableClient, source: str, submission_id: str, sealed: bool) -> int:
    """Delete every chunk of this submission in the plain or the sealed partition; returns the count."""
    rows = [e["RowKey"] for e in table.query_entities(_query(source, submission_id, sealed), select=["RowKey"])
            if _own(e, submission_id) is not None]
    for start in range(0, len(rows), 100):
        try:
            table.submit_transaction([("delete", {"PartitionKey": chunk_partition(source, sealed), "RowKey": row})
                                      for row in rows[start:start + 100]])
        except HttpResponseError as exc:
            raise VaultError(f"deleting chunks of {source}/{submission_id} failed: {exc.message or exc}") from exc
    return len(rows)


def read_chunks(table: TableClient, source: str, submission_id: str, count: int, size: int,
                sealed: bool = False) -> bytes:
    """The stored bytes, checked for a complete run of chunks 0..count-1 and the stored size."""
    parts: list[bytes] = []
    expected = 0
    # Small pages keep one response at ~2 MiB however large the body is.
    for entity in table.query_entities(_query(source, submission_id, sealed), results_per_page=8):
        n = _own(entity, submission_id)
        if n is None:
            continue
        if n >= count:
            break  # leftovers of an earlier, longer attempt with the same id
        if n != expected:
            raise VaultCorruptionError(f"submission {source}/{submission_id}: chunk {expected} of {count} is missing")
        for i in range(PROPERTIES_PER_CHUNK):
            piece = entity.get(f"D{i}")
            if piece is None:
                break
            parts.append(piece.value if hasattr(piece, "value") else piece)
        expected += 1
    if expected != count:
        raise VaultCorruptionError(f"submission {source}/{submission_id}: chunk {expected} of {count} is missing")
    data = b"".join(parts)
    if len(data) != size:
        raise VaultCorruptionError(
            f"submission {source}/{submission_id}: stored body is {len(data)} bytes, head says {size}"
        )
    return data

