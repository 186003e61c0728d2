"""Batch Service Bus triggers (cardinality=MANY) on the local queue engine, next to single-message ones:
batching, whole-batch settlement, redelivery and dead-lettering, lock renewal, shutdown, accounting."""
from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta

import azure.functions as func
import pytest

from devhost.discovery import discover
from devhost.host import LocalFunctionHost
from shared.bus.local import LocalQueueEngine
from shared.bus.port import OutgoingMessage
from tests.integration.test_devhost_servicebus import BASE, wait_until

pytestmark = pytest.mark.integration
BATCH, SINGLE = "batch-work", "single-work"


def mixed_app(batch_handler: Callable[[list[func.ServiceBusMessage]], None],
              single_handler: Callable[[func.ServiceBusMessage], None] | None = None) -> func.FunctionApp:
    app = func.FunctionApp()
    app.function_name("batch_worker")(app.service_bus_queue_trigger(
        arg_name="msgs", queue_name=BATCH, connection="ServiceBusConnection",
        cardinality=func.Cardinality.MANY)(batch_handler))
    app.function_name("single_worker")(app.service_bus_queue_trigger(
        arg_name="msg", queue_name=SINGLE, connection="ServiceBusConnection")(single_handler or (lambda msg: None)))
    return app


@pytest.fixture
def make_host(database_url: str) -> Iterator[Callable[..., tuple[LocalFunctionHost, LocalQueueEngine]]]:
    started: list[tuple[LocalFunctionHost, LocalQueueEngine]] = []

    def make(app: func.FunctionApp, *, start: bool = True, lock_seconds: float = 300, max_delivery_count: int = 5,
             **options) -> tuple[LocalFunctionHost, LocalQueueEngine]:
        definitions = {name: BASE.with_overrides(name=name, lock_duration=timedelta(seconds=lock_seconds),
                                                 max_delivery_count=max_delivery_count)
                       for name in (BATCH, SINGLE)}
        engine = LocalQueueEngine(database_url, definitions)
        host = LocalFunctionHost(app, engine, port=0, **options)
        started.append((host, engine))
        return (host.start() if start else host), engine

    yield make
    for host, engine in started:
        host.stop(5)
        engine.close()


def send(engine: LocalQueueEngine, queue: str, ids: list[str]) -> list[str]:
    engine.send_many(queue, [OutgoingMessage(body=json.dumps({"id": i}).encode(), message_id=i) for i in ids])
    return ids


def test_cardinality_many_is_discovered() -> None:
    found = {f.name: f for f in discover(mixed_app(lambda msgs: None))}
    assert found["batch_worker"].many and found["batch_worker"].arg_name == "msgs"
    assert not found["single_worker"].many


def test_batch_function_gets_every_available_message_in_one_call(make_host) -> None:
    calls: list[list[func.ServiceBusMessage]] = []
    host, engine = make_host(mixed_app(lambda msgs: calls.append(msgs)), start=False)
    ids = send(engine, BATCH, [f"m{i}" for i in range(7)])
    host.start()
    wait_until(lambda: calls and engine.counts(BATCH).active == 0, what="the batch to complete")
    [batch] = calls
    assert all(isinstance(m, func.ServiceBusMessage) for m in batch)
    assert [m.message_id for m in batch] == ids  # in sequence order
    assert [json.loads(m.get_body())["id"] for m in batch] == ids
    assert {m.delivery_count for m in batch} == {1}
    assert host.invocation_counts() == {"batch_worker": 1, "single_worker": 0}


def test_batches_are_capped_at_max_message_batch_size_one_at_a_time(make_host) -> None:
    sizes: list[int] = []
    running = 0
    peak = 0
    lock = threading.Lock()

    def handler(msgs: list[func.ServiceBusMessage]) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            sizes.append(len(msgs))
        time.sleep(0.2)  # room for a (wrong) second batch to start alongside
        with lock:
            running -= 1

    host, engine = make_host(mixed_app(handler), start=False, max_message_batch_size=3)
    send(engine, BATCH, [f"m{i}" for i in range(8)])
    host.start()
    wait_until(lambda: sum(sizes) == 8 and engine.counts(BATCH).active == 0, what="all batches")
    assert sizes == [3, 3, 2]
    assert peak == 1


def test_batch_on_an_empty_queue_starts_with_the_first_message(make_host) -> None:
    # The dispatcher never waits to fill a batch: a lone message is handed over at once.
    calls: list[list[str]] = []
    host, engine = make_host(mixed_app(lambda msgs: calls.append([m.message_id for m in msgs])))
    started = time.monotonic()
    send(engine, BATCH, ["lonely"])
    wait_until(lambda: calls, what="the lone message")
    assert calls == [["lonely"]]
    assert time.monotonic() - started < 30  # generous: a loaded machine; a fill-wait would be unbounded


def test_raising_batch_is_redelivered_whole_then_dead_lettered(make_host) -> None:
    deliveries: list[tuple[list[str], set[int]]] = []

    def handler(msgs: list[func.ServiceBusMessage]) -> None:
        deliveries.append(([m.message_id for m in msgs], {m.delivery_count for m in msgs}))
        raise RuntimeError("the batch failed")

    host, engine = make_host(mixed_app(handler), start=False, max_delivery_count=3)
    ids = send(engine, BATCH, ["a", "b", "c", "d"])
    host.start()
    wait_until(lambda: engine.counts(BATCH).dead_lettered == len(ids), what="dead-lettering")
    assert deliveries == [(ids, {1}), (ids, {2}), (ids, {3})]
    dead = engine.peek(BATCH, dead_letter=True)
    assert sorted(m.message_id for m in dead) == ids
    assert {m.dead_letter_reason for m in dead} == {"MaxDeliveryCountExceeded"}
    assert {m.dead_letter_error_description for m in dead} == {"RuntimeError: the batch failed"}
    assert engine.counts(BATCH).active == 0
    assert host.invocation_counts()["batch_worker"] == 3


@pytest.mark.parametrize("renewal", [300, 0], ids=["renewed", "not-renewed"])
def test_locks_of_a_long_batch_are_renewed(make_host, renewal: float) -> None:
    """While a batch runs four lock durations, another receiver must find none of its messages
    (and, as the control case, does find them all when renewal is off)."""
    calls: list[list[int]] = []
    release = threading.Event()

    def handler(msgs: list[func.ServiceBusMessage]) -> None:
        calls.append([m.delivery_count for m in msgs])
        release.wait(60)

    host, engine = make_host(mixed_app(handler), start=False, lock_seconds=1, max_auto_lock_renewal=renewal)
    send(engine, BATCH, ["x", "y", "z"])
    host.start()
    wait_until(lambda: calls, what="the batch to start")
    time.sleep(4)  # four lock durations: the locks hold only if they are renewed
    stolen = engine.receive(BATCH, max_messages=10)
    release.set()
    if renewal:
        assert stolen == []
        wait_until(lambda: engine.counts(BATCH).active == 0, what="completion")
        assert calls == [[1, 1, 1]]
    else:
        assert sorted(m.message_id for m in stolen) == ["x", "y", "z"]
        for m in stolen:
            engine.complete(BATCH, m.lock_token)


def test_stop_abandons_an_unfinished_batch(make_host) -> None:
    release, started = threading.Event(), threading.Event()

    def handler(msgs: list[func.ServiceBusMessage]) -> None:
        started.set()
        release.wait(30)

    host, engine = make_host(mixed_app(handler), start=False)
    ids = send(engine, BATCH, ["p", "q"])
    host.start()
    assert started.wait(30)
    assert host.stop(grace=0.3) is False
    release.set()
    again = engine.receive(BATCH, max_messages=10)
    assert sorted(m.message_id for m in again) == ids and {m.delivery_count for m in again} == {2}


def test_mixed_single_and_batch_functions(make_host, caplog: pytest.LogCaptureFixture) -> None:
    batches: list[list[str]] = []
    singles: list[str] = []
    lock = threading.Lock()

    def batch_handler(msgs: list[func.ServiceBusMessage]) -> None:
        with lock:
            batches.append([m.message_id for m in msgs])

    def single_handler(msg: func.ServiceBusMessage) -> None:
        assert isinstance(msg, func.ServiceBusMessage)
        with lock:
            singles.append(msg.message_id)

    with caplog.at_level(logging.INFO, logger="devhost.servicebus"):
        host, engine = make_host(mixed_app(batch_handler, single_handler), start=False)
        send(engine, BATCH, [f"b{i}" for i in range(5)])
        send(engine, SINGLE, [f"s{i}" for i in range(5)])
        host.start()
        wait_until(lambda: sum(map(len, batches)) == 5 and len(singles) == 5
                   and engine.counts(BATCH).active == engine.counts(SINGLE).active == 0, what="both queues")
    assert batches == [[f"b{i}" for i in range(5)]]
    assert sorted(singles) == [f"s{i}" for i in range(5)]
    counts = host.invocation_counts()
    assert counts == {"batch_worker": 1, "single_worker": 5}
    with urllib.request.urlopen(f"http://127.0.0.1:{host.port}/admin/host/invocations", timeout=30) as resp:
        assert json.loads(resp.read()) == counts
    lines = [r.getMessage() for r in caplog.records]
    # One Executed line per invocation; a batch's names its message count.
    assert len([t for t in lines if t.startswith("Executed 'batch_worker' (Succeeded, Messages=5, ")]) == 1
    assert len([t for t in lines if t.startswith("Executed 'single_worker' (Succeeded, Duration=")]) == 5
    assert any(t.startswith("Executing 'batch_worker' (queue batch-work, Messages=5, ") for t in lines)


def test_max_message_batch_size_comes_from_host_json(tmp_path) -> None:
    from devhost.hostjson import load_host_config

    path = tmp_path / "host.json"
    path.write_text(json.dumps({"version": "2.0", "extensions": {"serviceBus": {"maxMessageBatchSize": 50}}}))
    assert load_host_config(path).max_message_batch_size == 50
    path.write_text(json.dumps({"version": "2.0"}))
    assert load_host_config(path).max_message_batch_size == 1000  # the Service Bus extension's default


def test_min_message_batch_size_and_max_batch_wait_come_from_host_json(tmp_path) -> None:
    from devhost.hostjson import load_host_config

    path = tmp_path / "host.json"
    bus = {"maxMessageBatchSize": 100, "minMessageBatchSize": 50, "maxBatchWaitTime": "00:00:00.250"}
    path.write_text(json.dumps({"version": "2.0", "extensions": {"serviceBus": bus}}))
    config = load_host_config(path)
    assert (config.min_message_batch_size, config.max_batch_wait) == (50, timedelta(milliseconds=250))
    path.write_text(json.dumps({"version": "2.0"}))
    config = load_host_config(path)
    assert (config.min_message_batch_size, config.max_batch_wait) == (1, timedelta(seconds=30))  # the extension's
    for wrong in ({"maxMessageBatchSize": 10, "minMessageBatchSize": 11}, {"maxBatchWaitTime": "00:02:31"}):
        path.write_text(json.dumps({"version": "2.0", "extensions": {"serviceBus": wrong}}))
        with pytest.raises(ValueError, match="host.json"):
            load_host_config(path)


def test_a_batch_trigger_waits_for_its_minimum_batch_then_takes_what_came(make_host) -> None:
    from devhost.hostjson import HostConfig

    calls: list[list[str]] = []
    config = HostConfig(max_message_batch_size=100, min_message_batch_size=3, max_batch_wait=timedelta(seconds=2))
    host, engine = make_host(mixed_app(lambda msgs: calls.append([m.message_id for m in msgs])), config=config)
    send(engine, BATCH, ["a"])
    time.sleep(0.3)
    assert calls == []  # waiting for two more
    send(engine, BATCH, ["b", "c"])
    wait_until(lambda: calls, what="the filled batch")
    assert calls == [["a", "b", "c"]]


def test_a_batch_trigger_runs_a_partial_batch_once_the_wait_is_over(make_host) -> None:
    from devhost.hostjson import HostConfig

    calls: list[tuple[list[str], float]] = []
    config = HostConfig(max_message_batch_size=100, min_message_batch_size=10, max_batch_wait=timedelta(seconds=0.5))
    host, engine = make_host(mixed_app(lambda msgs: calls.append(([m.message_id for m in msgs], time.monotonic()))),
                             config=config)
    sent = time.monotonic()
    send(engine, BATCH, ["a", "b"])
    wait_until(lambda: calls, what="the partial batch")
    [(ids, at)] = calls
    assert ids == ["a", "b"] and 0.4 < at - sent < 3


def test_max_batch_wait_must_leave_half_the_lock(make_host) -> None:
    from devhost.hostjson import HostConfig

    config = HostConfig(min_message_batch_size=5, max_batch_wait=timedelta(seconds=20))
    with pytest.raises(ValueError, match="half of queue"):
        make_host(mixed_app(lambda msgs: None), config=config, lock_seconds=30, start=False)
