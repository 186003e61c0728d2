"""The encrypted vault on Azurite: envelope encryption, tampering, migration of plain entries, rotation."""
from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from azure.data.tables import UpdateMode
from ulid import ULID

from shared.ops.vault_keys import encrypt_all, rewrap_all
from shared.vault.chunks import chunk_partition
from shared.vault.kek import LocalKeyFile
from shared.vault.model import FORMAT_ENCRYPTED, FORMAT_PLAIN
from shared.vault.table_vault import TableVault, VaultCorruptionError

pytestmark = pytest.mark.integration

AT = datetime(2024, 3, 5, 9, 30, tzinfo=UTC)
NAME = b"Alysander"


@pytest.fixture
def kek(tmp_path) -> LocalKeyFile:
    return LocalKeyFile(tmp_path / "kek.json")


@pytest.fixture
def vault(vault_storage, vault_table, kek) -> TableVault:
    return TableVault.from_connection_string(vault_storage, vault_table, kek=kek)


@pytest.fixture
def plain_vault(vault_storage, vault_table) -> TableVault:
    """The same table without a key: writes entries as they were written before encryption."""
    return TableVault.from_connection_string(vault_storage, vault_table)


def put(vault: TableVault, body: bytes, source: str = "school-a", sid: str | None = None):
    return vault.put(source=source, submission_id=sid or str(ULID()), content_type="text/xml+markr", body=body,
                     received_at=AT)


def large_body() -> bytes:
    # Incompressible enough to need several chunks, with a name in clear at both ends.
    return NAME + os.urandom(700_000) + NAME


def raw_entities(vault: TableVault) -> list[dict]:
    return list(vault.table.list_entities())


def all_stored_bytes(vault: TableVault) -> bytes:
    out = b""
    for entity in raw_entities(vault):
        for value in entity.values():
            value = getattr(value, "value", value)
            out += value if isinstance(value, bytes) else str(value).encode()
    return out


def test_small_entry_is_sealed_inline_and_round_trips(vault, kek, sample_results_xml) -> None:
    record = put(vault, sample_results_xml)
    stored = vault.get(record.source, record.submission_id)
    assert stored.format_version == FORMAT_ENCRYPTED and stored.chunk_count == 0
    assert stored.envelope.algorithm == "AES-256-GCM" and stored.envelope.key_id == kek.current_key_id()
    assert stored.envelope.key_wrap == "A256KW" and len(stored.envelope.wrapped_key) == 40
    assert vault.read_body(stored) == sample_results_xml
    with vault.open_body(stored) as stream:
        assert stream.read() == sample_results_xml
    assert b"<mcq-test-results" not in stored.inline


def test_large_entry_is_sealed_over_chunks_and_round_trips(vault) -> None:
    body = large_body()
    record = put(vault, body)
    assert record.chunk_count > 1
    assert vault.read_body(vault.get(record.source, record.submission_id)) == body
    assert NAME not in all_stored_bytes(vault)
    partitions = {e["PartitionKey"] for e in raw_entities(vault)}
    assert partitions == {"school-a", chunk_partition("school-a", sealed=True)}


def test_a_tampered_inline_body_fails_authentication(vault, sample_results_xml) -> None:
    record = put(vault, sample_results_xml)
    entity = vault.table.get_entity(record.source, record.submission_id)
    body = bytearray(entity["Body"].value if hasattr(entity["Body"], "value") else entity["Body"])
    body[len(body) // 2] ^= 1
    entity["Body"] = bytes(body)
    vault.table.update_entity(entity, mode=UpdateMode.REPLACE)
    with pytest.raises(VaultCorruptionError, match="fails authentication"):
        vault.read_body(vault.get(record.source, record.submission_id))


def test_a_tampered_chunk_fails_authentication(vault) -> None:
    record = put(vault, large_body())
    chunk = next(e for e in raw_entities(vault) if e["PartitionKey"].endswith("~sealed"))
    data = bytearray(chunk["D1"].value if hasattr(chunk["D1"], "value") else chunk["D1"])
    data[7] ^= 0x80
    chunk["D1"] = bytes(data)
    vault.table.update_entity(chunk, mode=UpdateMode.REPLACE)
    with pytest.raises(VaultCorruptionError):
        vault.read_body(vault.get(record.source, record.submission_id))


def test_a_ciphertext_moved_to_another_entry_fails(vault, sample_results_xml) -> None:
    first = put(vault, sample_results_xml)
    second = put(vault, sample_results_xml.replace(b"KJ", b"XY"))
    donor = vault.table.get_entity(first.source, first.submission_id)
    target = vault.table.get_entity(second.source, second.submission_id)
    for name in ("Body", "WrappedKey", "Nonce", "KeyId", "CompressedSize", "Sha256", "ByteSize"):
        target[name] = donor[name]
    vault.table.update_entity(target, mode=UpdateMode.REPLACE)
    with pytest.raises(VaultCorruptionError, match="tampered or moved"):
        vault.read_body(vault.get(second.source, second.submission_id))


def test_plain_entries_stay_readable_and_encrypt_all_seals_them_resumably(vault, plain_vault, sample_results_xml,
                                                                          tmp_path) -> None:
    small, big = put(plain_vault, sample_results_xml), put(plain_vault, large_body())
    assert small.format_version == FORMAT_PLAIN and big.chunk_count > 1
    assert vault.read_body(vault.get(big.source, big.submission_id)).startswith(NAME)  # readable as is
    checkpoint = tmp_path / "encrypt.jsonl"
    seen = []
    report = encrypt_all(vault, checkpoint=checkpoint, batch=1, progress=lambda d, t: seen.append((d, t)))
    assert (report.total, report.changed, report.skipped) == (2, 2, 0)
    assert seen[-1] == (2, 2)
    for record, body in ((small, sample_results_xml), (big, None)):
        now = vault.get(record.source, record.submission_id)
        assert now.format_version == FORMAT_ENCRYPTED
        read = vault.read_body(now)
        assert read == body if body else read.startswith(NAME) and len(read) == big.byte_size
    assert NAME not in all_stored_bytes(vault)  # the plain chunks are gone
    assert {e["PartitionKey"] for e in raw_entities(vault)} == {"school-a", "school-a~sealed"}
    # A second run resumes from the checkpoint: nothing left to do.
    again = encrypt_all(vault, checkpoint=checkpoint)
    assert (again.changed, again.already) == (0, 2)
    # Restarted, it finds everything sealed already.
    assert encrypt_all(vault, checkpoint=checkpoint, restart=True).skipped == 2


def test_an_interrupted_encrypt_leaves_every_entry_readable_and_finishes_later(vault, plain_vault, tmp_path,
                                                                              monkeypatch) -> None:
    record = put(plain_vault, large_body())
    import shared.vault.table_vault as tv

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tv, "delete_chunks", crash)  # sealed and switched over, plain chunks not yet deleted
    with pytest.raises(KeyboardInterrupt):
        encrypt_all(vault, checkpoint=tmp_path / "cp.jsonl")
    monkeypatch.undo()
    assert vault.read_body(vault.get(record.source, record.submission_id)).startswith(NAME)
    report = encrypt_all(vault, checkpoint=tmp_path / "cp.jsonl")
    assert report.skipped == 1  # found sealed; its leftover plain chunks deleted now
    assert NAME not in all_stored_bytes(vault)


def test_rotation_then_rewrap_moves_only_the_wrapped_key(vault, kek, sample_results_xml) -> None:
    small, big = put(vault, sample_results_xml), put(vault, large_body())
    old_key = kek.current_key_id()
    sealed_before = vault.get(small.source, small.submission_id).inline
    new_key = kek.rotate()
    assert new_key != old_key
    # Entries under the old version stay readable; new ones use the new version.
    assert vault.read_body(vault.get(small.source, small.submission_id)) == sample_results_xml
    assert put(vault, b"<x/>").envelope.key_id == new_key
    report = rewrap_all(vault)
    assert (report.changed, report.key_id) == (2, new_key)
    after = vault.get(small.source, small.submission_id)
    assert after.envelope.key_id == new_key and after.inline == sealed_before  # the body was not re-encrypted
    assert vault.read_body(after) == sample_results_xml
    assert vault.read_body(vault.get(big.source, big.submission_id)).endswith(NAME)
    assert rewrap_all(vault).changed == 0


def test_erase_leaves_a_tombstone_and_nothing_of_the_body(vault, sample_results_xml) -> None:
    record = put(vault, large_body())
    tomb = vault.erase(record.source, record.submission_id, reason="wrong batch", at=AT)
    assert tomb["sha256"] == record.sha256 and tomb["reason"] == "wrong batch"
    assert vault.get(record.source, record.submission_id) is None
    assert vault.find(record.submission_id) is None and list(vault.list()) == []
    entities = raw_entities(vault)
    assert len(entities) == 1 and entities[0]["Tombstone"] is True and entities[0]["Sha256"] == record.sha256
    assert vault.erase(record.source, record.submission_id, reason="again", at=AT)["reason"] == "wrong batch"


class CountedKek:
    """The local key file, with its calls counted (each one a Key Vault round trip in Azure)."""

    def __init__(self, kek: LocalKeyFile) -> None:
        self.kek, self.wraps, self.unwraps = kek, 0, 0

    def current_key_id(self) -> str:
        return self.kek.current_key_id()

    def wrap(self, data_key: bytes):
        self.wraps += 1
        return self.kek.wrap(data_key)

    def unwrap(self, key_id: str, algorithm: str, wrapped: bytes) -> bytes:
        self.unwraps += 1
        return self.kek.unwrap(key_id, algorithm, wrapped)


def test_many_entries_cost_one_wrap_to_write_and_one_unwrap_to_read_elsewhere(vault_storage, vault_table, kek,
                                                                              sample_results_xml) -> None:
    writer_kek, reader_kek = CountedKek(kek), CountedKek(LocalKeyFile(kek.path))
    writer = TableVault.from_connection_string(vault_storage, vault_table, kek=writer_kek)
    records = [put(writer, sample_results_xml.replace(b"KJ", f"K{i}".encode())) for i in range(20)]
    records.append(put(writer, large_body()))
    assert writer_kek.wraps == 1
    assert len({r.envelope.wrapped_key for r in records}) == 1 and len({r.envelope.nonce for r in records}) == 21
    assert writer.read_body(records[0]) == sample_results_xml.replace(b"KJ", b"K0")
    assert writer_kek.unwraps == 0  # it sealed them: the data key is known
    reader = TableVault.from_connection_string(vault_storage, vault_table, kek=reader_kek)  # another process
    for i, record in enumerate(records[:-1]):
        assert reader.read_body(reader.get(record.source, record.submission_id)) == \
            sample_results_xml.replace(b"KJ", f"K{i}".encode())
    assert reader.read_body(reader.get(records[-1].source, records[-1].submission_id)).endswith(NAME)
    assert reader_kek.unwraps == 1
