"""Support for the ops end-to-end tests (no tests here): the real function app on the in-process
local host, over a test's own database and vault table, and the markr-ops CLI run against it."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from devhost.host import LocalFunctionHost
from devhost.stack import ROOT
from markr_ops.cli import main
from tests.auth import with_auth

FINAL = {"completed", "rejected", "failed"}


@dataclass
class AppHost:
    host: LocalFunctionHost
    database_url: str
    settings_file: Path

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict]:
        url = self.host.base_url.removesuffix("/api") + path
        req = urllib.request.Request(url, data=body, method=method, headers=with_auth(method, path, headers))
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def get(self, path: str) -> tuple[int, dict]:
        return self.request("GET", path)

    def wait_for_status(self, submission_id: str, wanted: set[str], timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.get(f"/api/submissions/{submission_id}")
            if status == 200 and body["status"] in wanted:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{submission_id} is {body.get('status')!r}, not {wanted}, after {timeout} s: {body}")
            time.sleep(0.1)


def post_document(app: AppHost, body: bytes) -> str:
    """POST /api/import without waiting for the verdict; returns the submission id."""
    status, answer = app.request("POST", "/api/import", body,
                                 {"Content-Type": "text/xml+markr", "Prefer": "respond-async"})
    assert status == 202, answer
    return answer["submissionId"]


def cli(app: AppHost, *args: str, input: str | None = None) -> Result:
    # A wide terminal, so tables show whole ids.
    return CliRunner().invoke(main, ["--settings", str(app.settings_file), *args], input=input,
                              env={"COLUMNS": "250"})


@contextlib.contextmanager
def start_app(database_url: str, vault_storage: str, vault_table: str, monkeypatch: pytest.MonkeyPatch,
              tmp_path: Path, *, sweep_schedule: str = "*/1 * * * * *") -> Iterator[AppHost]:
    from shared import bootstrap
    from shared.bus.local import LocalQueueEngine

    for name, value in {"MARKR_DATABASE_URL": database_url, "VaultStorage": vault_storage,
                        "MARKR_VAULT_TABLE": vault_table, "MARKR_BUS": "local",
                        "MARKR_IMPORT_WAIT_SECONDS": "30",
                        "MARKR_DEAD_LETTER_SWEEP_SCHEDULE": sweep_schedule,
                        "MARKR_RETRY_BACKOFF_MAX_SECONDS": "0.2"}.items():
        monkeypatch.setenv(name, value)
    settings_file = tmp_path / "ops.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
    bootstrap.reset()
    # A FunctionApp indexes its functions only once, so each host gets a fresh one, built by running
    # function_app.py as a module of its own (sys.modules["function_app"] stays untouched for others).
    spec = importlib.util.spec_from_file_location("function_app_for_ops_tests", ROOT / "function_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    engine = LocalQueueEngine(database_url)
    host = LocalFunctionHost(module.app, engine, port=0).start()
    try:
        yield AppHost(host, database_url, settings_file)
    finally:
        host.stop(10)
        engine.close()
        bootstrap.reset()
