"""The status state machine: idempotent, order-insensitive, never backwards within a run."""
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.submission_status import Event, apply

SID = "01JBZZZZZZZZZZZZZZZZZZZZZ0"
REPLAY = "01JCZZZZZZZZZZZZZZZZZZZZZ0"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(kind, run=SID, minutes=0, **kw):
    return Event(SID, "default", run, kind, T0 + timedelta(minutes=minutes), **kw)


def run_events(events):
    state = None
    for e in events:
        state = apply(state, e)
    return state


HAPPY = [
    ev("received"),
    ev("validated", minutes=1, result_count=3, test_ids=("a", "b")),
    ev("marked", minutes=2, result_count=3, test_ids=("a", "b")),
    ev("aggregated", minutes=3, test_id="a"),
    ev("aggregated", minutes=4, test_id="b"),
]


def test_happy_path_completes_only_when_every_test_is_aggregated():
    assert run_events(HAPPY[:4]).status == "validated"
    final = run_events(HAPPY)
    assert final.status == "completed"
    assert final.completed_at == T0 + timedelta(minutes=4)
    assert final.result_count == 3 and final.test_ids == ("a", "b")


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(HAPPY))))[::7])
def test_any_delivery_order_ends_completed(order):
    assert run_events([HAPPY[i] for i in order]).status == "completed"


def test_duplicates_change_nothing():
    once = run_events(HAPPY)
    twice = run_events(HAPPY + HAPPY)
    assert once == twice


def test_rejected_is_final_and_keeps_errors():
    errors = ({"code": "missing-field", "message": "m", "result": 2, "field": "test-id"},)
    state = run_events([ev("received"), ev("rejected", minutes=1, errors=errors, error_count=1), ev("received")])
    assert state.status == "rejected"
    assert state.errors == errors and state.error_count == 1
    assert run_events([ev("rejected", errors=errors), ev("failed", failure={"stage": "x", "reason": "y"})]).status == "rejected"


def test_failed_then_resubmitted_stage_completes():
    failure = {"stage": "marking", "reason": "MaxDeliveryCountExceeded", "description": "boom"}
    state = run_events(HAPPY[:2] + [ev("failed", minutes=2, failure=failure)])
    assert state.status == "failed" and state.failure == failure
    assert run_events([*HAPPY[:2], ev("failed", failure=failure), ev("validated")]).status == "failed"
    assert run_events(HAPPY[:2] + [ev("failed", failure=failure)] + HAPPY[2:]).status == "completed"


def test_failure_after_completion_does_not_rewrite_history():
    assert run_events(HAPPY + [ev("failed", failure={"stage": "s", "reason": "r"})]).status == "completed"


def test_replay_starts_a_new_run_and_ignores_the_old_runs_late_events():
    original = run_events(HAPPY)
    replay = apply(original, ev("received", run=REPLAY, minutes=10))
    assert replay.run_id == REPLAY and replay.status == "received"
    assert replay.received_at == T0  # when the document first arrived
    late = apply(replay, ev("aggregated", run=SID, test_id="a"))
    assert late == replay
    replayed = [Event(e.submission_id, e.source, REPLAY, e.event, e.at, e.result_count, e.test_ids, e.test_id)
                for e in HAPPY]
    done = run_events([*HAPPY, *replayed])
    assert done.status == "completed" and done.run_id == REPLAY


@pytest.mark.parametrize("settled", ["completed", "rejected"])
def test_a_late_failure_changes_nothing_of_a_settled_run(settled):
    events = HAPPY if settled == "completed" else [ev("received"), ev("rejected", minutes=1, error_count=1)]
    before = run_events(events)
    after = run_events([*events, ev("failed", minutes=9, failure={"stage": "marking", "reason": "r"})])
    assert after == before  # not only the status: no failure, no failed_at either
    assert after.failure is None and after.failed_at is None


def test_the_batched_aggregator_reports_all_of_a_submissions_tests_at_once():
    state = run_events([*HAPPY[:3], ev("aggregated", minutes=3, test_ids=("a", "b"))])
    assert state.status == "completed" and state.aggregated_test_ids == ("a", "b")


def test_a_retraction_is_final_across_late_events_and_replays():
    state = run_events([*HAPPY, ev("retracted", minutes=5, reason="wrong batch")])
    assert (state.status, state.retraction_reason, state.retracted_at) == ("retracted", "wrong batch",
                                                                           T0 + timedelta(minutes=5))
    for later in (ev("failed", minutes=6, failure={"stage": "x"}), ev("received", run=REPLAY, minutes=7),
                  ev("validated", run=REPLAY, minutes=8, result_count=1, test_ids=("a",)),
                  ev("retracted", minutes=9, reason="another")):
        assert apply(state, later) == state


def test_a_submission_can_be_retracted_before_it_was_processed():
    state = apply(None, ev("retracted", reason="data-protection request"))
    assert state.status == "retracted" and state.received_at is None
