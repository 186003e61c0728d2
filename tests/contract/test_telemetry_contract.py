"""Contract: what configure_telemetry() sends to Application Insights ingestion.

The real azure-monitor-opentelemetry exporter runs in a subprocess (it installs process-wide
providers) and posts to a loopback HTTP server standing in for the ingestion endpoint.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.telemetry import SubmissionIdFilter, submission_context
from tests.infra.bicep_model import ROOT

IKEY = "00000000-0000-0000-0000-000000000001"


class Ingestion(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.envelopes: list[dict] = []


class _Handler(BaseHTTPRequestHandler):
    server: Ingestion

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        items = json.loads(raw)
        self.server.envelopes.extend(items if isinstance(items, list) else [items])
        answer = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def ingestion() -> Iterator[Ingestion]:
    server = Ingestion()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_probe(connection_string: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS", "OTEL_"))}
    env.update({
        "APPLICATIONINSIGHTS_CONNECTION_STRING": connection_string,
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",  # no calls to Microsoft's statsbeat endpoint
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel",  # no Azure VM metadata (IMDS) lookups
        # The distro's default rate-limited sampler (5 traces/s) may drop the probe's one span.
        "OTEL_TRACES_SAMPLER": "always_on",
        "PYTHONPATH": str(ROOT),
    })
    done = subprocess.run([sys.executable, "-m", "tests.contract.telemetry_probe"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_spans_and_logs_reach_ingestion_with_the_submission_id(ingestion: Ingestion) -> None:
    endpoint = f"http://127.0.0.1:{ingestion.server_address[1]}/"
    out = run_probe(f"InstrumentationKey={IKEY};IngestionEndpoint={endpoint}")
    assert "enabled=True" in out

    spans = [e for e in ingestion.envelopes if e["data"]["baseType"] == "RemoteDependencyData"
             or e["data"]["baseType"] == "RequestData"]
    probe = [s for s in spans if s["data"]["baseData"]["name"] == "probe-span"]
    assert len(probe) == 1
    assert probe[0]["data"]["baseData"]["properties"]["markr.submission_id"] == "01PROBE"
    assert probe[0]["iKey"] == IKEY

    logs = {e["data"]["baseData"]["message"]: e["data"]["baseData"].get("properties", {})
            for e in ingestion.envelopes if e["data"]["baseType"] == "MessageData"}
    assert logs["inside the submission context"]["submission_id"] == "01PROBE"
    assert logs["explicit id wins"]["submission_id"] == "01EXPLICIT"
    assert "submission_id" not in logs["outside the submission context"]


def test_without_a_connection_string_nothing_is_configured(ingestion: Ingestion) -> None:
    out = run_probe("")
    assert "enabled=False" in out
    assert ingestion.envelopes == []


def test_filter_tags_records_only_inside_the_context() -> None:
    import logging

    def record() -> logging.LogRecord:
        r = logging.LogRecord("t", logging.INFO, __file__, 1, "m", None, None)
        SubmissionIdFilter().filter(r)
        return r

    with submission_context("01A"):
        assert record().submission_id == "01A"
        with submission_context("01B"):
            assert record().submission_id == "01B"
        assert record().submission_id == "01A"
    assert not hasattr(record(), "submission_id")
