"""Student names never leave the vault: not into PostgreSQL (any table, any column), not into the logs.

Imports the sample file through the local host, lets the whole pipeline run (and reads the status and
the aggregate, as a client would), then searches the host's log output and every row of every
PostgreSQL table, as text, for each first and last name in the file.
"""
from __future__ import annotations

import re

import psycopg
import pytest
from lxml import etree

from devhost.testing import start_host_process
from tests.e2e.test_pipeline_e2e import post, request, wait_status

pytestmark = pytest.mark.e2e


def names_in(document: bytes) -> set[str]:
    root = etree.fromstring(document)
    return {el.text.strip() for el in root.iter("first-name", "last-name") if el.text and el.text.strip()}


def found(name: str, text: str) -> bool:
    # A whole word, case as written: ciphertext in base64 may hold any short run of letters inside a word.
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", text) is not None


def every_row_as_text(database_url: str) -> dict[str, list[str]]:
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        return {f"{schema}.{table}": [row[0] for row in conn.execute(
            psycopg.sql.SQL("SELECT t::text FROM {}.{} AS t").format(psycopg.sql.Identifier(schema),
                                                                     psycopg.sql.Identifier(table)))]
                for schema, table in tables}


def test_names_in_the_sample_reach_neither_postgres_nor_the_logs(database_url, vault_storage, vault_table,
                                                                 sample_results_xml, tmp_path) -> None:
    names = names_in(sample_results_xml)
    assert {"KJ", "Alysander", "Jim"} <= names and len(names) >= 10
    env = {"MARKR_DATABASE_URL": database_url, "VaultStorage": vault_storage, "MARKR_VAULT_TABLE": vault_table,
           "MARKR_BUS": "local", "MARKR_IMPORT_WAIT_SECONDS": "60", "MARKR_VAULT_KEY_FILE": str(tmp_path / "kek.json")}
    host = start_host_process(env).wait_ready()
    try:
        status, _, body = post(host.base_url, sample_results_xml)
        assert status == 201, body
        sid = body["submissionId"]
        wait_status(host.base_url, sid)
        assert request(host.base_url, "GET", "/api/results/9863/aggregate")[0] == 200
        assert request(host.base_url, "GET", f"/api/submissions/{sid}")[0] == 200
        async_status, _, queued = post(host.base_url, sample_results_xml, respond_async=True)
        assert async_status == 202
        wait_status(host.base_url, queued["submissionId"])
    finally:
        host.terminate()
    log = host.log()
    assert sid in log  # the log does record the pipeline's work, so searching it means something
    rows = every_row_as_text(database_url)
    assert {"public.submissions", "public.validated_results", "public.student_results"} <= set(rows)
    assert any(sid in row for row in rows["public.submissions"])
    assert sum(len(r) for r in rows.values()) > 100  # the sample's rows are there
    leaks = sorted({(name, where) for name in names for where, texts in [("host log", [log]), *rows.items()]
                    if any(found(name, text) for text in texts)})
    assert not leaks, f"student names outside the vault: {leaks}"
