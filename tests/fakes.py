"""In-memory fakes of the ports (Vault, Bus, PipelineStore) for fast unit tests of the use cases.

They follow the adapters' contracts, with the domain's own rules as their logic: the store merges
marks with shared/domain/scoring_policy.py and moves statuses with the state machine, so a unit test
of a stage checks the same rules the SQL is tested against in tests/integration.
"""
from __future__ import annotations

import copy
import hashlib
import statistics as stats
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from shared.bus.port import OutgoingMessage
from shared.domain.scoring_policy import BestMarks
from shared.domain.submission_status import Event, SubmissionStatus, apply
from shared.pipeline.messages import SubmissionRef
from shared.pipeline.ports import (
    Accepted,
    Marked,
    MarkingOutcome,
    Rejected,
    Statistics,
    needed_versions,
    validation_events,
)
from shared.vault import body as bodies
from shared.vault.model import VaultRecord


class FakeVault:
    def __init__(self, inline_limit: int = 48 * 1024) -> None:
        self.records: dict[tuple[str, str], VaultRecord] = {}
        self.stored: dict[tuple[str, str], bytes] = {}
        self.inline_limit = inline_limit
        self.fail_puts = False
        self.reads = 0
        self.tombstones: dict[tuple[str, str], dict] = {}

    def put(self, *, source, submission_id, content_type, body, received_at) -> VaultRecord:
        if self.fail_puts:
            raise ConnectionError("storage is down")
        compression, stored = bodies.compress(body)
        inline = stored if len(stored) <= self.inline_limit else None
        record = VaultRecord(source, submission_id, content_type, received_at, len(body),
                             hashlib.sha256(body).hexdigest(), compression, len(stored), 1,
                             0 if inline is not None else 1, {}, inline)
        self.records[(source, submission_id)] = record
        self.stored[(source, submission_id)] = stored
        return record

    def get(self, source, submission_id):
        self.reads += 1
        return self.records.get((source, submission_id))

    def find(self, submission_id):
        return next((r for (_, sid), r in self.records.items() if sid == submission_id), None)

    def list(self, *, source=None, since=None):
        return iter(sorted(self.records.values(), key=lambda r: (r.source, r.submission_id)))

    def ids(self, source, *, start="", stop):
        return iter(sorted(sid for (src, sid) in self.records if src == source and start <= sid < stop))

    def read_body(self, record):
        return bodies.decompress(record, self.stored[(record.source, record.submission_id)])

    def open_body(self, record):
        return bodies.open_stream(record, self.stored[(record.source, record.submission_id)])

    def record_status(self, source, submission_id, fields: Mapping[str, object]) -> None:
        record = self.records[(source, submission_id)]
        record.status.update(fields)

    def erase(self, source, submission_id, *, reason, at):
        record = self.records.pop((source, submission_id), None)
        self.stored.pop((source, submission_id), None)
        if record is not None:
            self.tombstones[(source, submission_id)] = {"sha256": record.sha256, "erasedAt": at.isoformat(),
                                                        "reason": reason}
        return self.tombstones.get((source, submission_id))

    def seal_entry(self, record) -> bool:
        return False  # the fake stores plain entries only

    def rewrap_entry(self, record) -> bool:
        return False

    def ping(self) -> None:
        if self.fail_puts:
            raise ConnectionError("storage is down")


class FakeBus:
    def __init__(self) -> None:
        self.sent: list[tuple[str, OutgoingMessage]] = []
        self.fail_sends = False
        self._seen: set[tuple[str, str]] = set()
        self.settles = True  # False: dead_letter raises DeadLetterUnsupported, as on Azure
        self.dead_lettered: list[tuple[str, str, str, str | None]] = []
        self.cancelled: list[str] = []

    def send(self, queue: str, message: OutgoingMessage) -> None:
        self.send_many(queue, [message])

    def send_many(self, queue: str, messages: list[OutgoingMessage]) -> None:
        if self.fail_sends:
            raise ConnectionError("the bus is down")
        for m in messages:
            if (queue, m.message_id) not in self._seen:  # duplicate detection
                self._seen.add((queue, m.message_id))
                self.sent.append((queue, m))

    def schedule(self, queue: str, messages: list[OutgoingMessage], at) -> list[str]:
        from dataclasses import replace

        self.send_many(queue, [replace(m, scheduled_enqueue_time_utc=at) for m in messages])
        return [m.message_id for m in messages]

    def cancel_scheduled(self, queue: str, tokens: list[str]) -> int:
        before = len(self.sent)
        self.sent = [(q, m) for q, m in self.sent
                     if not (q == queue and m.message_id in tokens and m.scheduled_enqueue_time_utc is not None)]
        self.cancelled.extend(tokens)
        return before - len(self.sent)

    def dead_letter_held(self, queue: str, lock_token: str, reason: str, description: str | None = None) -> None:
        if not self.settles:
            from shared.bus.port import DeadLetterUnsupported

            raise DeadLetterUnsupported("this bus cannot settle a trigger's message")
        self.dead_lettered.append((queue, lock_token, reason, description))

    def on(self, queue: str) -> list[OutgoingMessage]:
        return [m for q, m in self.sent if q == queue]

    def ping(self) -> None:
        if self.fail_sends:
            raise ConnectionError("the bus is down")

    def close(self) -> None:
        pass


class FakeStore:
    """The PipelineStore contract in memory; `fail` makes calls raise (an outage)."""

    def __init__(self) -> None:
        self.staged: dict[str, list] = {}
        self.applied: dict[tuple[str, str], Marked] = {}
        self.best: dict[tuple[str, str], BestMarks] = {}
        self.versions: dict[str, int] = {}
        self.computed: dict[str, int] = {}
        self.recomputations: list[str] = []
        self.states: dict[str, SubmissionStatus] = {}
        self.fail: Exception | None = None
        self.fail_for: set[str] = set()  # submission ids whose store calls raise

    def _check(self, ids: Sequence[str]) -> None:
        if self.fail is not None:
            raise self.fail
        bad = self.fail_for.intersection(ids)
        if bad:
            raise RuntimeError(f"constraint violated for {sorted(bad)}")

    def record_validation(self, accepted: Sequence[Accepted], rejected: Sequence[Rejected]) -> None:
        self._check([a.ref.submission_id for a in accepted] + [r.ref.submission_id for r in rejected])
        for a in accepted:
            self.staged[a.ref.submission_id] = list(a.results)
        self.record_events(validation_events(accepted, rejected))

    def record_and_complete(self, accepted: Sequence[Accepted], rejected: Sequence[Rejected],
                            at: datetime) -> MarkingOutcome:
        self._check([a.ref.submission_id for a in accepted] + [r.ref.submission_id for r in rejected])  # all or none
        before = copy.deepcopy(self._state())
        try:
            self.record_validation(accepted, rejected)
            outcome = self.apply_markings([a.ref for a in accepted], at)
            outcome.recomputed = self.refresh_statistics(needed_versions(m.test_versions for m in outcome.marked))
            self.record_events([Event(m.ref.submission_id, m.ref.source, m.ref.run_id, "aggregated", at,
                                      test_ids=tuple(sorted(m.test_versions))) for m in outcome.marked])
            ids = [a.ref.submission_id for a in accepted] + [r.ref.submission_id for r in rejected]
            outcome.statuses = {sid: self.states[sid] for sid in ids}
        except BaseException:
            self._restore(before)  # a rolled-back transaction
            raise
        return outcome

    _STATE = ("staged", "applied", "best", "versions", "computed", "recomputations", "states")

    def _state(self) -> dict:
        return {name: getattr(self, name) for name in self._STATE}

    def _restore(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def apply_markings(self, refs: Sequence[SubmissionRef], at: datetime) -> MarkingOutcome:
        self._check([r.submission_id for r in refs])
        outcome = MarkingOutcome()
        touched: set[str] = set()
        new: list[SubmissionRef] = []
        for ref in refs:
            key = (ref.submission_id, ref.run_id)
            if key in self.applied:
                done = self.applied[key]
                outcome.marked.append(Marked(ref, done.test_versions, done.result_count, newly_applied=False))
            elif not self.staged.get(ref.submission_id):
                outcome.nothing_to_mark.append(ref)
            else:
                new.append(ref)
                for r in self.staged[ref.submission_id]:
                    k = (r.test_id, r.student_number)
                    seen = self.best.get(k)
                    self.best[k] = BestMarks(max(seen.available, r.available) if seen else r.available,
                                             max(seen.obtained, r.obtained) if seen else r.obtained)
                    touched.add(r.test_id)
        for test_id in sorted(touched):  # one bump per test per batch
            self.versions[test_id] = self.versions.get(test_id, 0) + 1
        for ref in new:
            rows = self.staged[ref.submission_id]
            marked = Marked(ref, {r.test_id: self.versions[r.test_id] for r in rows}, len(rows))
            self.applied[(ref.submission_id, ref.run_id)] = marked
            outcome.marked.append(marked)
        self.record_events([Event(m.ref.submission_id, m.ref.source, m.ref.run_id, "marked", at,
                                  result_count=m.result_count, test_ids=tuple(sorted(m.test_versions)))
                            for m in outcome.marked])
        return outcome

    def refresh_statistics(self, test_versions: Mapping[str, int]) -> list[str]:
        self._check([])
        recomputed = []
        for test_id, version in sorted(test_versions.items()):
            if self.computed.get(test_id, 0) >= version:
                continue
            self.computed[test_id] = self.versions[test_id]
            self.recomputations.append(test_id)
            recomputed.append(test_id)
        return recomputed

    def record_events(self, events: Sequence[Event]) -> list[SubmissionStatus]:
        self._check([e.submission_id for e in events])
        order: list[str] = []
        for e in events:
            self.states[e.submission_id] = apply(self.states.get(e.submission_id), e)
            if e.submission_id not in order:
                order.append(e.submission_id)
        return [self.states[sid] for sid in order]

    def status(self, submission_id: str) -> SubmissionStatus | None:
        self._check([])
        return self.states.get(submission_id)

    def statuses(self, submission_ids) -> dict[str, SubmissionStatus]:
        self._check([])
        return {i: self.states[i] for i in submission_ids if i in self.states}

    def statistics(self, test_id: str) -> Statistics | None:
        self._check([])
        if test_id not in self.computed:
            return None
        pct = sorted(b.percent for (t, _), b in self.best.items() if t == test_id)
        q = stats.quantiles(pct, n=4, method="inclusive") if len(pct) > 1 else [pct[0]] * 3
        return Statistics(test_id, len(pct), stats.fmean(pct), stats.pstdev(pct), pct[0], pct[-1], q[0], q[1], q[2],
                          self.computed[test_id])

    def ping(self) -> None:
        self._check([])


def now() -> datetime:
    return datetime.now(UTC)


class FakeVendors:
    """The VendorDirectory port in memory: keys by id, apps by client id, and every touch recorded."""

    def __init__(self) -> None:
        from shared.auth.port import StoredKey

        self._StoredKey = StoredKey
        self.keys: dict[str, StoredKey] = {}
        self.apps: dict[str, str] = {}
        self.touched: list[str] = []
        self.lookups = 0

    def add_key(self, vendor: str, *, active: bool = True, last_used_at: datetime | None = None) -> str:
        from shared.auth.api_keys import key_hash, new_key

        key_id, key = new_key()
        self.keys[key_id] = self._StoredKey(key_id, vendor, key_hash(key), active, last_used_at)
        return key

    def key(self, key_id: str):
        return self.keys.get(key_id)

    def touch(self, key_id: str) -> None:
        self.touched.append(key_id)

    def vendor_for_app(self, app_id: str) -> str | None:
        self.lookups += 1
        return self.apps.get(app_id)


class FakeResultsReader:
    """The ResultsReader contract in memory: views keyed by test id; `fail` makes calls raise."""

    def __init__(self, tests=(), histograms=None, items=None, csv=None) -> None:
        self.tests = sorted(tests, key=lambda e: e.test_id)
        self.histograms = histograms or {}
        self.items = items or {}
        self.csv = csv or {}
        self.fail: Exception | None = None
        self.pages: list[tuple[str | None, int]] = []

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def list_tests(self, after, limit):
        self._check()
        self.pages.append((after, limit))
        return [e for e in self.tests if after is None or e.test_id > after][:limit]

    def histogram(self, test_id):
        self._check()
        return self.histograms.get(test_id)

    def item_analysis(self, test_id):
        self._check()
        return self.items.get(test_id)

    def students_csv(self, test_id):
        self._check()
        return self.csv.get(test_id)
