"""Vault inserts over the Tables REST API against Azurite: what they write reads back through the SDK
exactly like SDK-written entities, and conflicts take the put's idempotency path."""
from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import EdmType, EntityProperty, TableClient, TableTransactionError
from ulid import ULID

from shared.vault.kek import LocalKeyFile
from shared.vault.rest_writer import TablesRestWriter
from shared.vault.table_vault import TableVault, VaultError, VaultRecord

pytestmark = pytest.mark.integration

RECEIVED = datetime(2024, 3, 5, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
def kek(tmp_path: Path) -> LocalKeyFile:
    return LocalKeyFile(tmp_path / "kek.json")


@pytest.fixture
def rest(vault_storage: str, vault_table: str, kek: LocalKeyFile) -> TableVault:
    vault = TableVault.from_connection_string(vault_storage, vault_table, kek=kek)
    assert vault._writer is not None  # the connection string's account key signs the inserts
    return vault


@pytest.fixture
def sdk(rest: TableVault, kek: LocalKeyFile) -> TableVault:
    """The same table with inserts through the SDK, as before the REST writer."""
    return TableVault(rest.table, kek=kek)


@pytest.fixture
def writer(rest: TableVault) -> TablesRestWriter:
    rest.table  # noqa: B018 - creates the table
    return rest._writer


def put(vault: TableVault, body: bytes, submission_id: str | None = None, source: str = "school-a") -> VaultRecord:
    return vault.put(source=source, submission_id=submission_id or str(ULID()), content_type="text/xml+markr",
                     body=body, received_at=RECEIVED)


def comparable(record: VaultRecord) -> tuple:
    """Everything but the id and the per-entry random envelope (data key, nonce) and sealed bytes."""
    return (record.source, record.content_type, record.received_at, record.byte_size, record.sha256,
            record.compression, record.compressed_size, record.format_version, record.chunk_count, record.status,
            record.envelope.algorithm if record.envelope else None, record.envelope.key_id if record.envelope else None)


def test_an_inserted_entity_reads_back_exactly_like_an_sdk_inserted_one(writer: TablesRestWriter,
                                                                        rest: TableVault) -> None:
    entity = {
        "PartitionKey": "p", "ContentType": "text/xml+markr", "ReceivedAt": RECEIVED, "ByteSize": 17_301,
        "Away": datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-5))),
        "Body": os.urandom(48 * 1024), "Empty": b"", "Flag": True, "Ratio": 0.75, "Id": uuid.UUID(int=42),
        "Big": EntityProperty(2**40, EdmType.INT64), "Text": "é ✓ \"q\" \n",
    }
    writer.insert({**entity, "RowKey": "rest"})
    rest.table.create_entity({**entity, "RowKey": "sdk"})

    by_rest = rest.table.get_entity("p", "rest")
    by_sdk = rest.table.get_entity("p", "sdk")
    assert {k: v for k, v in by_rest.items() if k != "RowKey"} == {k: v for k, v in by_sdk.items() if k != "RowKey"}
    assert by_rest["Big"] == EntityProperty(2**40, EdmType.INT64) and by_rest["Body"] == entity["Body"]
    assert by_rest["ReceivedAt"] == RECEIVED and by_rest["Id"] == uuid.UUID(int=42)


def test_a_batch_inserts_all_or_nothing(writer: TablesRestWriter, rest: TableVault) -> None:
    writer.insert_batch([{"PartitionKey": "p", "RowKey": f"r{i}", "N": i, "B": bytes([i]) * 100} for i in range(5)])
    stored = list(rest.table.query_entities("PartitionKey eq 'p'"))
    assert [(e["RowKey"], e["N"], e["B"]) for e in stored] == [(f"r{i}", i, bytes([i]) * 100) for i in range(5)]

    with pytest.raises(TableTransactionError) as raised:
        writer.insert_batch([{"PartitionKey": "p", "RowKey": "new"}, {"PartitionKey": "p", "RowKey": "r3"}])
    assert raised.value.status_code == 409 and raised.value.error_code == "EntityAlreadyExists"
    assert raised.value.index == 1
    assert len(list(rest.table.query_entities("PartitionKey eq 'p'"))) == 5  # "new" was not written either
    with pytest.raises(ResourceExistsError):
        writer.insert({"PartitionKey": "p", "RowKey": "r0"})


@pytest.mark.parametrize("size", [0, 20_000, 300_000, 2 * 1024 * 1024 + 7])  # empty, inline, 2 and 9 chunks
def test_puts_round_trip_like_sdk_puts(rest: TableVault, sdk: TableVault, size: int) -> None:
    body = os.urandom(size)  # incompressible: the larger ones are chunked
    by_rest, by_sdk = put(rest, body), put(sdk, body)
    assert comparable(by_rest) == comparable(by_sdk)
    assert by_rest.envelope is not None  # sealed
    for vault in (rest, sdk):
        for record in (by_rest, by_sdk):
            stored = vault.get("school-a", record.submission_id)
            assert stored == record
            assert vault.read_body(stored) == body
    assert sorted(r.submission_id for r in rest.list(source="school-a")) == sorted(
        [by_rest.submission_id, by_sdk.submission_id])


def test_a_compressible_document_round_trips(rest: TableVault, sdk: TableVault, sample_results_xml: bytes) -> None:
    record = put(rest, sample_results_xml)
    assert record.compression == "gzip" and record.chunk_count == 0
    assert sdk.read_body(sdk.get("school-a", record.submission_id)) == sample_results_xml
    with sdk.open_body(record) as stream:
        assert stream.read() == sample_results_xml


def test_plain_entries_without_a_key(vault_storage: str, vault_table: str) -> None:
    vault = TableVault.from_connection_string(vault_storage, vault_table)
    record = put(vault, b"<mcq-test-results/>")
    assert record.format_version == 1 and record.envelope is None
    assert vault.read_body(vault.get("school-a", record.submission_id)) == b"<mcq-test-results/>"


@pytest.mark.parametrize("size", [100, 400_000])  # inline head, chunked body
def test_a_second_put_of_one_id_is_idempotent_or_refused(rest: TableVault, size: int) -> None:
    sid = str(ULID())
    body = os.urandom(size)
    first = put(rest, body, sid)
    rest.record_status("school-a", sid, {"validatedAt": RECEIVED})
    again = put(rest, body, sid)
    assert again == rest.get("school-a", sid) and again.envelope == first.envelope  # the first put stands
    assert again.status == {"validatedAt": RECEIVED}
    with pytest.raises(VaultError, match="different body"):
        put(rest, os.urandom(size), sid)
    assert rest.read_body(rest.get("school-a", sid)) == body


def test_a_conflict_inside_a_shared_transaction_takes_the_idempotency_path(rest: TableVault) -> None:
    taken, same = str(ULID()), str(ULID())
    put(rest, b"<first/>", taken)
    put(rest, b"<same/>", same)
    commits = rest._group_commit()
    # The partition's leader is held inside an insert of its own until three puts have queued behind
    # it; it then commits them in one transaction, which the taken id fails as a whole.
    release, transactions = threading.Event(), []
    submit, create = commits._submit, commits._create
    commits._submit = lambda entities: (transactions.append(len(entities)), submit(entities))
    commits._create = lambda entity: (entity["RowKey"] != "hold" or release.wait(30), create(entity))
    leader = threading.Thread(target=commits.insert, args=({"PartitionKey": "school-a", "RowKey": "hold"}, 1))
    leader.start()
    answers: dict[str, object] = {}

    def run(name: str, body: bytes, sid: str | None) -> None:
        try:
            answers[name] = put(rest, body, sid)
        except VaultError as exc:
            answers[name] = exc

    writers = [threading.Thread(target=run, args=args) for args in
               (("other", b"<other/>", taken), ("same", b"<same/>", same), ("new", b"<new/>", None))]
    for t in writers:
        t.start()
    deadline = time.monotonic() + 30
    while len(commits._pending.get("school-a", ())) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for t in [leader, *writers]:
        t.join()

    assert transactions == [3]  # one transaction with all three, refused as a whole
    assert isinstance(answers["other"], VaultError) and "different body" in str(answers["other"])
    assert answers["same"].submission_id == same and rest.read_body(answers["same"]) == b"<same/>"
    assert rest.read_body(rest.get("school-a", answers["new"].submission_id)) == b"<new/>"
    assert rest.read_body(rest.get("school-a", taken)) == b"<first/>"


def test_sdk_table_client_fallback_keeps_working(vault_storage: str, vault_table: str, kek: LocalKeyFile) -> None:
    vault = TableVault(TableClient.from_connection_string(vault_storage, vault_table), kek=kek)
    record = put(vault, b"<doc/>")
    assert vault.read_body(vault.get("school-a", record.submission_id)) == b"<doc/>"
