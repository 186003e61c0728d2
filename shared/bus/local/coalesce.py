"""Concurrent single sends to one queue share one statement (the receiver's sends under load).

Each send is a transaction with a commit (a WAL flush) and a NOTIFY that wakes every consumer of the
queue; eight receivers sending at once cost eight of each. Here the first sender to arrive while no
send to that queue is in flight commits at once (an idle system waits for nothing), and senders
arriving meanwhile queue up; when the statement is done, the oldest of them leads the next one with
everything queued by then. If a group's statement fails, each of its messages is sent on its own,
so every sender gets its own answer (a refused message fails only its sender).
"""
from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.bus.port import OutgoingMessage

MAX_GROUP = 100


@dataclass
class _Pending:
    message: OutgoingMessage
    woken: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    error: BaseException | None = None


class SendCoalescer:
    def __init__(self, send_many: Callable[[str, list[OutgoingMessage]], None], max_group: int = MAX_GROUP) -> None:
        self._send_many = send_many
        self._max_group = max_group
        self._lock = threading.Lock()
        self._pending: dict[str, list[_Pending]] = defaultdict(list)
        self._busy: set[str] = set()
        self.statements = 0  # for tests and benchmarks

    def send(self, queue: str, message: OutgoingMessage) -> None:
        mine = _Pending(message)
        with self._lock:
            self._pending[queue].append(mine)
            lead = queue not in self._busy
            self._busy.add(queue)
        if not lead:
            mine.woken.wait()  # done by a leader, or made the next leader
        if not mine.done:
            self._lead(queue)
        if mine.error is not None:
            raise mine.error

    def _lead(self, queue: str) -> None:
        with self._lock:
            pending = self._pending[queue]
            group = pending[:self._max_group]  # the leader's own message is always first
            del pending[:self._max_group]
        try:
            self.statements += 1
            self._send_many(queue, [p.message for p in group])
        except Exception as exc:  # noqa: BLE001 - find out whose message fails: each on its own
            if len(group) == 1:
                group[0].error = exc
            else:
                self._one_by_one(queue, group)
        following = None
        with self._lock:
            for p in group:
                p.done = True
            if pending:
                following = pending[0]
            else:
                self._busy.discard(queue)
                del self._pending[queue]
        for p in group:
            p.woken.set()
        if following is not None:
            following.woken.set()

    def _one_by_one(self, queue: str, group: list[_Pending]) -> None:
        for p in group:
            try:
                self.statements += 1
                self._send_many(queue, [p.message])
            except BaseException as exc:  # noqa: BLE001 - handed to the sender that owns the message
                p.error = exc
