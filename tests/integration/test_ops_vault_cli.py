"""`markr-ops retract` and `markr-ops vault encrypt/rewrap/rotate-local-key` against the real stack."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from ulid import ULID

from markr_ops.cli import main
from shared.bootstrap import services
from shared.vault.table_vault import TableVault
from tests.documents import make_document
from tests.pipeline_harness import pipeline_env

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline(monkeypatch, database_url, vault_storage, vault_table, tmp_path):
    monkeypatch.chdir(tmp_path)  # default checkpoints go under the current directory
    (tmp_path / "settings.json").write_text('{"Values": {}}')
    with pipeline_env(monkeypatch, database_url, vault_storage, vault_table,
                      MARKR_VAULT_KEY_FILE=str(tmp_path / "kek.json")) as p:
        yield p


def ops(tmp_path, *args):
    return CliRunner().invoke(main, ["--settings", str(tmp_path / "settings.json"), *args], env={"COLUMNS": "250"})


def test_retract_command(pipeline, tmp_path) -> None:
    answer = pipeline.post_document(make_document([{"student_number": "1", "test_id": "T1"}]))
    pipeline.drain()
    sid = answer.json()["submissionId"]
    assert ops(tmp_path, "retract", sid).exit_code == 2  # --reason is required
    result = ops(tmp_path, "retract", sid, "--reason", "wrong batch", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["status"], report["studentsRemoved"], report["alreadyRetracted"]) == ("retracted", 1, False)
    again = ops(tmp_path, "retract", sid, "--reason", "x")
    assert again.exit_code == 0 and "already retracted" in again.output
    missing = ops(tmp_path, "retract", str(ULID()), "--reason", "x")
    assert missing.exit_code == 1 and "submission-not-found" in missing.output


def test_vault_encrypt_rotate_and_rewrap_commands(pipeline, tmp_path, vault_storage, vault_table) -> None:
    plain = TableVault.from_connection_string(vault_storage, vault_table)  # as written before encryption
    for _ in range(3):
        plain.put(source="default", submission_id=str(ULID()), content_type="text/xml+markr",
                  body=make_document([{}]), received_at=datetime.now(UTC))
    result = ops(tmp_path, "vault", "encrypt", "--all", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) | {"keyId": "-"} == {
        "checkpoint": ".local/ops/vault-encrypt-checkpoint.jsonl", "entries": 3, "sealed": 3, "alreadySealed": 0,
        "doneEarlier": 0, "keyId": "-"}
    assert (tmp_path / ".local/ops/vault-encrypt-checkpoint.jsonl").exists()
    assert json.loads(ops(tmp_path, "vault", "encrypt", "--all", "--json").output)["doneEarlier"] == 3
    rotated = ops(tmp_path, "vault", "rotate-local-key")
    assert rotated.exit_code == 0 and "local/2" in rotated.output
    rewrap = json.loads(ops(tmp_path, "vault", "rewrap", "--json").output)
    assert (rewrap["rewrapped"], rewrap["keyId"]) == (3, "local/2")
    vault = services().vault
    assert {r.envelope.key_id for r in vault.list()} == {"local/2"}
    assert all(vault.read_body(r).startswith(b"<?xml") or b"<mcq-test-results" in vault.read_body(r)
               for r in vault.list())
