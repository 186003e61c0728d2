"""host.json and queues.json must agree on message locks (issue #12).

The Functions host renews a message's lock while the function runs, up to
`extensions.serviceBus.maxAutoLockRenewalDuration`; a run that outlives the renewal loses its lock,
the message is redelivered while the first run is still working, and its settlement fails. So the
renewal must cover `functionTimeout`. The queue's own `lockDuration` is then only the gap between
renewals and how long a crashed instance holds a message: short (at most a minute) means a message
whose instance died is redelivered quickly.
"""
from __future__ import annotations

import json
import re
from datetime import timedelta

from tests.infra.bicep_model import ROOT, queue_spec


def host_timespan(value: str) -> timedelta:
    """A host.json TimeSpan: `hh:mm:ss` or `d.hh:mm:ss`."""
    match = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})", value)
    assert match, f"not a TimeSpan: {value!r}"
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def iso_duration(value: str) -> timedelta:
    """An ISO 8601 duration as Service Bus uses it (P1D, PT5M, PT30S, P1DT2H)."""
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", value)
    assert match and value not in ("P", "PT"), f"not an ISO 8601 duration: {value!r}"
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def test_duration_parsers() -> None:
    assert host_timespan("00:10:00") == timedelta(minutes=10)
    assert host_timespan("1.00:00:00") == timedelta(days=1)
    assert iso_duration("PT1M") == timedelta(minutes=1) and iso_duration("P14D") == timedelta(days=14)
    assert iso_duration("PT30S") == timedelta(seconds=30)


def test_lock_renewal_covers_the_function_timeout() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    timeout = host_timespan(host["functionTimeout"])
    renewal = host_timespan(host["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"])
    assert renewal >= timeout, (
        f"host.json: maxAutoLockRenewalDuration {renewal} < functionTimeout {timeout}: a long run loses "
        "its message lock and the message is processed twice")


def test_queue_lock_duration_is_at_most_one_minute() -> None:
    spec = queue_spec()
    for queue in spec["queues"]:
        lock = iso_duration({**spec["defaults"], **queue}["lockDuration"])
        assert timedelta(0) < lock <= timedelta(minutes=1), (
            f"queue {queue['name']}: lockDuration {lock} (PT1M at most; the host renews it)")
