"""The vault against a real Table Storage endpoint (Azurite, started by the session fixtures)."""
from __future__ import annotations

import hashlib
import os
import random
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableClient, UpdateMode
from ulid import ULID

from shared.vault.chunks import CHUNK_BYTES, chunk_partition, chunk_row
from shared.vault.table_vault import TableVault, VaultCorruptionError, VaultError, VaultRecord

pytestmark = pytest.mark.integration

RECEIVED = datetime(2024, 3, 5, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
def vault(vault_storage: str, vault_table: str) -> TableVault:
    return TableVault.from_connection_string(vault_storage, vault_table)


@pytest.fixture
def table(vault: TableVault) -> TableClient:
    return vault.table


def new_id() -> str:
    return str(ULID())


def put(vault: TableVault, body: bytes, *, source: str = "school-a", submission_id: str | None = None,
        received_at: datetime = RECEIVED) -> VaultRecord:
    return vault.put(source=source, submission_id=new_id() if submission_id is None else submission_id,
                     content_type="text/xml+markr", body=body, received_at=received_at)


def test_small_body_round_trips_byte_for_byte(vault: TableVault, sample_results_xml: bytes) -> None:
    sid = new_id()
    record = put(vault, sample_results_xml, submission_id=sid)

    stored = vault.get("school-a", sid)
    assert stored == record
    assert stored.content_type == "text/xml+markr"
    assert stored.received_at == RECEIVED and stored.received_at.tzinfo is not None
    assert stored.byte_size == len(sample_results_xml)
    assert stored.sha256 == hashlib.sha256(sample_results_xml).hexdigest()
    assert stored.compression == "gzip" and stored.compressed_size < len(sample_results_xml) // 5
    assert stored.format_version == 1 and stored.chunk_count == 0  # a small body lives on the head
    assert stored.inline is not None and len(stored.inline) == stored.compressed_size
    assert stored.status == {}
    assert vault.read_body(stored) == sample_results_xml
    with vault.open_body(stored) as stream:
        assert stream.read() == sample_results_xml


def test_incompressible_body_over_many_entities_round_trips(vault: TableVault, table: TableClient) -> None:
    body = os.urandom(5 * 1024 * 1024 + 123)  # malformed input: random bytes gzip cannot shrink
    record = put(vault, body)

    assert record.compression == "identity" and record.compressed_size == len(body)
    assert record.chunk_count == -(-len(body) // CHUNK_BYTES) > 4  # more than one transaction
    chunks = list(table.query_entities(f"PartitionKey eq '{chunk_partition('school-a')}'"))
    assert len(chunks) == record.chunk_count
    assert vault.read_body(record) == body
    with vault.open_body(record) as stream:
        parts = iter(lambda: stream.read(100_000), b"")
        assert b"".join(parts) == body


def test_empty_body(vault: TableVault) -> None:
    record = put(vault, b"")
    assert record.byte_size == 0 and record.chunk_count == 0
    assert record.sha256 == hashlib.sha256(b"").hexdigest()
    assert vault.read_body(vault.get("school-a", record.submission_id)) == b""
    assert vault.open_body(record).read() == b""


def test_put_twice_is_idempotent_and_a_different_body_is_refused(vault: TableVault, table: TableClient) -> None:
    sid = new_id()
    first = put(vault, b"<mcq-test-results/>", submission_id=sid)
    vault.record_status("school-a", sid, {"validatedAt": RECEIVED})
    again = put(vault, b"<mcq-test-results/>", submission_id=sid, received_at=RECEIVED + timedelta(hours=1))

    assert again.received_at == first.received_at  # the first put stands
    assert again.status == {"validatedAt": RECEIVED}  # and keeps the status merged since
    assert [r.submission_id for r in vault.list(source="school-a")] == [sid]
    with pytest.raises(VaultError, match="different body"):
        put(vault, b"<other/>", submission_id=sid)
    assert vault.read_body(vault.get("school-a", sid)) == b"<mcq-test-results/>"


def test_record_status_merges_values_of_every_type(vault: TableVault) -> None:
    sid = new_id()
    record = put(vault, b"<x/>", submission_id=sid)
    validated = datetime(2024, 3, 5, 20, 0, tzinfo=UTC) + timedelta(microseconds=7)
    vault.record_status("school-a", sid, {
        "validatedAt": validated, "resultCount": 3, "bigCount": 2**40, "score": 0.75,
        "valid": True, "stage": "validated", "errors": [{"line": 3, "message": "bad <answer>"}],
        "looksLikeJson": "[1, 2]", "counts": {"a": 1, "b": [2, 3]},
    })
    vault.record_status("school-a", sid, {"stage": "marked", "markedAt": validated + timedelta(seconds=1)})

    stored = vault.get("school-a", sid)
    assert stored.status == {
        "validatedAt": validated, "resultCount": 3, "bigCount": 2**40, "score": 0.75, "valid": True,
        "stage": "marked", "errors": [{"line": 3, "message": "bad <answer>"}], "looksLikeJson": "[1, 2]",
        "counts": {"a": 1, "b": [2, 3]}, "markedAt": validated + timedelta(seconds=1),
    }
    # Body metadata is untouched by merges.
    assert (stored.sha256, stored.byte_size, stored.chunk_count) == (record.sha256, record.byte_size, 0)
    assert vault.read_body(stored) == b"<x/>"


def test_record_status_none_removes_a_field(vault: TableVault) -> None:
    sid = new_id()
    put(vault, b"<x/>", submission_id=sid)
    vault.record_status("school-a", sid, {"error": "boom", "attempts": 2})
    vault.record_status("school-a", sid, {"error": None, "attempts": 3, "neverSet": None})
    assert vault.get("school-a", sid).status == {"attempts": 3}
    assert vault.read_body(vault.get("school-a", sid)) == b"<x/>"


def test_huge_list_is_truncated_to_valid_json_with_a_flag(vault: TableVault) -> None:
    sid = new_id()
    put(vault, b"<x/>", submission_id=sid)
    errors = [f"result {i}: answer question=\"{i % 20}\" is missing" for i in range(10_000)]
    vault.record_status("school-a", sid, {"errors": errors, "note": "é" * 40_000})

    status = vault.get("school-a", sid).status
    assert status["errorsTruncated"] is True and status["noteTruncated"] is True
    assert 1000 < len(status["errors"]) < len(errors)
    assert status["errors"] == errors[: len(status["errors"])]
    assert status["note"] == "é" * 32_768

    vault.record_status("school-a", sid, {"errors": errors[:3]})  # fits again: the flag goes
    status = vault.get("school-a", sid).status
    assert status["errors"] == errors[:3] and "errorsTruncated" not in status


def test_record_status_rejects_bad_names_values_and_unknown_heads(vault: TableVault) -> None:
    sid = new_id()
    put(vault, b"<x/>", submission_id=sid)
    for bad in ("has space", "1st", "dash-ed", "ByteSize", "Sha256", "PartitionKey", ""):
        with pytest.raises(ValueError, match="status field"):
            vault.record_status("school-a", sid, {bad: 1})
    with pytest.raises(ValueError, match="unsupported type"):
        vault.record_status("school-a", sid, {"blob": b"bytes"})
    with pytest.raises(ValueError, match="timezone-aware"):
        vault.record_status("school-a", sid, {"at": datetime(2024, 1, 1)})
    with pytest.raises(VaultError, match="no submission"):
        vault.record_status("school-a", new_id(), {"stage": "marked"})
    assert vault.get("school-a", sid).status == {}


def test_list_by_source_and_since_and_find_across_sources(vault: TableVault) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    ids = [new_id() for _ in range(5)]
    placed = [("school-b", ids[0], t0), ("school-a", ids[1], t0 + timedelta(hours=1)),
              ("school-b", ids[2], t0 + timedelta(hours=2)), ("school-a", ids[3], t0 + timedelta(hours=3)),
              ("school o'ü", ids[4], t0 + timedelta(hours=4))]
    for source, sid, at in placed:
        put(vault, os.urandom(300_000), source=source, submission_id=sid, received_at=at)  # 2 chunks each

    everything = [(r.source, r.submission_id) for r in vault.list()]
    assert everything == sorted((s, i) for s, i, _ in placed)  # heads only, by (source, id)
    assert [r.submission_id for r in vault.list(source="school-b")] == [ids[0], ids[2]]
    assert [r.submission_id for r in vault.list(since=t0 + timedelta(hours=2))] == [ids[4], ids[3], ids[2]]  # "school o'ü" sorts first
    assert [r.submission_id for r in vault.list(source="school-a", since=t0 + timedelta(minutes=61))] == [ids[3]]
    assert list(vault.list(source="nobody")) == []

    found = vault.find(ids[2])
    assert (found.source, found.received_at) == ("school-b", t0 + timedelta(hours=2))
    assert vault.find(new_id()) is None
    assert vault.get("school-a", ids[0]) is None  # right id, wrong source
    assert vault.get("school-a", new_id()) is None


def test_missing_chunk_is_detected(vault: TableVault, table: TableClient) -> None:
    body = os.urandom(3 * CHUNK_BYTES)
    record = put(vault, body)
    table.delete_entity(chunk_partition("school-a"), chunk_row(record.submission_id, 1))
    with pytest.raises(VaultCorruptionError, match="chunk 1 of 3 is missing"):
        vault.read_body(record)
    with pytest.raises(VaultCorruptionError):
        vault.open_body(record)
    table.delete_entity(chunk_partition("school-a"), chunk_row(record.submission_id, 2))
    with pytest.raises(VaultCorruptionError, match="chunk 1 of 3 is missing"):
        vault.read_body(record)


def test_damaged_chunk_is_detected_by_sha256(vault: TableVault, table: TableClient,
                                             sample_results_xml: bytes) -> None:
    noise = random.Random(7).randbytes(150_000).hex().encode()  # too big to sit on the head
    record = put(vault, sample_results_xml.replace(b"</mcq-test-results>", b"<!--" + noise + b"--></mcq-test-results>"))
    assert record.compression == "gzip" and record.chunk_count >= 1 and record.inline is None
    row = table.get_entity(chunk_partition("school-a"), chunk_row(record.submission_id, 0))
    table.update_entity({**row, "D0": row["D0"][:-4] + b"\x00\x00\x00\x00"})  # gzip trailer: CRC32
    with pytest.raises(VaultCorruptionError, match="submission school-a/"):
        vault.read_body(record)
    with pytest.raises(VaultCorruptionError), vault.open_body(record) as stream:
        stream.read()


def test_damaged_inline_body_is_detected_by_sha256(vault: TableVault, table: TableClient,
                                                   sample_results_xml: bytes) -> None:
    record = put(vault, sample_results_xml)
    head = table.get_entity("school-a", record.submission_id)
    body = head["Body"].value if hasattr(head["Body"], "value") else head["Body"]
    table.update_entity({"PartitionKey": "school-a", "RowKey": record.submission_id,
                         "Body": body[:-4] + b"\x00\x00\x00\x00"}, mode=UpdateMode.MERGE)
    with pytest.raises(VaultCorruptionError, match="submission school-a/"):
        vault.read_body(vault.get("school-a", record.submission_id))


def test_invalid_source_and_id_are_refused(vault: TableVault) -> None:
    for source in ("a/b", "a\\b", "a#b", "a?b", "a\tb", "a\x7fb", "a~chunks", "", "x" * 201):
        with pytest.raises(ValueError, match="vault source"):
            put(vault, b"<x/>", source=source)
    for sid in ("", "a/b", "a b", "x" * 129):
        with pytest.raises(ValueError, match="submission id"):
            put(vault, b"<x/>", submission_id=sid)
    with pytest.raises(ValueError, match="timezone-aware"):
        put(vault, b"<x/>", received_at=datetime(2024, 1, 1))
    assert list(vault.list()) == []


def test_ids_sharing_a_prefix_keep_their_own_chunks(vault: TableVault) -> None:
    base = new_id()
    bodies = {base: os.urandom(CHUNK_BYTES + 1), f"{base}-00001": os.urandom(10), f"{base}-x": os.urandom(5)}
    records = [put(vault, body, submission_id=sid) for sid, body in bodies.items()]
    for record in records:
        assert vault.read_body(record) == bodies[record.submission_id]


def test_ping_and_from_settings_create_the_table(vault_storage: str, vault_table: str) -> None:
    from shared.config import Settings

    settings = Settings(database_url="", database_entra_auth=False, bus="local", service_bus_connection="",
                        service_bus_namespace="", vault_connection=vault_storage, vault_table_endpoint="",
                        vault_table=vault_table, max_body_bytes=1,
                        import_wait_seconds=1.0)
    vault = TableVault.from_settings(settings)
    vault.ping()
    put(vault, b"<x/>")
    assert len(list(TableVault.from_connection_string(vault_storage, vault_table).list())) == 1


def test_ping_fails_when_storage_is_unreachable() -> None:
    from devhost.stack import azurite_connection_string, free_port

    vault = TableVault.from_connection_string(azurite_connection_string(free_port()), "vaultdown")
    with pytest.raises(Exception, match="(?i)connect|refused"):
        vault.ping()


def _concurrently(count: int, work) -> dict[int, object]:
    import threading

    gate = threading.Barrier(count)
    answers: dict[int, object] = {}

    def run(i: int) -> None:
        gate.wait()
        try:
            answers[i] = work(i)
        except VaultError as exc:
            answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_concurrent_small_puts_share_transactions(vault: TableVault) -> None:
    answers = _concurrently(16, lambda i: put(vault, f"<doc n='{i}'/>".encode()))
    for i, record in answers.items():
        assert vault.read_body(vault.get("school-a", record.submission_id)) == f"<doc n='{i}'/>".encode()
    commits = vault._group_commit()
    assert commits.entities == 16 and commits.transactions < 16


def test_a_refused_entity_in_a_shared_transaction_fails_alone(vault: TableVault) -> None:
    taken = new_id()
    put(vault, b"<first/>", submission_id=taken)
    # Writer 0 reuses an id with another body: only it fails; the others of its group land.
    answers = _concurrently(16, lambda i: put(vault, f"<doc n='{i}'/>".encode(),
                                               submission_id=taken if i == 0 else None))
    assert isinstance(answers[0], VaultError) and "different body" in str(answers[0])
    for i in range(1, 16):
        record = answers[i]
        assert vault.read_body(vault.get("school-a", record.submission_id)) == f"<doc n='{i}'/>".encode()
    assert vault.read_body(vault.get("school-a", taken)) == b"<first/>"
