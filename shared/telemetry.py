"""Telemetry: Azure Monitor (OpenTelemetry) when APPLICATIONINSIGHTS_CONNECTION_STRING is set.

`configure_telemetry()` is called once at start-up (function_app.py); without the setting, or
without the azure-monitor-opentelemetry package, it exports nothing and the app runs as before.
With it, PostgreSQL calls (psycopg 3, pooled or not) become dependency spans when
opentelemetry-instrumentation-psycopg is installed.

Exported once: in Azure the app settings are `PYTHON_ENABLE_OPENTELEMETRY=true` (the Python worker
hands the host's trace context to OpenTelemetry, so our spans join the host's invocation trace) and
no `PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY`: with that one the worker calls
`configure_azure_monitor()` itself, so this module then leaves the exporter alone and only adds the
PostgreSQL instrumentation, rather than installing a second exporter that would send everything twice.

The Azure SDK loggers (HTTP request/response dumps, AMQP link chatter) are set to WARNING either way.
`submission_context(id)` tags the current span with `markr.submission_id` and every log record
emitted inside it with a `submission_id` attribute (a custom dimension in Application Insights).
"""
from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

SPAN_ATTRIBUTE = "markr.submission_id"
_submission_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("markr_submission_id", default=None)
_lock = threading.Lock()
_configured = False

# Set by the Azure Functions Python worker's own Azure Monitor set-up (see the module docstring).
WORKER_CONFIGURES_AZURE_MONITOR = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
# Chatty at INFO: every HTTP request and response with headers, every AMQP link state change.
QUIET_LOGGERS = ("azure", "azure.core.pipeline.policies.http_logging_policy", "azure.servicebus", "uamqp")


class SubmissionIdFilter(logging.Filter):
    """Adds `submission_id` to records logged inside submission_context (an explicit extra= wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _submission_id.get()
        if current is not None and not hasattr(record, "submission_id"):
            record.submission_id = current
        return True


_FILTER = SubmissionIdFilter()


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Put the filter on `logger` (default root) and its handlers; handlers added later need this again."""
    target = logger or logging.getLogger()
    for holder in (target, *target.handlers):
        if _FILTER not in holder.filters:
            holder.addFilter(_FILTER)


def configure_telemetry() -> bool:
    """Send traces, logs and metrics to Application Insights if configured. Returns whether it is on.

    Idempotent: later calls return the first call's answer.
    """
    global _configured
    with _lock:
        if _configured:
            return _enabled()
        _configured = True
        quiet_azure_sdk_loggers()
        if not _enabled():
            install_log_filter()
            return False
        if _worker_configures_azure_monitor():
            log.info("%s=true: the Functions worker configured Azure Monitor; not configuring it again",
                     WORKER_CONFIGURES_AZURE_MONITOR)
        else:
            try:
                from azure.monitor.opentelemetry import configure_azure_monitor
            except ImportError:
                log.warning("APPLICATIONINSIGHTS_CONNECTION_STRING is set but azure-monitor-opentelemetry is "
                            "not installed: telemetry stays off")
                install_log_filter()
                return False
            configure_azure_monitor()
        instrument_psycopg()
        # After configure_azure_monitor: its export handler sits on the root logger now.
        install_log_filter()
        return True


def quiet_azure_sdk_loggers(level: int = logging.WARNING) -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)


def instrument_psycopg() -> bool:
    """PostgreSQL dependency spans for every psycopg 3 connection opened from now on (pool included)."""
    try:
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    except ImportError:
        log.warning("opentelemetry-instrumentation-psycopg is not installed: no PostgreSQL dependency spans")
        return False
    instrumentor = PsycopgInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
    return True


def _worker_configures_azure_monitor() -> bool:
    # The worker reads it as true for 1, true, t, yes or y (azure_functions_worker utils is_true_like).
    return os.environ.get(WORKER_CONFIGURES_AZURE_MONITOR, "").strip().lower() in {"1", "true", "t", "yes", "y"}


def _enabled() -> bool:
    return bool(os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip())


def _current_span():
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_current_span()


@contextmanager
def submission_context(submission_id: str) -> Iterator[None]:
    """Within the block, logs carry `submission_id` and the current span `markr.submission_id`."""
    span = _current_span()
    if span is not None and span.is_recording():
        span.set_attribute(SPAN_ATTRIBUTE, submission_id)
    token = _submission_id.set(submission_id)
    try:
        yield
    finally:
        _submission_id.reset(token)


def current_submission_id() -> str | None:
    return _submission_id.get()
