"""Run in a subprocess by test_telemetry_contract.py: configure telemetry, emit a span and logs, flush."""
from __future__ import annotations

import logging
import sys

from shared.telemetry import configure_telemetry, submission_context


def main() -> None:
    enabled = configure_telemetry()
    assert configure_telemetry() == enabled  # idempotent
    log = logging.getLogger("markr.probe")
    log.setLevel(logging.INFO)
    if enabled:
        from opentelemetry import trace

        tracer = trace.get_tracer("markr.probe")
        with tracer.start_as_current_span("probe-span"), submission_context("01PROBE"):
            log.warning("inside the submission context")
            log.warning("explicit id wins", extra={"submission_id": "01EXPLICIT"})
        log.warning("outside the submission context")
        from opentelemetry._logs import get_logger_provider

        trace.get_tracer_provider().force_flush()
        get_logger_provider().force_flush()
    handlers = len(logging.getLogger().handlers)
    print(f"enabled={enabled} root_handlers={handlers}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
