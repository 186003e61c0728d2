"""The registered queue functions, called as the host calls them, on in-memory ports."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage

import function_app
from devhost.discovery import indexed_functions
from functions import queues as queue_triggers
from shared import bootstrap
from shared.bus.queues import AGGREGATION, MARKING, VALIDATION, retry_queue
from shared.config import settings
from shared.pipeline import messages
from shared.pipeline.messages import SubmissionRef
from tests.fakes import FakeBus, FakeStore, FakeVault

IDS = ["01ARZ3NDEKTSV4RRFFQ69G5FA" + c for c in "VWXYZ"]


@pytest.fixture
def fakes():
    vault, bus, store = FakeVault(), FakeBus(), FakeStore()
    bootstrap.use(bootstrap.Services(settings(), vault=vault, bus=bus, store=store))
    yield vault, bus, store
    bootstrap.use(None)


def function(name: str):
    return next(fn for fn in indexed_functions(function_app.app) if fn.get_function_name() == name).get_user_function()


def delivered(message, delivery_count: int = 1) -> ServiceBusMessage:
    return ServiceBusMessage(body=message.body, message_id=message.message_id, correlation_id=message.correlation_id,
                             content_type=message.content_type, delivery_count=delivery_count,
                             application_properties=dict(message.application_properties),
                             user_properties=dict(message.application_properties))


def marking_messages(ids):
    return [messages.marking(SubmissionRef(sid, "default", sid)) for sid in ids]


def test_a_message_failing_inside_a_batch_moves_alone_to_the_retry_queue(fakes):
    _, bus, store = fakes
    for sid in IDS[:3]:
        store.staged[sid] = []  # nothing staged: marks fail permanently, which is fine here
    store.fail_for = {IDS[1]}
    function("marker")([delivered(m) for m in marking_messages(IDS[:3])])  # returns: the batch completes
    moved = bus.on(retry_queue(MARKING))
    assert [json.loads(m.body)["submissionId"] for m in moved] == [IDS[1]]
    assert moved[0].message_id == f"{IDS[1]}/{IDS[1]}/marking/retry"
    assert "constraint violated" in moved[0].application_properties["firstError"]
    assert {sid: store.states[sid].status for sid in (IDS[0], IDS[2])} == {IDS[0]: "failed", IDS[2]: "failed"}
    assert IDS[1] not in store.states


def test_a_batch_whose_every_message_fails_raises_to_be_redelivered_whole(fakes):
    _, bus, store = fakes
    store.fail = ConnectionError("database down")
    with pytest.raises(ConnectionError):
        function("marker")([delivered(m) for m in marking_messages(IDS[:2])])
    assert bus.on(retry_queue(MARKING)) == []


def test_the_retry_trigger_backs_off_then_raises_so_the_broker_counts_deliveries(fakes, monkeypatch):
    _, bus, store = fakes
    slept = []
    monkeypatch.setattr(queue_triggers.time, "sleep", slept.append)
    store.fail = ConnectionError("still down")
    (message,) = marking_messages(IDS[:1])
    for count in (1, 2, 3, 9):
        with pytest.raises(ConnectionError):
            function("marker_retry")(delivered(message, delivery_count=count))
    assert slept == [1.0, 2.0, 4.0, 30.0]
    store.fail = None
    function("marker_retry")(delivered(message, delivery_count=10))  # succeeds: no wait, no raise
    assert slept == [1.0, 2.0, 4.0, 30.0]


def _junk(message_id: str = "junk") -> ServiceBusMessage:
    return ServiceBusMessage(body=b'{"nonsense": true}', message_id=message_id, lock_token=f"lock-{message_id}",
                             user_properties={}, application_properties={})


def test_a_message_that_does_not_match_its_schema_is_dead_lettered_at_once_with_the_error(fakes):
    vault, bus, store = fakes
    store.staged[IDS[0]] = []
    function("marker")([_junk(), *[delivered(m) for m in marking_messages(IDS[:1])]])
    [(queue, token, reason, description)] = bus.dead_lettered
    assert (queue, token, reason) == (MARKING, "lock-junk", queue_triggers.INVALID_MESSAGE)
    assert "does not match its schema" in description and "submissionId" in description
    assert bus.on(retry_queue(MARKING)) == [] and store.states[IDS[0]].status == "failed"  # the rest ran
    function("notifier")(_junk("junk-2"))  # single-message triggers too, without raising
    assert [d[:3] for d in bus.dead_lettered[1:]] == [("submission-notification", "lock-junk-2",
                                                       queue_triggers.INVALID_MESSAGE)]


def test_where_the_bus_cannot_dead_letter_a_bad_message_goes_to_the_retry_queue_which_raises_at_once(
        fakes, monkeypatch):
    _, bus, store = fakes
    bus.settles = False  # as on Azure Service Bus: only the Functions host settles trigger messages
    slept = []
    monkeypatch.setattr(queue_triggers.time, "sleep", slept.append)
    store.staged[IDS[0]] = []
    function("marker")([_junk(), *[delivered(m) for m in marking_messages(IDS[:1])]])
    [moved] = bus.on(retry_queue(MARKING))
    assert moved.message_id == "junk/retry" and "InvalidMessageError" in moved.application_properties["firstError"]
    with pytest.raises(messages.InvalidMessageError):
        function("marker_retry")(delivered(moved, delivery_count=1))
    assert slept == []  # no backoff: the broker spends its deliveries at once and dead-letters it


def test_the_validator_takes_a_batch_to_completion(fakes):
    vault, bus, store = fakes
    from tests.documents import make_document

    for sid in IDS[:2]:
        record = vault.put(source="default", submission_id=sid, content_type="text/xml+markr",
                           body=make_document([{"test_id": "t", "student_number": sid}]),
                           received_at=datetime.now(UTC))
        assert record.inline is not None
    batch = [delivered(messages.validation(SubmissionRef(sid, "default", sid))) for sid in IDS[:2]]
    function("validator")(batch)
    # Marked and aggregated in the same invocation: nothing for the marker or the aggregator.
    assert bus.on(MARKING) == [] and bus.on(AGGREGATION) == [] and bus.on(retry_queue(VALIDATION)) == []
    assert all(store.states[sid].status == "completed" for sid in IDS[:2])


def test_batch_functions_take_lists(fakes):
    for name in ("validator", "marker", "aggregator"):
        fn = next(f for f in indexed_functions(function_app.app) if f.get_function_name() == name)
        assert fn.get_trigger().get_dict_repr()["cardinality"] == func.Cardinality.MANY
