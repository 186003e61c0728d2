"""The `submissions` status table (written by the notifier only; read by the APIs and the receiver)."""
from __future__ import annotations

import time
from dataclasses import fields

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from shared.domain.submission_status import Event, SubmissionStatus, apply

STATUS_CHANNEL = "submission_status"
_COLUMNS = [f.name for f in fields(SubmissionStatus) if f.name != "extra"]


def _from_row(row: dict) -> SubmissionStatus:
    values = {name: row[name] for name in _COLUMNS}
    for name in ("test_ids", "aggregated_test_ids"):
        if values[name] is not None:
            values[name] = tuple(values[name])
    values["errors"] = tuple(values["errors"] or ())
    values["warnings"] = tuple(values["warnings"] or ())
    return SubmissionStatus(**values)


def _to_params(state: SubmissionStatus) -> dict:
    params = {name: getattr(state, name) for name in _COLUMNS}
    for name in ("test_ids", "aggregated_test_ids"):
        if params[name] is not None:
            params[name] = list(params[name])
    params["errors"] = Jsonb(list(state.errors))
    params["warnings"] = Jsonb(list(state.warnings))
    params["failure"] = Jsonb(state.failure) if state.failure is not None else None
    return params


def record_event(conn: psycopg.Connection, event: Event) -> SubmissionStatus:
    """Apply one event to a submission's status, under a row lock; wakes waiting receivers."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO submissions (submission_id, source, run_id, status) VALUES (%s, %s, %s, 'received')"
            " ON CONFLICT (submission_id) DO NOTHING",
            (event.submission_id, event.source, event.run_id),
        )
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT * FROM submissions WHERE submission_id = %s FOR UPDATE",
                              (event.submission_id,)).fetchone()
        before = _from_row(row)
        after = apply(before, event)
        if after != before:
            assignments = ", ".join(f"{name} = %({name})s" for name in _COLUMNS if name != "submission_id")
            conn.execute(f"UPDATE submissions SET {assignments}, updated_at = now()"
                         " WHERE submission_id = %(submission_id)s", _to_params(after))
            conn.execute("SELECT pg_notify(%s, %s)", (STATUS_CHANNEL, event.submission_id))
    return after


def get(conn: psycopg.Connection, submission_id: str) -> SubmissionStatus | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM submissions WHERE submission_id = %s", (submission_id,)).fetchone()
    return _from_row(row) if row else None


def wait_for_final(url: str, submission_id: str, run_id: str, timeout: float,
                   connect=psycopg.connect) -> SubmissionStatus | None:
    """Block until the run reaches rejected/completed/failed, or `timeout` passes.

    Listens on the notifier's channel so it wakes as soon as the status changes; re-reads the
    row on every wake-up (and at least every second) rather than trusting the payload.
    """
    deadline = time.monotonic() + timeout
    with connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {STATUS_CHANNEL}")
        while True:
            state = get(conn, submission_id)
            if state and state.run_id == run_id and state.status in ("rejected", "completed", "failed"):
                return state
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return state
            for note in conn.notifies(timeout=min(1.0, remaining)):
                if note.payload == submission_id:
                    break
