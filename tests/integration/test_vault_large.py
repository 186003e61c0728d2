"""A realistic 50,000-result document (~88 MB) round-trips through the vault byte for byte."""
from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime

import pytest
from ulid import ULID

from shared.vault.kek import LocalKeyFile
from shared.vault.table_vault import TableVault

FIRST_NAMES = ["KJ", "Jim", "Alysander", "Mei", "Tomasz", "Aroha", "Priya", "Sam", "Noor", "Lena"]
LAST_NAMES = ["Alysander", "Jim", "Nguyen", "Kowalski", "Te Ao", "Sharma", "O'Brien", "Haddad", "Berg"]


def results_document(count: int, *, seed: int = 0, questions: int = 20) -> bytes:
    """A results document shaped like /work/shared/data/sample_results.xml, with varied answers.

    Also used by bench/vault_roundtrip.py, so the benchmark and the test measure the same data.
    """
    rng = random.Random(seed)
    parts = ['<?xml version="1.0" encoding="UTF-8" ?>\n<mcq-test-results>\n']
    for i in range(count):
        minute, second = divmod(i, 60)
        parts.append(
            f'\t<mcq-test-result scanned-on="2017-12-04T{12 + minute // 60 % 12:02d}:{minute % 60:02d}:'
            f'{second:02d}+11:00">\n'
            f"\t\t<first-name>{rng.choice(FIRST_NAMES)}</first-name>\n"
            f"\t\t<last-name>{rng.choice(LAST_NAMES).replace(chr(39), '&apos;')}</last-name>\n"
            f"\t\t<student-number>{rng.randrange(1, 10**6):06d}</student-number>\n"
            f"\t\t<test-id>{9863 + i % 7}</test-id>\n"
        )
        obtained = 0
        for q in range(questions):
            awarded = rng.random() < 0.65
            obtained += awarded
            parts.append(
                f'\t\t<answer question="{q}" marks-available="1" marks-awarded="{int(awarded)}">'
                f"{rng.choice('ABCD')}</answer>\n"
            )
        parts.append(
            f'\t\t<summary-marks available="{questions}" obtained="{obtained}" />\n\t</mcq-test-result>\n'
        )
    parts.append("</mcq-test-results>\n")
    return "".join(parts).encode()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_fifty_thousand_result_document_round_trips(vault_storage: str, vault_table: str, sealed: bool,
                                                    tmp_path) -> None:
    document = results_document(50_000)
    assert len(document) > 80_000_000 and document.count(b"<answer ") == 1_000_000
    kek = LocalKeyFile(tmp_path / "kek.json") if sealed else None
    vault = TableVault.from_connection_string(vault_storage, vault_table, kek=kek)
    sid = str(ULID())
    record = vault.put(source="bulk", submission_id=sid, content_type="text/xml+markr", body=document,
                       received_at=datetime.now(UTC))

    stored = vault.get("bulk", sid)
    assert stored == record
    assert (stored.envelope is not None) == sealed
    assert stored.compression == "gzip" and stored.compressed_size < len(document) // 10
    assert stored.sha256 == hashlib.sha256(document).hexdigest()
    body = vault.read_body(stored)
    assert hashlib.sha256(body).hexdigest() == stored.sha256 and body == document
    del body
    streamed = hashlib.sha256()
    with vault.open_body(stored) as stream:
        while block := stream.read(1 << 20):
            streamed.update(block)
    assert streamed.hexdigest() == stored.sha256
