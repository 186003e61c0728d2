"""Concurrent single sends to one queue share one statement (the receiver's sends under load).

Each send is a transaction with a commit (a WAL flush) and a NOTIFY that wakes every consumer of the
queue; eight receivers sending at once cost eight of each. Senders to one queue are grouped as in
shared/coalescing.py: an idle send goes at once, sends arriving meanwhile go together in the next
statement, and if a group's statement fails each of its messages is sent on its own, so every
sender gets its own answer (a refused message fails only its sender).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from shared.bus.port import OutgoingMessage
from shared.coalescing import Coalescer

MAX_GROUP = 100


class SendCoalescer:
    def __init__(self, send_many: Callable[[str, list[OutgoingMessage]], None], max_group: int = MAX_GROUP) -> None:
        self._send_many = send_many
        self._groups: Coalescer[str, OutgoingMessage, None] = Coalescer(self._send, max_group)

    def _send(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[None]:
        self._send_many(queue, list(messages))
        return [None] * len(messages)

    @property
    def statements(self) -> int:  # for tests and benchmarks
        return self._groups.groups

    def waiting(self, queue: str) -> int:
        return self._groups.waiting(queue)

    @property
    def idle(self) -> bool:
        return self._groups.idle

    def send(self, queue: str, message: OutgoingMessage) -> None:
        self._groups.submit(queue, message)
