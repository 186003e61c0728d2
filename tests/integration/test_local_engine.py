"""The local queue engine against a real PostgreSQL: Service Bus semantics, with short durations."""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.bus.local import LocalQueueEngine, LockLostError, ReceivedMessage, UnknownQueueError
from shared.bus.port import OutgoingMessage
from shared.bus.queues import QueueDefinition

pytestmark = pytest.mark.integration

BASE = QueueDefinition(
    name="work",
    lock_duration=timedelta(minutes=5),
    default_message_time_to_live=timedelta(days=1),
    requires_duplicate_detection=True,
    duplicate_detection_window=timedelta(minutes=10),
    dead_lettering_on_message_expiration=True,
    max_delivery_count=3,
)
# Wide enough for several round trips on a loaded two-core machine before SHORT runs out.
SHORT = timedelta(seconds=2)
PAST_SHORT = 2.8  # sleep for SHORT durations to run out, with a margin
QUEUES = {
    q.name: q
    for q in [
        BASE,
        BASE.with_overrides(name="short-lock", lock_duration=SHORT),
        BASE.with_overrides(name="renew-lock", lock_duration=timedelta(seconds=3)),
        BASE.with_overrides(name="one-delivery", lock_duration=SHORT, max_delivery_count=1),
        BASE.with_overrides(name="short-ttl", default_message_time_to_live=SHORT),
        BASE.with_overrides(name="expiry-drops", default_message_time_to_live=SHORT,
                            dead_lettering_on_message_expiration=False),
        BASE.with_overrides(name="short-window", duplicate_detection_window=SHORT),
        BASE.with_overrides(name="no-dedupe", requires_duplicate_detection=False),
    ]
}


@pytest.fixture
def engine(database_url: str) -> Iterator[LocalQueueEngine]:
    e = LocalQueueEngine(database_url, QUEUES)
    yield e
    e.close()


def msg(message_id: str | None = None, body: bytes = b"{}", **kwargs) -> OutgoingMessage:
    return OutgoingMessage(body=body, message_id=message_id or uuid.uuid4().hex, **kwargs)


def only(messages: list[ReceivedMessage]) -> ReceivedMessage:
    assert len(messages) == 1, messages
    return messages[0]


def test_send_receive_complete(engine: LocalQueueEngine) -> None:
    engine.send("work", msg("m-1", b'{"n": 1}'))
    got = only(engine.receive("work", 10))
    assert (got.queue, got.message_id, got.body, got.delivery_count, got.state) == (
        "work", "m-1", b'{"n": 1}', 1, "active")
    assert got.lock_token and got.locked_until_utc is not None
    assert got.locked_until_utc > got.enqueued_time_utc
    assert got.enqueued_time_utc.tzinfo is not None and got.enqueued_time_utc.utcoffset() == timedelta(0)
    assert got.expires_at_utc - got.enqueued_time_utc == timedelta(days=1)
    assert engine.receive("work") == []  # locked
    engine.complete("work", got.lock_token)
    assert engine.receive("work") == []
    assert engine.counts("work").active == 0
    engine.ping()


def test_properties_round_trip(engine: LocalQueueEngine) -> None:
    props = {"source": "sheet-7", "attempt": 2, "score": 0.75, "final": True}
    body = bytes(range(256))
    engine.send("work", msg("p-1", body, content_type="application/octet-stream",
                            correlation_id="corr-9", application_properties=props))
    got = only(engine.receive("work"))
    assert got.body == body
    assert got.content_type == "application/octet-stream"
    assert got.correlation_id == "corr-9"
    assert got.application_properties == props
    assert isinstance(got.application_properties["final"], bool)


def test_send_many_keeps_order_and_drops_repeated_ids(engine: LocalQueueEngine) -> None:
    engine.send_many("work", [msg(f"b-{i}") for i in range(50)] + [msg("b-3")])
    got = engine.receive("work", 100)
    assert [m.message_id for m in got] == [f"b-{i}" for i in range(50)]
    sequence = [m.sequence_number for m in got]
    assert sequence == sorted(sequence)


def test_send_many_rejects_naive_schedule_and_sends_nothing(engine: LocalQueueEngine) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        engine.send_many("work", [msg("ok"), msg("bad", scheduled_enqueue_time_utc=datetime(2030, 1, 1))])
    assert engine.counts("work").active == 0


def test_unknown_queue(engine: LocalQueueEngine) -> None:
    with pytest.raises(UnknownQueueError, match="no-such-queue"):
        engine.send("no-such-queue", msg())
    with pytest.raises(UnknownQueueError):
        engine.receive("no-such-queue")
    with pytest.raises(UnknownQueueError):
        engine.counts("no-such-queue")


def test_scheduled_message_is_invisible_until_due(engine: LocalQueueEngine) -> None:
    due = datetime.now(UTC) + timedelta(seconds=1)
    engine.send("work", msg("later", scheduled_enqueue_time_utc=due))
    assert engine.receive("work") == []
    peeked = only(engine.peek("work"))
    assert peeked.state == "scheduled" and peeked.scheduled_enqueue_time_utc == due
    counts = engine.counts("work")
    assert (counts.active, counts.scheduled) == (0, 1)
    time.sleep(1.3)
    got = only(engine.receive("work"))
    assert got.message_id == "later" and got.state == "active"
    assert got.enqueued_time_utc >= due  # enqueued when it became active, as Service Bus reports it


def test_abandon_redelivers_with_higher_delivery_count(engine: LocalQueueEngine) -> None:
    engine.send("work", msg("a-1"))
    first = only(engine.receive("work"))
    engine.abandon("work", first.lock_token, "transient failure")
    second = only(engine.receive("work"))
    assert second.message_id == "a-1"
    assert second.delivery_count == 2
    assert second.lock_token != first.lock_token


def test_abandon_after_last_delivery_dead_letters(engine: LocalQueueEngine) -> None:
    engine.send("work", msg("poison"))
    for attempt in range(1, 4):  # max_delivery_count = 3
        got = only(engine.receive("work"))
        assert got.delivery_count == attempt
        engine.abandon("work", got.lock_token, f"failed attempt {attempt}")
    assert engine.receive("work") == []
    dead = only(engine.peek("work", dead_letter=True))
    assert dead.message_id == "poison" and dead.state == "deadlettered"
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
    assert dead.dead_letter_error_description == "failed attempt 3"
    assert dead.dead_lettered_at_utc is not None
    assert engine.counts("work").dead_lettered == 1


def test_expired_lock_redelivers_and_old_token_is_stale(engine: LocalQueueEngine) -> None:
    engine.send("short-lock", msg("slow"))
    first = only(engine.receive("short-lock"))
    time.sleep(PAST_SHORT)
    second = only(engine.receive("short-lock"))
    assert (second.message_id, second.delivery_count) == ("slow", 2)
    for settle in (engine.complete, engine.abandon, engine.renew_lock):
        with pytest.raises(LockLostError):
            settle("short-lock", first.lock_token)
    with pytest.raises(LockLostError):
        engine.dead_letter("short-lock", first.lock_token, "Bad")
    engine.complete("short-lock", second.lock_token)
    assert engine.counts("short-lock").active == 0


def test_expired_lock_is_refused_even_if_nobody_took_the_message(engine: LocalQueueEngine) -> None:
    # Service Bus refuses a settle once the lock ran out; the message stays for the next receiver.
    engine.send("short-lock", msg("late"))
    got = only(engine.receive("short-lock"))
    time.sleep(PAST_SHORT)
    for settle in (engine.complete, engine.abandon, engine.renew_lock):
        with pytest.raises(LockLostError):
            settle("short-lock", got.lock_token)
    with pytest.raises(LockLostError):
        engine.dead_letter("short-lock", got.lock_token, "Bad")
    again = only(engine.receive("short-lock"))
    assert (again.message_id, again.delivery_count, again.state) == ("late", 2, "active")
    engine.complete("short-lock", again.lock_token)
    assert engine.receive("short-lock") == []


def test_lock_expiry_after_last_delivery_dead_letters(engine: LocalQueueEngine) -> None:
    engine.send("one-delivery", msg("once"))
    only(engine.receive("one-delivery"))
    time.sleep(PAST_SHORT)
    assert engine.receive("one-delivery") == []
    dead = only(engine.peek("one-delivery", dead_letter=True))
    assert (dead.dead_letter_reason, dead.dead_letter_error_description) == (
        "MaxDeliveryCountExceeded", "lock expired")


def test_renew_lock_keeps_message_locked(engine: LocalQueueEngine) -> None:
    engine.send("renew-lock", msg("renewed"))
    got = only(engine.receive("renew-lock"))  # locked for 3 s
    time.sleep(1.5)
    renewed = engine.renew_lock("renew-lock", got.lock_token)
    assert renewed > got.locked_until_utc
    time.sleep(2.5)  # past the original lock (by 1 s), within the renewed one (by 2 s)
    assert engine.receive("renew-lock") == []
    engine.complete("renew-lock", got.lock_token)


def test_unknown_or_settled_token_raises(engine: LocalQueueEngine) -> None:
    engine.send("work", msg())
    got = only(engine.receive("work"))
    with pytest.raises(LockLostError):
        engine.complete("work", str(uuid.uuid4()))
    with pytest.raises(LockLostError):
        engine.complete("work", "not-a-token")
    with pytest.raises(LockLostError):
        engine.complete("no-dedupe", got.lock_token)  # a token only settles on its own queue
    engine.complete("work", got.lock_token)
    with pytest.raises(LockLostError):
        engine.complete("work", got.lock_token)


def test_duplicate_dropped_within_window_even_after_completion(engine: LocalQueueEngine) -> None:
    engine.send("short-window", msg("dup", b"first"))
    engine.send("short-window", msg("dup", b"second"))
    got = only(engine.receive("short-window", 10))
    assert got.body == b"first"
    engine.complete("short-window", got.lock_token)
    engine.send("short-window", msg("dup", b"third"))
    assert engine.receive("short-window") == []
    time.sleep(PAST_SHORT)
    engine.send("short-window", msg("dup", b"fourth"))
    assert only(engine.receive("short-window")).body == b"fourth"


def test_queue_without_duplicate_detection_keeps_duplicates(engine: LocalQueueEngine) -> None:
    engine.send_many("no-dedupe", [msg("same"), msg("same")])
    engine.send("no-dedupe", msg("same"))
    assert len(engine.receive("no-dedupe", 10)) == 3


def test_expired_messages_are_dead_lettered_before_receive(engine: LocalQueueEngine) -> None:
    engine.send("short-ttl", msg("stale"))
    engine.send("work", msg("own-ttl", time_to_live=SHORT))
    engine.send("work", msg("fresh"))
    engine.send("expiry-drops", msg("gone"))
    time.sleep(PAST_SHORT)
    assert engine.receive("short-ttl") == []
    assert [m.message_id for m in engine.receive("work", 10)] == ["fresh"]
    assert engine.receive("expiry-drops") == []
    for queue, message_id in (("short-ttl", "stale"), ("work", "own-ttl")):
        dead = only(engine.peek(queue, dead_letter=True))
        assert (dead.message_id, dead.dead_letter_reason) == (message_id, "TTLExpiredException")
    assert engine.peek("expiry-drops", dead_letter=True) == []
    assert engine.counts("expiry-drops").active == 0


def test_counts_sweep_expired_messages_without_a_receive(engine: LocalQueueEngine) -> None:
    engine.send("short-ttl", msg())
    time.sleep(PAST_SHORT)
    counts = engine.counts("short-ttl")
    assert (counts.active, counts.dead_lettered) == (0, 1)


def test_peek_does_not_lock_and_pages_by_sequence_number(engine: LocalQueueEngine) -> None:
    engine.send_many("work", [msg(f"k-{i}") for i in range(5)])
    peeked = engine.peek("work", max_messages=3)
    assert [m.message_id for m in peeked] == ["k-0", "k-1", "k-2"]
    assert all(m.lock_token is None and m.delivery_count == 0 for m in peeked)
    rest = engine.peek("work", from_sequence_number=peeked[-1].sequence_number + 1)
    assert [m.message_id for m in rest] == ["k-3", "k-4"]
    received = engine.receive("work", 2)
    assert [m.message_id for m in received] == ["k-0", "k-1"]
    locked = engine.peek("work", max_messages=1)[0]
    assert locked.lock_token is None and locked.locked_until_utc == received[0].locked_until_utc


def test_counts(engine: LocalQueueEngine) -> None:
    empty = engine.counts("work")
    assert (empty.active, empty.scheduled, empty.dead_lettered, empty.oldest_active_enqueued_utc) == (
        0, 0, 0, None)
    engine.send_many("work", [msg("c-1"), msg("c-2"), msg("c-3")])
    engine.send("work", msg("c-later", scheduled_enqueue_time_utc=datetime.now(UTC) + timedelta(hours=1)))
    first = engine.receive("work")[0]
    engine.dead_letter("work", first.lock_token, "ValidationFailed", "no answers")
    engine.receive("work")  # locked messages still count as active
    counts = engine.counts("work")
    assert (counts.queue, counts.active, counts.scheduled, counts.dead_lettered) == ("work", 2, 1, 1)
    assert counts.oldest_active_enqueued_utc is not None
    assert counts.oldest_active_enqueued_utc <= datetime.now(UTC)


def test_dead_letter_then_resubmit_from_dead_letter_queue(engine: LocalQueueEngine) -> None:
    engine.send_many("work", [msg("bad-1"), msg("bad-2")])
    for got in engine.receive("work", 2):
        engine.dead_letter("work", got.lock_token, "ValidationFailed", f"{got.message_id} is invalid")
    dead = engine.peek("work", dead_letter=True)
    assert [(m.message_id, m.dead_letter_reason, m.dead_letter_error_description) for m in dead] == [
        ("bad-1", "ValidationFailed", "bad-1 is invalid"), ("bad-2", "ValidationFailed", "bad-2 is invalid")]
    locked = only(engine.receive("work", 10, dead_letter=True, message_ids=["bad-2"]))
    assert locked.state == "deadlettered" and locked.lock_token
    with pytest.raises(ValueError, match="already dead-lettered"):
        engine.dead_letter("work", locked.lock_token, "Again")
    engine.send("work", msg("bad-2-resubmitted", locked.body))
    engine.complete("work", locked.lock_token)
    assert [m.message_id for m in engine.peek("work", dead_letter=True)] == ["bad-1"]
    assert [m.message_id for m in engine.receive("work", 10)] == ["bad-2-resubmitted"]


def test_concurrent_receivers_never_share_a_message(engine: LocalQueueEngine) -> None:
    sent = [f"c-{i}" for i in range(400)]
    engine.send_many("work", [msg(i) for i in sent])
    received: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            while batch := engine.receive("work", 3):
                for m in batch:
                    engine.complete("work", m.lock_token)
                with lock:
                    received.extend(m.message_id for m in batch)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=consume) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [i for i, n in Counter(received).items() if n > 1] == []
    assert sorted(received) == sorted(sent)


def test_wait_for_messages_wakes_on_send(engine: LocalQueueEngine) -> None:
    engine.wait_for_messages("work", 0.2)  # nothing there: returns at the timeout
    woke = threading.Event()

    def waiter() -> None:
        engine.wait_for_messages("work", 60)
        woke.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    time.sleep(0.3)  # let it reach the wait
    assert not woke.is_set()
    engine.send("work", msg("wake"))
    assert woke.wait(10), "wait_for_messages did not wake on send"
    engine.wait_for_messages("work", 60)  # something receivable: returns at once
    assert only(engine.receive("work")).message_id == "wake"


def test_message_survives_postgres_restart(engine: LocalQueueEngine, pg_server_handle) -> None:
    engine.send("work", msg("before-restart", b"kept"))
    engine.wait_for_messages("work", 0.1)  # start the listener before the restart
    if pg_server_handle is None:
        pytest.skip("external database (MARKR_TEST_DATABASE_URL): this suite cannot restart it")
    reconnects_seen = engine._listener.generation("work")  # the listener bumps this when it reconnects
    pg_server_handle.stop()
    pg_server_handle.start()
    engine.send("work", msg("after-restart"))
    got = engine.receive("work", 10)
    assert [(m.message_id, m.delivery_count) for m in got] == [("before-restart", 1), ("after-restart", 1)]
    assert got[0].body == b"kept"
    # the listener reconnects; once it has, a waiter wakes on send (not on the reconnect itself)
    for m in got:
        engine.complete("work", m.lock_token)
    deadline = time.monotonic() + 15
    while engine._listener.generation("work") == reconnects_seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine._listener.generation("work") > reconnects_seen, "the listener did not reconnect"
    woke = threading.Event()
    thread = threading.Thread(target=lambda: (engine.wait_for_messages("work", 60), woke.set()), daemon=True)
    thread.start()
    time.sleep(0.3)
    engine.send("work", msg("after-reconnect"))
    assert woke.wait(15), "wait_for_messages did not wake after the database restart"


def test_complete_many_settles_the_held_locks_and_names_the_lost_ones(engine: LocalQueueEngine) -> None:
    engine.send_many("work", [msg(f"batch-{i}") for i in range(5)])
    got = engine.receive("work", 5)
    assert [m.message_id for m in got] == [f"batch-{i}" for i in range(5)]
    engine.complete("work", got[0].lock_token)  # settled already: reported lost below
    with pytest.raises(LockLostError) as lost:
        engine.complete_many("work", [m.lock_token for m in got] + ["not-a-token"])
    assert lost.value.lock_tokens == [got[0].lock_token, "not-a-token"]
    assert engine.counts("work").active == 0  # the held ones were completed all the same
    engine.complete_many("work", [])


def test_complete_many_refuses_expired_locks(engine: LocalQueueEngine) -> None:
    engine.send_many("short-lock", [msg("a"), msg("b")])
    got = engine.receive("short-lock", 2)
    time.sleep(PAST_SHORT)
    with pytest.raises(LockLostError) as lost:
        engine.complete_many("short-lock", [m.lock_token for m in got])
    assert sorted(lost.value.lock_tokens) == sorted(m.lock_token for m in got)
    assert [m.delivery_count for m in engine.receive("short-lock", 2)] == [2, 2]


def test_a_dead_letter_gets_a_new_sequence_number_in_the_order_messages_died(engine: LocalQueueEngine) -> None:
    # As in Service Bus: the sub-queue numbers messages as they arrive, so a reader that keeps a
    # high-water mark (the dead-letter sweep) sees an older message that dies later.
    engine.send_many("one-delivery", [msg("older"), msg("newer")])
    older, newer = engine.receive("one-delivery", 2)
    engine.dead_letter("one-delivery", newer.lock_token, "Bad")
    engine.abandon("one-delivery", older.lock_token, "failed")  # last delivery: dead-lettered
    dead = engine.peek("one-delivery", dead_letter=True)
    assert [m.message_id for m in dead] == ["newer", "older"]
    assert older.sequence_number < newer.sequence_number < dead[0].sequence_number < dead[1].sequence_number
    engine.send("one-delivery", msg("expires"))
    expired = only(engine.receive("one-delivery"))
    time.sleep(PAST_SHORT)  # its lock runs out after its only delivery
    assert engine.expire("one-delivery") == 1
    last = engine.peek("one-delivery", dead_letter=True)[-1]
    assert last.message_id == "expires" and last.sequence_number > max(expired.sequence_number,
                                                                        dead[1].sequence_number)


def test_a_message_its_holder_dead_lettered_needs_no_completing(engine: LocalQueueEngine) -> None:
    # As the Functions host does not complete a message its function settled, completing it after the
    # holder dead-lettered it is a no-op, alone or in a batch; a message nobody settled is still refused.
    engine.send_many("work", [msg("poison"), msg("fine"), msg("other-poison")])
    poison, fine, other = engine.receive("work", 3)
    engine.dead_letter_held("work", poison.lock_token, "MessageSchemaInvalid", "runId: 42 is not of type 'string'")
    engine.dead_letter_held("work", other.lock_token, "MessageSchemaInvalid", "bad")
    engine.complete("work", poison.lock_token)
    engine.complete_many("work", [fine.lock_token, other.lock_token])
    dead = engine.peek("work", dead_letter=True)
    assert [(m.message_id, m.dead_letter_reason, m.delivery_count) for m in dead] == [
        ("poison", "MessageSchemaInvalid", 1), ("other-poison", "MessageSchemaInvalid", 1)]
    assert engine.counts("work").active == 0
    with pytest.raises(LockLostError):
        engine.complete("work", fine.lock_token)  # completed already: not the holder's dead letter
