"""Telemetry: Azure Monitor (OpenTelemetry) when APPLICATIONINSIGHTS_CONNECTION_STRING is set.

`configure_telemetry()` is called once at start-up (function_app.py); without the setting, or
without the azure-monitor-opentelemetry package, it does nothing and the app runs as before.
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
        if not _enabled():
            install_log_filter()
            return False
        try:
            from azure.monitor.opentelemetry import configure_azure_monitor
        except ImportError:
            log.warning("APPLICATIONINSIGHTS_CONNECTION_STRING is set but azure-monitor-opentelemetry is "
                        "not installed: telemetry stays off")
            install_log_filter()
            return False
        configure_azure_monitor()
        # After configure_azure_monitor: its export handler sits on the root logger now.
        install_log_filter()
        return True


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
