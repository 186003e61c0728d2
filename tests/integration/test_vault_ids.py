"""Vault.ids on Table Storage (Azurite): a key range of one source's ids, without bodies or chunks."""
from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from ulid import ULID

from shared.vault.table_vault import INLINE_BYTES, TableVault


def test_ids_are_one_source_s_ids_in_a_range_in_order(vault_storage: str, vault_table: str) -> None:
    vault = TableVault.from_connection_string(vault_storage, vault_table)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [str(ULID.from_datetime(t0 + timedelta(minutes=i))) for i in range(5)]
    for i, sid in enumerate(ids):
        body = os.urandom(INLINE_BYTES * 2) if i == 2 else b"<mcq-test-results/>"  # one chunked body
        vault.put(source="school-a", submission_id=sid, content_type="text/xml+markr", body=body,
                  received_at=t0 + timedelta(minutes=i))
    elsewhere = str(ULID.from_datetime(t0 + timedelta(minutes=10)))
    vault.put(source="school-b", submission_id=elsewhere, content_type="text/xml+markr", body=b"<x/>",
              received_at=t0)
    assert list(vault.ids("school-a", stop="ZZZZZZZZZZZZZZZZZZZZZZZZZZ")) == ids  # no chunk rows, no school-b
    assert list(vault.ids("school-a", start=ids[1], stop=ids[4])) == ids[1:4]
    assert list(vault.ids("school-b", stop=ids[4])) == []
    assert list(vault.ids("school-b", start=ids[4], stop="ZZZZZZZZZZZZZZZZZZZZZZZZZZ")) == [elsewhere]
