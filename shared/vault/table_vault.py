"""The vault: every submission's raw body, stored unchanged and compressed in Azure Table Storage.

It is written before anything else happens to a submission and is the source of truth the pipeline
can be replayed from. Bodies are compressed, then sealed with AES-256-GCM under a data key wrapped by
the key-encryption key, shared by the entries a process writes within minutes (crypto.py,
key_ring.py, kek.py); FormatVersion 1 entries (written before encryption) are plain and stay
readable until `markr-ops vault encrypt --all` seals them.
Layout in one table:
- head:   PartitionKey = source,            RowKey = submission id (a ULID, so time-ordered);
          body metadata (ContentType, ReceivedAt, ByteSize, Sha256, Compression, CompressedSize,
          FormatVersion, ChunkCount; Algorithm, KeyId, KeyWrap, WrappedKey, Nonce when sealed) plus
          fields merged later (enqueueError, retractedAt);
          a body that compresses to at most INLINE_BYTES is stored on the head itself (`Body`,
          ChunkCount 0): one write per small submission;
- chunks: PartitionKey = "<source>~chunks" ("<source>~sealed" when encrypted),
          RowKey = "<submission id>-00000", ... (see chunks.py);
- a tombstone replaces the head of an erased submission (`Tombstone`, Sha256, ByteSize, ReceivedAt,
  ErasedAt, Reason): get/find/list treat it as absent.
Chunks are written first and the head last, so a head exists only once its body is complete.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.vault import body as bodies
from shared.vault import crypto
from shared.vault.chunks import delete_chunks, read_chunks, write_chunks
from shared.vault.group_commit import GroupCommit
from shared.vault.key_ring import KeyRing
from shared.vault.model import (
    FORMAT_ENCRYPTED,
    FORMAT_PLAIN,
    HEAD_PROPERTIES,
    VaultCorruptionError,
    VaultError,
    VaultRecord,
    as_utc,
    check_source,
    check_submission_id,
    odata_string,
    plain_datetime,
)
from shared.vault.rest_writer import TablesRestWriter
from shared.vault.status import decode_property, encode_fields, visible_status
from shared.vault.transport import ConnectionPool, HttpClientTransport

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.vault.kek import KeyEncryptionKey

__all__ = ["TableVault", "VaultCorruptionError", "VaultError", "VaultRecord"]

# Fail fast when storage is unreachable (health checks, receiver) instead of retrying for minutes.
_CLIENT_OPTIONS = {"connection_timeout": 10, "retry_total": 3}
# One client per process is shared by every request thread: keep up to this many idle connections.
HTTP_POOL_SIZE = 64


def _pool() -> ConnectionPool:
    """http.client rather than requests: a third of the CPU per Table request (see transport.py).
    The SDK client and the insert writer share it."""
    return ConnectionPool(connection_timeout=_CLIENT_OPTIONS["connection_timeout"], pool_size=HTTP_POOL_SIZE)


def _writer(table: TableClient, pool: ConnectionPool) -> TablesRestWriter | None:
    return TablesRestWriter.for_table(table.url, table.table_name, table.credential, pool)


_HEADS_ONLY = f"FormatVersion ge {FORMAT_PLAIN}"  # chunk entities and tombstones have no FormatVersion
_STATUS_RETRIES = 10
INLINE_BYTES = 48 * 1024  # a binary property holds 64 KiB; stay well inside it


def _record(entity: Mapping[str, object]) -> VaultRecord:
    try:
        return VaultRecord(
            source=str(entity["PartitionKey"]),
            submission_id=str(entity["RowKey"]),
            content_type=str(entity["ContentType"]),
            received_at=plain_datetime(entity["ReceivedAt"]),  # type: ignore[arg-type]
            byte_size=int(decode_property(entity["ByteSize"])),  # type: ignore[arg-type]
            sha256=str(entity["Sha256"]),
            compression=str(entity["Compression"]),
            compressed_size=int(decode_property(entity["CompressedSize"])),  # type: ignore[arg-type]
            format_version=int(entity["FormatVersion"]),  # type: ignore[arg-type]
            chunk_count=int(entity["ChunkCount"]),  # type: ignore[arg-type]
            status=visible_status(entity, HEAD_PROPERTIES),
            inline=_binary(entity.get("Body")),
            envelope=_envelope(entity),
        )
    except KeyError as exc:
        raise VaultCorruptionError(
            f"vault head {entity.get('PartitionKey')}/{entity.get('RowKey')} lacks property {exc}"
        ) from exc


def _envelope(entity: Mapping[str, object]) -> crypto.Envelope | None:
    if int(entity["FormatVersion"]) < FORMAT_ENCRYPTED:  # type: ignore[call-overload]
        return None
    return crypto.Envelope(str(entity["Algorithm"]), str(entity["KeyId"]), str(entity["KeyWrap"]),
                           _binary(entity["WrappedKey"]) or b"", _binary(entity["Nonce"]) or b"")


def _envelope_properties(envelope: crypto.Envelope) -> dict[str, object]:
    return {"FormatVersion": FORMAT_ENCRYPTED, "Algorithm": envelope.algorithm, "KeyId": envelope.key_id,
            "KeyWrap": envelope.key_wrap, "WrappedKey": envelope.wrapped_key, "Nonce": envelope.nonce}


def _binary(value: object) -> bytes | None:
    if value is None:
        return None
    return bytes(value.value if hasattr(value, "value") else value)  # type: ignore[arg-type]


class TableVault:
    def __init__(self, table: TableClient, *, gzip_level: int = bodies.GZIP_LEVEL,
                 kek: KeyEncryptionKey | None = None, writer: TablesRestWriter | None = None) -> None:
        # Without a kek, puts write plain entries (FormatVersion 1) and sealed ones cannot be read:
        # only for tests and benchmarks of the plain format; the composition root always passes one.
        self.kek = kek
        self._keys = KeyRing(kek) if kek is not None else None  # data keys shared and remembered
        self._table = table
        # Inserts go over the REST API (rest_writer.py: a fraction of the SDK's CPU per put); without
        # a writer they go through the SDK. Everything else always uses the SDK client.
        self._writer = writer
        self._gzip_level = gzip_level
        self._table_ready = False
        self._lock = threading.Lock()
        self._commits: GroupCommit | None = None

    @classmethod
    def from_connection_string(cls, connection_string: str, table_name: str,
                               kek: KeyEncryptionKey | None = None) -> TableVault:
        pool = _pool()
        table = TableClient.from_connection_string(connection_string, table_name,
                                                   transport=HttpClientTransport(pool=pool), **_CLIENT_OPTIONS)
        return cls(table, kek=kek, writer=_writer(table, pool))

    @classmethod
    def from_settings(cls, settings: Settings, credential: object = None,
                      kek: KeyEncryptionKey | None = None) -> TableVault:
        """By connection string, or by identity (`credential`: the process's shared one)."""
        if settings.vault_connection:
            return cls.from_connection_string(settings.vault_connection, settings.vault_table, kek)
        if not settings.vault_table_endpoint:
            raise VaultError("set VaultStorage (connection string) or VaultStorage__tableServiceUri (identity)")
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        pool = _pool()
        service = TableServiceClient(endpoint=settings.vault_table_endpoint, credential=credential,
                                     transport=HttpClientTransport(pool=pool), **_CLIENT_OPTIONS)
        table = service.get_table_client(settings.vault_table)
        return cls(table, kek=kek, writer=_writer(table, pool))

    def _group_commit(self) -> GroupCommit:
        if self._commits is None:
            table = self.table
            with self._lock:
                if self._commits is None:
                    if self._writer is not None:
                        self._commits = GroupCommit(self._writer.insert_batch, self._writer.insert)
                    else:
                        self._commits = GroupCommit(
                            lambda entities: table.submit_transaction([("create", e) for e in entities]),
                            table.create_entity)
        return self._commits

    def _insert(self, entity: dict[str, object]) -> None:
        if self._writer is not None:
            self._writer.insert(entity)
        else:
            self.table.create_entity(entity)

    @property
    def table(self) -> TableClient:
        self._ensure_table()
        return self._table

    def _ensure_table(self) -> None:
        if self._table_ready:
            return
        with self._lock:
            if not self._table_ready:
                with contextlib.suppress(ResourceExistsError):
                    self._table.create_table()
                self._table_ready = True

    def ping(self) -> None:
        pages = self.table.query_entities("PartitionKey eq '~ping'", results_per_page=1).by_page()
        for _ in next(pages, []):
            pass

    def put(self, *, source: str, submission_id: str, content_type: str, body: bytes,
            received_at: datetime) -> VaultRecord:
        """Store a body (idempotent: the same id with the same body returns the stored record)."""
        check_source(source)
        check_submission_id(submission_id)
        if not isinstance(content_type, str):
            raise ValueError(f"content_type must be a string, not {content_type!r}")
        received_at = as_utc(received_at, "received_at")
        body = bytes(body)
        digest = hashlib.sha256(body).hexdigest()
        compression, stored = bodies.compress(body, self._gzip_level)
        envelope = None
        if self._keys is not None:
            stored, envelope = crypto.seal(self._keys, source, submission_id, stored)
        inline = len(stored) <= INLINE_BYTES
        if not inline:
            # Chunks are upserted, so check first that this id does not hold another body. (A sealed
            # body's chunks differ per attempt, a fresh nonce each time, so two puts of one id must
            # not run at once; the receiver gives every request a new id, and a retry finds the head.)
            existing = self.get(source, submission_id)
            if existing is not None:
                return self._same_body(existing, body, digest)
        chunks = 0 if inline else write_chunks(self.table, source, submission_id, stored, envelope is not None)
        head = {
            "PartitionKey": source, "RowKey": submission_id,
            "ContentType": content_type[:1024], "ReceivedAt": received_at,
            "ByteSize": len(body), "Sha256": digest, "Compression": compression,
            "CompressedSize": len(stored), "FormatVersion": FORMAT_PLAIN, "ChunkCount": chunks,
        }
        if envelope is not None:
            head.update(_envelope_properties(envelope))
        if inline:
            head["Body"] = stored
        try:
            if inline:
                self._group_commit().insert(head, len(stored) * 4 // 3 + 1024)
            else:
                self._insert(head)
        except ResourceExistsError:  # a concurrent put of the same id won the race
            existing = self.get(source, submission_id)
            if existing is None:
                raise VaultError(f"submission {source}/{submission_id}: head vanished during put") from None
            return self._same_body(existing, body, digest)
        except HttpResponseError as exc:
            raise VaultError(f"writing head {source}/{submission_id} failed: {exc.message or exc}") from exc
        return _record(head)

    @staticmethod
    def _same_body(existing: VaultRecord, body: bytes, digest: str) -> VaultRecord:
        if existing.sha256 != digest or existing.byte_size != len(body):
            raise VaultError(
                f"submission {existing.source}/{existing.submission_id} is already stored with a different "
                f"body ({existing.byte_size} bytes, sha256 {existing.sha256})"
            )
        return existing

    def get(self, source: str, submission_id: str) -> VaultRecord | None:
        check_source(source)
        check_submission_id(submission_id)
        try:
            entity = self.table.get_entity(source, submission_id)
        except ResourceNotFoundError:
            return None
        if entity.get("Tombstone"):
            return None
        return _record(entity)

    def find(self, submission_id: str) -> VaultRecord | None:
        """The head with this id in any source (a scan filtered on RowKey; prefer get)."""
        check_submission_id(submission_id)
        query = f"RowKey eq {odata_string(submission_id)} and {_HEADS_ONLY}"
        for entity in self.table.query_entities(query):
            return _record(entity)
        return None

    def _sealed_bytes(self, record: VaultRecord) -> bytes:
        if record.chunk_count == 0 and record.inline is not None:
            if len(record.inline) != record.compressed_size:
                raise VaultCorruptionError(f"submission {record.source}/{record.submission_id}: stored body is "
                                           f"{len(record.inline)} bytes, head says {record.compressed_size}")
            return record.inline
        return read_chunks(self.table, record.source, record.submission_id,
                           record.chunk_count, record.compressed_size, record.envelope is not None)

    def _stored_bytes(self, record: VaultRecord) -> bytes:
        """The compressed body: read, and opened if sealed (VaultCorruptionError if tampered with)."""
        data = self._sealed_bytes(record)
        if record.envelope is None:
            return data
        if self._keys is None:
            raise VaultError("this vault has no key-encryption key; it cannot read sealed entries")
        return crypto.open_sealed(self._keys, record.source, record.submission_id, record.envelope, data)

    def read_body(self, record: VaultRecord) -> bytes:
        """The body exactly as received (VaultCorruptionError if it does not match the head)."""
        return bodies.decompress(record, self._stored_bytes(record))

    def open_body(self, record: VaultRecord) -> BinaryIO:
        """The body as a stream; holds only the compressed bytes in memory. Size and sha256 are
        checked when the stream reaches its end (VaultCorruptionError from read())."""
        return bodies.open_stream(record, self._stored_bytes(record))

    def record_status(self, source: str, submission_id: str, fields: Mapping[str, object]) -> None:
        """Merge status fields onto the head; None removes a field. See status.py for encodings."""
        check_source(source)
        check_submission_id(submission_id)
        merge, remove = encode_fields(fields)
        keys = {"PartitionKey": source, "RowKey": submission_id}
        for _ in range(_STATUS_RETRIES):
            if remove:
                try:
                    head = self.table.get_entity(source, submission_id)
                except ResourceNotFoundError:
                    raise self._no_head(source, submission_id) from None
                present = remove & set(head)
                if present:  # removing needs a full replace, guarded by the etag we read
                    if not self._replace_unchanged(head, merge, present):
                        continue  # someone else changed the head meanwhile: read again
                    return
            if not merge:
                if not remove:
                    self._require_head(source, submission_id)
                return
            try:
                self.table.update_entity({**keys, **merge}, mode=UpdateMode.MERGE)
            except ResourceNotFoundError:
                raise self._no_head(source, submission_id) from None
            return
        raise VaultError(f"submission {source}/{submission_id}: head kept changing; status not recorded")

    def _require_head(self, source: str, submission_id: str) -> None:
        if self.get(source, submission_id) is None:
            raise self._no_head(source, submission_id)

    @staticmethod
    def _no_head(source: str, submission_id: str) -> VaultError:
        return VaultError(f"no submission {source}/{submission_id} in the vault")

    def list(self, *, source: str | None = None, since: datetime | None = None) -> Iterator[VaultRecord]:
        """Heads ordered by (source, submission id); `since` keeps ReceivedAt >= since."""
        clauses = [_HEADS_ONLY]
        if source is not None:
            clauses.insert(0, f"PartitionKey eq {odata_string(check_source(source))}")
        if since is not None:
            clauses.append(f"ReceivedAt ge datetime'{as_utc(since, 'since').strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'")
        for entity in self.table.query_entities(" and ".join(clauses)):
            yield _record(entity)

    # --- key management and erasure (markr-ops vault encrypt / rewrap, retract --erase) -------------

    def _replace_head(self, record: VaultRecord, changes: Mapping[str, object], drop: set[str] = frozenset()) -> None:
        """Replace the head with `changes` applied, only if it did not change since it was read."""
        head = self.table.get_entity(record.source, record.submission_id)
        if int(head.get("FormatVersion", 0)) != record.format_version or head.get("KeyId") != (
                record.envelope.key_id if record.envelope else None):
            raise VaultError(f"submission {record.source}/{record.submission_id} changed meanwhile; run again")
        if not self._replace_unchanged(head, changes, drop):
            raise VaultError(f"submission {record.source}/{record.submission_id} changed meanwhile; run again")

    def _replace_unchanged(self, head: Mapping, changes: Mapping[str, object], drop: set[str]) -> bool:
        """Replace the head read as `head` with `changes` applied and `drop` removed, only if it did not
        change since (its etag); False if it did."""
        entity = {k: v for k, v in head.items() if k not in drop}
        entity.update(changes)
        try:
            self.table.update_entity(entity, mode=UpdateMode.REPLACE, etag=head.metadata["etag"],
                                     match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError:
            return False
        return True

    def seal_entry(self, record: VaultRecord) -> bool:
        """Encrypt a plain (FormatVersion 1) entry in place; returns False if it was sealed already.

        The sealed chunks go to their own partition and the head switches over (etag-guarded) before
        the plain chunks are deleted, so an interruption at any point leaves a readable entry.
        """
        if self._keys is None:
            raise VaultError("this vault has no key-encryption key to seal entries with")
        if record.envelope is not None:
            if record.chunk_count:  # an earlier run may have stopped before deleting the plain chunks
                delete_chunks(self.table, record.source, record.submission_id, sealed=False)
            return False
        stored = self._stored_bytes(record)
        bodies.decompress(record, stored)  # never seal a damaged body: it would look authentic afterwards
        sealed, envelope = crypto.seal(self._keys, record.source, record.submission_id, stored)
        changes: dict[str, object] = {**_envelope_properties(envelope), "CompressedSize": len(sealed)}
        drop: set[str] = set()
        if len(sealed) <= INLINE_BYTES:
            changes.update(Body=sealed, ChunkCount=0)
        else:
            changes["ChunkCount"] = write_chunks(self.table, record.source, record.submission_id, sealed, True)
            drop.add("Body")
        self._replace_head(record, changes, drop)
        if record.chunk_count:
            delete_chunks(self.table, record.source, record.submission_id, sealed=False)
        return True

    def rewrap_entry(self, record: VaultRecord) -> bool:
        """Wrap the entry's data key under the current KEK version (the sealed body is not touched).
        Returns False when it is plain or already under the current version."""
        if self._keys is None:
            raise VaultError("this vault has no key-encryption key")
        if record.envelope is None or record.envelope.key_id == self._keys.current_key_id():
            return False
        envelope = crypto.rewrap(self._keys, record.envelope)
        self._replace_head(record, _envelope_properties(envelope))
        return True

    def erase(self, source: str, submission_id: str, *, reason: str, at: datetime) -> dict[str, object] | None:
        """Delete the body for good, leaving a tombstone (sha256, size, times, reason) in the head's
        place. Idempotent: returns the tombstone's facts, or None if there never was such an entry."""
        check_source(source)
        check_submission_id(submission_id)
        try:
            head = self.table.get_entity(source, submission_id)
        except ResourceNotFoundError:
            return None
        if not head.get("Tombstone"):
            tombstone = {"PartitionKey": source, "RowKey": submission_id, "Tombstone": True,
                         "Sha256": head.get("Sha256"), "ByteSize": head.get("ByteSize"),
                         "ReceivedAt": head.get("ReceivedAt"), "ErasedAt": as_utc(at, "at"), "Reason": reason[:30000]}
            self.table.upsert_entity(tombstone, mode=UpdateMode.REPLACE)
            head = tombstone
        for sealed in (False, True):  # the head is gone first, so no reader finds half a body
            delete_chunks(self.table, source, submission_id, sealed=sealed)
        return {"sha256": head["Sha256"], "erasedAt": plain_datetime(head["ErasedAt"]).isoformat(),  # type: ignore[arg-type]
                "reason": head["Reason"]}

    def ids(self, source: str, *, start: str = "", stop: str) -> Iterator[str]:
        """Ids of `source` in [start, stop): a key-range query on one partition, RowKey only."""
        query = (f"PartitionKey eq {odata_string(check_source(source))}"
                 f" and RowKey ge {odata_string(start)} and RowKey lt {odata_string(stop)}")
        for entity in self.table.query_entities(query, select=["RowKey"]):
            yield str(entity["RowKey"])
