"""The parts of host.json the local host honours (route prefix, Service Bus pump settings)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from devhost.stack import ROOT

HOST_JSON = ROOT / "host.json"
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)$")


def parse_timespan(text: str) -> timedelta:
    """A .NET TimeSpan as host.json writes it: [d.]hh:mm:ss[.fff]."""
    match = _TIMESPAN.match(text.strip())
    if not match:
        raise ValueError(f"host.json: not a TimeSpan (expected [d.]hh:mm:ss): {text!r}")
    days, hours, minutes, seconds = match.groups()
    return timedelta(days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=float(seconds))


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    max_concurrent_calls: int = 16  # the Functions host's default
    max_auto_lock_renewal: timedelta = timedelta(minutes=5)
    max_message_batch_size: int = 1000  # the Service Bus extension's default (cardinality=MANY)
    # A batch trigger waits up to max_batch_wait to gather min_message_batch_size messages (extension 5.10+).
    min_message_batch_size: int = 1
    max_batch_wait: timedelta = timedelta(seconds=30)


def load_host_config(path: Path = HOST_JSON) -> HostConfig:
    if not path.exists():
        return HostConfig()
    spec = json.loads(path.read_text())
    extensions = spec.get("extensions", {})
    http = extensions.get("http", {})
    bus = extensions.get("serviceBus", {})
    default = HostConfig()
    renewal = bus.get("maxAutoLockRenewalDuration")
    wait = bus.get("maxBatchWaitTime")
    config = HostConfig(
        route_prefix=str(http.get("routePrefix", default.route_prefix)).strip("/"),
        max_concurrent_calls=int(bus.get("maxConcurrentCalls", default.max_concurrent_calls)),
        max_auto_lock_renewal=parse_timespan(renewal) if renewal else default.max_auto_lock_renewal,
        max_message_batch_size=int(bus.get("maxMessageBatchSize", default.max_message_batch_size)),
        min_message_batch_size=int(bus.get("minMessageBatchSize", default.min_message_batch_size)),
        max_batch_wait=parse_timespan(wait) if wait else default.max_batch_wait,
    )
    # The extension's own checks at start-up.
    if config.min_message_batch_size > config.max_message_batch_size:
        raise ValueError("host.json: minMessageBatchSize must not exceed maxMessageBatchSize")
    if config.max_batch_wait > timedelta(seconds=150):
        raise ValueError("host.json: maxBatchWaitTime may be at most 00:02:30")
    return config
