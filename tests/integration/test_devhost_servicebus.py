"""Service Bus triggers on the local queue engine: settlement, redelivery, dead-lettering, locks,
duplicates, concurrency and shutdown - against a real PostgreSQL."""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import azure.functions as func
import pytest

from devhost.host import LocalFunctionHost
from shared.bus.local import LocalQueueEngine
from shared.bus.port import OutgoingMessage
from shared.bus.queues import VALIDATION, QueueDefinition, queue_definitions

pytestmark = pytest.mark.integration

BASE = QueueDefinition(
    name="work", lock_duration=timedelta(minutes=5), default_message_time_to_live=timedelta(days=1),
    requires_duplicate_detection=True, duplicate_detection_window=timedelta(minutes=10),
    dead_lettering_on_message_expiration=True, max_delivery_count=5,
)


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def queue_app(handler: Callable[[func.ServiceBusMessage], None], queue: str = "%DEVHOST_TEST_QUEUE%"):
    app = func.FunctionApp()
    app.function_name("worker")(
        app.service_bus_queue_trigger(arg_name="msg", queue_name=queue, connection="ServiceBusConnection")(handler)
    )
    return app


@pytest.fixture
def make_host(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple]]:
    monkeypatch.setenv("DEVHOST_TEST_QUEUE", "work")
    started: list[tuple[LocalFunctionHost, LocalQueueEngine]] = []

    def make(handler, definition: QueueDefinition = BASE, **host_options) -> tuple[LocalFunctionHost, LocalQueueEngine]:
        monkeypatch.setenv("DEVHOST_TEST_QUEUE", definition.name)
        engine = LocalQueueEngine(database_url, {definition.name: definition})
        host = LocalFunctionHost(queue_app(handler), engine, port=0, **host_options).start()
        started.append((host, engine))
        return host, engine

    yield make
    for host, engine in started:
        host.stop(5)
        engine.close()


def send(engine: LocalQueueEngine, queue: str, message_id: str | None = None, **kwargs) -> str:
    message_id = message_id or uuid.uuid4().hex
    engine.send(queue, OutgoingMessage(body=kwargs.pop("body", b"{}"), message_id=message_id, **kwargs))
    return message_id


def test_message_reaches_the_function_as_a_service_bus_message(make_host) -> None:
    seen: list[func.ServiceBusMessage] = []

    def handler(msg: func.ServiceBusMessage) -> None:
        seen.append(msg)

    host, engine = make_host(handler)
    send(engine, "work", "m-1", body=b'{"a": 1}', content_type="application/json", correlation_id="c-9",
         application_properties={"kind": "test", "n": 3})
    wait_until(lambda: seen, what="delivery")
    msg = seen[0]
    assert isinstance(msg, func.ServiceBusMessage)
    assert msg.get_body() == b'{"a": 1}'
    assert (msg.message_id, msg.content_type, msg.correlation_id) == ("m-1", "application/json", "c-9")
    assert msg.delivery_count == 1
    assert msg.application_properties == {"kind": "test", "n": 3} == msg.user_properties
    assert msg.lock_token and msg.sequence_number > 0
    assert msg.enqueued_time_utc.tzinfo is not None
    assert msg.expires_at_utc - msg.enqueued_time_utc == BASE.default_message_time_to_live
    assert msg.locked_until > msg.enqueued_time_utc
    wait_until(lambda: engine.counts("work").active == 0, what="completion")


def test_failing_then_succeeding_handler_is_redelivered(make_host) -> None:
    failures = 3
    deliveries: list[int] = []

    def handler(msg: func.ServiceBusMessage) -> None:
        deliveries.append(msg.delivery_count)
        if len(deliveries) <= failures:
            raise ValueError(f"attempt {len(deliveries)} fails")

    host, engine = make_host(handler)
    send(engine, "work")
    wait_until(lambda: len(deliveries) == failures + 1 and engine.counts("work").active == 0, what="success")
    assert deliveries == [1, 2, 3, 4]
    assert engine.counts("work").dead_lettered == 0


def test_always_failing_handler_dead_letters_at_max_delivery_count(make_host) -> None:
    definition = queue_definitions()[VALIDATION]  # the real queue: maxDeliveryCount from schemas/queues.json
    assert definition.max_delivery_count == 10
    deliveries: list[int] = []

    def handler(msg: func.ServiceBusMessage) -> None:
        deliveries.append(msg.delivery_count)
        raise KeyError("document 7 is missing")

    host, engine = make_host(handler, definition)
    message_id = send(engine, VALIDATION)
    wait_until(lambda: engine.counts(VALIDATION).dead_lettered == 1, what="dead-lettering")
    assert deliveries == list(range(1, 11))
    [dead] = engine.peek(VALIDATION, dead_letter=True)
    assert dead.message_id == message_id
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
    assert dead.dead_letter_error_description == "KeyError: 'document 7 is missing'"
    assert engine.counts(VALIDATION).active == 0


def test_handler_outliving_its_lock_sees_redelivery(make_host, caplog: pytest.LogCaptureFixture) -> None:
    definition = BASE.with_overrides(name="short-lock", lock_duration=timedelta(seconds=1))
    second_started = threading.Event()
    deliveries: list[int] = []

    def handler(msg: func.ServiceBusMessage) -> None:
        deliveries.append(msg.delivery_count)
        if msg.delivery_count == 1:
            assert second_started.wait(30), "the message was not redelivered"
        else:
            second_started.set()

    with caplog.at_level(logging.WARNING, logger="devhost.servicebus"):
        host, engine = make_host(handler, definition, max_concurrent_calls=2, max_auto_lock_renewal=0)
        send(engine, "short-lock")
        wait_until(lambda: len(deliveries) == 2 and engine.counts("short-lock").active == 0, what="redelivery")
        # The first handler finished after its lock was gone: settling it is only a warning.
        wait_until(lambda: any("lock" in r.getMessage() and "lost" in r.getMessage() for r in caplog.records),
                   what="lock-lost warning")
    assert deliveries == [1, 2]
    # The consumer keeps working afterwards.
    send(engine, "short-lock", "after")
    wait_until(lambda: len(deliveries) == 3, what="next message")


def test_lock_is_renewed_while_the_handler_runs(make_host) -> None:
    # Renewed every half lock (1 s), so a renewal may run a second late on a loaded machine.
    definition = BASE.with_overrides(name="renewed", lock_duration=timedelta(seconds=2))
    deliveries: list[int] = []

    def handler(msg: func.ServiceBusMessage) -> None:
        deliveries.append(msg.delivery_count)
        time.sleep(6)  # three lock durations

    host, engine = make_host(handler, definition, max_concurrent_calls=2)
    send(engine, "renewed")
    wait_until(lambda: deliveries and engine.counts("renewed").active == 0, what="completion")
    assert deliveries == [1]


def test_duplicate_message_id_is_dropped(make_host) -> None:
    handled: list[str] = []

    def handler(msg: func.ServiceBusMessage) -> None:
        handled.append(msg.get_body().decode())

    host, engine = make_host(handler)
    send(engine, "work", "same", body=b"first")
    send(engine, "work", "same", body=b"second")
    send(engine, "work", "other", body=b"third")
    wait_until(lambda: "third" in handled and engine.counts("work").active == 0, what="delivery")
    assert sorted(handled) == ["first", "third"]


def test_max_concurrent_calls_is_respected(make_host) -> None:
    limit, running, peak = 3, 0, 0
    cond = threading.Condition()
    done: list[str] = []

    def handler(msg: func.ServiceBusMessage) -> None:
        nonlocal running, peak
        with cond:
            running += 1
            peak = max(peak, running)
            cond.notify_all()
            # Hold until `limit` handlers run at once, then a little longer: room for a (wrong) extra one.
            cond.wait_for(lambda: running >= limit, timeout=10)
        time.sleep(0.2)
        with cond:
            running -= 1
            done.append(msg.message_id)

    host, engine = make_host(handler, max_concurrent_calls=limit)
    for i in range(12):
        send(engine, "work", f"m{i}")
    wait_until(lambda: len(done) == 12, what="all messages")
    assert peak == limit


def test_stop_abandons_handlers_that_outlast_the_grace_period(make_host) -> None:
    release = threading.Event()
    started = threading.Event()

    def handler(msg: func.ServiceBusMessage) -> None:
        started.set()
        release.wait(30)

    host, engine = make_host(handler)
    message_id = send(engine, "work")
    assert started.wait(30)
    assert host.stop(grace=0.3) is False
    release.set()
    # Abandoned, not lost: receivable again at once, with its first delivery counted.
    [again] = engine.receive("work")
    assert again.message_id == message_id and again.delivery_count == 2
    engine.complete("work", again.lock_token)


def test_stop_lets_running_handlers_finish(make_host) -> None:
    started, finished = threading.Event(), threading.Event()

    def handler(msg: func.ServiceBusMessage) -> None:
        started.set()
        time.sleep(0.5)
        finished.set()

    host, engine = make_host(handler)
    send(engine, "work")
    assert started.wait(30)
    assert host.stop(grace=30) is True
    assert finished.is_set()
    counts = engine.counts("work")
    assert (counts.active, counts.dead_lettered) == (0, 0)
