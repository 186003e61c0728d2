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


def run_probe(connection_string: str, code: str | None = None, **extra_env: str) -> str:
    """Run tests.contract.telemetry_probe (or `code`) in a fresh interpreter with telemetry configured."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("APPLICATIONINSIGHTS", "OTEL_", "PYTHON_APPLICATIONINSIGHTS", "MARKR_"))}
    env.update({
        "APPLICATIONINSIGHTS_CONNECTION_STRING": connection_string,
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",  # no calls to Microsoft's statsbeat endpoint
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel",  # no Azure VM metadata (IMDS) lookups
        # The distro's default rate-limited sampler (5 traces/s) may drop the probe's one span.
        "OTEL_TRACES_SAMPLER": "always_on",
        "PYTHONPATH": str(ROOT),
        **extra_env,
    })
    command = ["-c", code] if code else ["-m", "tests.contract.telemetry_probe"]
    done = subprocess.run([sys.executable, *command], cwd=ROOT, env=env,
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


# What the Functions worker does with PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true (it calls
# configure_azure_monitor() before importing function_app), then what function_app does.
WORKER_THEN_APP = """
import azure.monitor.opentelemetry as distro
calls = []
real = distro.configure_azure_monitor
distro.configure_azure_monitor = lambda **kw: calls.append(kw)
import os
if os.environ.get("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY") == "true":
    distro.configure_azure_monitor()  # the worker's own call
from shared.telemetry import configure_telemetry
enabled = configure_telemetry()
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
print(f"enabled={enabled} configure_calls={len(calls)} "
      f"psycopg={PsycopgInstrumentor().is_instrumented_by_opentelemetry}")
"""


@pytest.mark.parametrize(("worker_setting", "calls"), [("", 1), ("true", 1)])
def test_azure_monitor_is_configured_exactly_once(worker_setting: str, calls: int) -> None:
    """Our own call when the worker does not configure Azure Monitor; none when it does (it already has)."""
    extra = {"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": worker_setting} if worker_setting else {}
    out = run_probe(f"InstrumentationKey={IKEY};IngestionEndpoint=http://127.0.0.1:9/", WORKER_THEN_APP,
                    **extra)
    assert f"enabled=True configure_calls={calls} psycopg=True" in out, out


PSYCOPG_PROBE = """
import os, psycopg
from shared.telemetry import configure_telemetry
assert configure_telemetry()
from shared.db.connection import make_pool
url = os.environ["PROBE_DATABASE_URL"]
with psycopg.connect(url) as conn:
    conn.execute("SELECT 41 + 1 AS direct_call").fetchone()
pool = make_pool(url, max_size=1)
with pool.connection() as conn:
    conn.execute("SELECT 'pooled' AS pooled_call").fetchone()
pool.close()
from opentelemetry import trace
trace.get_tracer_provider().force_flush()
print("done")
"""


@pytest.mark.integration
def test_postgresql_calls_are_dependency_spans(ingestion: Ingestion, postgres_server: str) -> None:
    endpoint = f"http://127.0.0.1:{ingestion.server_address[1]}/"
    out = run_probe(f"InstrumentationKey={IKEY};IngestionEndpoint={endpoint}", PSYCOPG_PROBE,
                    PROBE_DATABASE_URL=postgres_server)
    assert "done" in out
    dependencies = [e["data"]["baseData"] for e in ingestion.envelopes
                    if e["data"]["baseType"] == "RemoteDependencyData"]
    postgres = [d for d in dependencies if d.get("type", "").lower() == "postgresql"]
    statements = " ".join(d.get("data", "") for d in postgres)
    assert "direct_call" in statements and "pooled_call" in statements, dependencies


def test_configure_telemetry_quiets_the_azure_sdk_loggers(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    import shared.telemetry as telemetry

    monkeypatch.setattr(telemetry, "_configured", False)
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    names = ("azure", "azure.core.pipeline.policies.http_logging_policy", "azure.servicebus", "uamqp")
    before = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(logging.INFO)
        assert telemetry.configure_telemetry() is False
        assert {name: logging.getLogger(name).level for name in names} == dict.fromkeys(names, logging.WARNING)
        assert not logging.getLogger("azure.servicebus").isEnabledFor(logging.INFO)
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)
