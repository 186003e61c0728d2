"""Concurrent callers with the same key share one call of a group function (group commit).

The first caller to arrive while no group of its key is running leads at once with whatever is
pending, its own item first (an idle system waits for nothing); callers arriving meanwhile queue up,
and when the group is done the oldest of them leads the next one with everything queued by then.
If a group fails as a whole, each of its items runs on its own, so every caller gets its own answer
(an item that cannot succeed fails only its caller).

A caller that knows it will submit soon (the receiver, while it vaults a document) can say so with
`expecting(key)`: a leader then waits for announced items, up to `max_linger` seconds, before it
takes its group. Nothing is announced on an idle system, so nobody waits there; under load the
groups grow to what is actually on its way instead of what happened to be queued already.

Used for the local queue engine's sends (shared/bus/local/coalesce.py) and for the imports the
receiver validates in place (shared/pipeline/validate_now.py).
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Pending(Generic[T]):
    item: T
    woken: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    result: Any = None
    error: BaseException | None = None


@dataclass
class Announcement:
    arrived: bool = False


class Coalescer(Generic[K, T, R]):
    def __init__(self, run_group: Callable[[K, Sequence[T]], Sequence[R]], max_group: int = 100,
                 max_linger: float = 0.0) -> None:
        """`run_group(key, items)` does the work for all `items` and answers one result per item, in
        order; it raises if the group as a whole failed."""
        self._run_group = run_group
        self._max_group = max_group
        self._max_linger = max_linger
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._pending: dict[K, list[_Pending[T]]] = defaultdict(list)
        self._busy: set[K] = set()
        self._expected: dict[K, int] = defaultdict(int)  # announced, not submitted yet
        self.groups = 0  # calls of run_group, for tests and benchmarks

    @contextmanager
    def expecting(self, key: K) -> Iterator[Announcement]:
        """Announce an item of `key` that this caller submits inside the block (`submit(...,
        announced=...)`) or not at all (leaving the block withdraws it)."""
        announcement = Announcement()
        with self._lock:
            self._expected[key] += 1
        try:
            yield announcement
        finally:
            self._arrive(key, announcement)

    def _arrive(self, key: K, announcement: Announcement) -> None:
        with self._lock:
            self._arrive_locked(key, announcement)

    def _arrive_locked(self, key: K, announcement: Announcement) -> None:
        if announcement.arrived:
            return
        announcement.arrived = True
        self._expected[key] -= 1
        if not self._expected[key]:
            del self._expected[key]
        self._arrived.notify_all()

    def waiting(self, key: K) -> int:
        """How many items of `key` wait for a group (for tests)."""
        with self._lock:
            return len(self._pending.get(key, ()))

    @property
    def idle(self) -> bool:
        """Nothing running and nothing waiting, for any key."""
        with self._lock:
            return not self._busy and not self._pending

    def submit(self, key: K, item: T, *, announced: Announcement | None = None) -> R:
        """`item`'s result once a group containing it ran; raises what running it raised.
        `announced`: what `expecting(key)` gave, if the item was announced."""
        mine: _Pending[T] = _Pending(item)
        with self._lock:  # arrives and joins the pending items at once, as a lingering leader sees it
            if announced is not None:
                self._arrive_locked(key, announced)
            self._pending[key].append(mine)
            lead = key not in self._busy
            self._busy.add(key)
        if not lead:
            mine.woken.wait()  # done by a leader, or made the next leader
        if not mine.done:
            self._lead(key)
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[no-any-return]

    def _lead(self, key: K) -> None:
        with self._lock:
            pending = self._pending[key]
            deadline = time.monotonic() + self._max_linger
            while self._expected.get(key, 0) and len(pending) < self._max_group:
                left = deadline - time.monotonic()
                if left <= 0 or not self._arrived.wait(left):
                    break
            group = pending[:self._max_group]  # the leader's own item is always first
            del pending[:self._max_group]
        try:
            self._run(key, group)
        finally:
            following = None
            with self._lock:
                for p in group:
                    p.done = True
                if pending:
                    following = pending[0]
                else:
                    self._busy.discard(key)
                    del self._pending[key]
            for p in group:
                p.woken.set()
            if following is not None:
                following.woken.set()

    def _run(self, key: K, group: list[_Pending[T]]) -> None:
        try:
            self._run_one_group(key, group)
        except Exception as exc:  # noqa: BLE001 - find out whose item fails: each on its own
            if len(group) == 1:
                group[0].error = exc
                return
            for p in group:
                try:
                    self._run_one_group(key, [p])
                except BaseException as one:  # noqa: BLE001 - handed to the caller that owns the item
                    p.error = one

    def _run_one_group(self, key: K, group: list[_Pending[T]]) -> None:
        self.groups += 1
        results = self._run_group(key, [p.item for p in group])
        if len(results) != len(group):
            raise ValueError(f"a group of {len(group)} answered {len(results)} result(s)")
        for p, result in zip(group, results, strict=True):
            p.result = result
