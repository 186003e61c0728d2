"""The `submissions` status table: each stage records its own transitions, in its own transaction.

Status changes go through the one state machine (shared/domain/submission_status.py). A transition
into a settled status (rejected, completed, failed) is announced on STATUS_CHANNEL, which the
receivers' shared listener (status_waiter.py) turns into wake-ups for waiting imports.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from shared.domain.submission_status import SETTLED, Event, Status, SubmissionStatus, apply

STATUS_CHANNEL = "submission_status"
_COLUMNS = [f.name for f in fields(SubmissionStatus) if f.name != "extra"]
_SET = [name for name in _COLUMNS if name != "submission_id"]
# Every changed row in one statement: the rows travel as one JSON array (encoded in C), read back in
# the table's own row type, instead of one parameter set per row (dumped in Python, a tenth of a
# busy host's CPU).
_UPDATE_MANY = (f"UPDATE submissions s SET ({', '.join(_SET)}, updated_at) = ({', '.join('r.' + n for n in _SET)}, now())"
                " FROM jsonb_populate_recordset(NULL::submissions, %s::jsonb) r"
                " WHERE s.submission_id = r.submission_id")
# The update, then NOTIFY (delivered at commit) for each submission that settled.
_UPDATE_AND_NOTIFY = f"WITH updated AS ({_UPDATE_MANY}) SELECT pg_notify(%s, x) FROM unnest(%s::text[]) AS x"


def _from_row(row: dict) -> SubmissionStatus:
    values = {name: row[name] for name in _COLUMNS}
    values["status"] = Status(values["status"])
    for name in ("test_ids", "aggregated_test_ids"):
        if values[name] is not None:
            values[name] = tuple(values[name])
    values["errors"] = tuple(values["errors"] or ())
    values["warnings"] = tuple(values["warnings"] or ())
    return SubmissionStatus(**values)


def _to_json(state: SubmissionStatus) -> dict:
    """The row as JSON values: timestamps as ISO 8601 text, tuples as arrays."""
    row: dict = {}
    for name in _COLUMNS:
        value = getattr(state, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        row[name] = value
    row["status"] = str(state.status)
    return row


def record_events(conn: psycopg.Connection, events: Sequence[Event]) -> list[SubmissionStatus]:
    """Apply events to their submissions' statuses under row locks (in the caller's transaction).

    Rows are created and locked in submission-id order, so concurrent batches cannot deadlock.
    Returns the resulting statuses, in the order of first appearance.
    """
    if not events:
        return []
    first: dict[str, Event] = {}
    for e in events:
        first.setdefault(e.submission_id, e)
    ids = sorted(first)
    # Two round trips in all: the insert and the locking read go out together (pipeline mode), and
    # the update carries the notification.
    with conn.pipeline(), conn.cursor(row_factory=dict_row) as cur:
        conn.execute(
            "INSERT INTO submissions (submission_id, source, run_id, status)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) ORDER BY 1"
            " ON CONFLICT (submission_id) DO NOTHING",
            (ids, [first[i].source for i in ids], [first[i].run_id for i in ids], ["received"] * len(ids)),
        )
        cur.execute("SELECT * FROM submissions WHERE submission_id = ANY(%s) ORDER BY submission_id"
                    " FOR UPDATE", (ids,))
        rows = cur.fetchall()  # sends both, then waits once
    before = {row["submission_id"]: _from_row(row) for row in rows}
    after = dict(before)
    for e in events:
        after[e.submission_id] = apply(after[e.submission_id], e)
    changed = [state for sid, state in after.items() if state != before[sid]]
    if changed:
        settled = [s.submission_id for s in changed if s.status in SETTLED and s.status != before[s.submission_id].status]
        conn.execute(_UPDATE_AND_NOTIFY, (json.dumps([_to_json(state) for state in changed]), STATUS_CHANNEL, settled))
    return [after[sid] for sid in first]


def get(conn: psycopg.Connection, submission_id: str) -> SubmissionStatus | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM submissions WHERE submission_id = %s", (submission_id,)).fetchone()
    return _from_row(row) if row else None


def get_many(conn: psycopg.Connection, submission_ids: Sequence[str]) -> dict[str, SubmissionStatus]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT * FROM submissions WHERE submission_id = ANY(%s)", (list(submission_ids),)).fetchall()
    return {row["submission_id"]: _from_row(row) for row in rows}
