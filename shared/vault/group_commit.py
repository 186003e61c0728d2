"""Group commit: concurrent small inserts into one partition share one Table transaction.

Each Tables call costs far more CPU (client pipeline, HTTP, the service) than the entity it carries.
The first writer to arrive while no commit is in flight becomes the leader and commits at once
whatever is pending, its own entity included (so an idle system adds no delay); writers arriving
meanwhile queue up and the next leader takes them all together. If a transaction fails (one entity
already exists, the service refuses it), each entity of it is inserted on its own, so every writer
gets its own answer.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_ENTITIES = 100  # a Table transaction's limit
MAX_BYTES = 3 * 1024 * 1024  # payload budget below the 4 MiB limit (binary travels as base64)


@dataclass
class _Pending:
    entity: dict[str, Any]
    size: int
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class GroupCommit:
    def __init__(self, submit_transaction: Callable[[list[dict[str, Any]]], Any],
                 create: Callable[[dict[str, Any]], Any]) -> None:
        """`submit_transaction` inserts a list of entities of one partition in one transaction (all or
        none); `create` inserts one entity. Either raises what the Tables SDK raises for it."""
        self._submit = submit_transaction
        self._create = create
        self._lock = threading.Lock()
        self._pending: dict[str, list[_Pending]] = defaultdict(list)
        self._committing: set[str] = set()
        self.transactions = 0  # for tests and benchmarks
        self.entities = 0

    def insert(self, entity: dict[str, Any], size: int) -> None:
        """Insert `entity` (about `size` bytes); raises what a create_entity of it would raise."""
        partition = entity["PartitionKey"]
        mine = _Pending(entity, size)
        with self._lock:
            self._pending[partition].append(mine)
            lead = partition not in self._committing
            if lead:
                self._committing.add(partition)
        if lead:
            self._lead(partition)
        mine.done.wait()
        if mine.error is not None:
            raise mine.error

    def _lead(self, partition: str) -> None:
        while True:
            with self._lock:
                queue = self._pending[partition]
                batch, used = [], 0
                while queue and len(batch) < MAX_ENTITIES and (not batch or used + queue[0].size <= MAX_BYTES):
                    used += queue[0].size
                    batch.append(queue.pop(0))
                if not batch:
                    self._committing.discard(partition)
                    del self._pending[partition]
                    return
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            if len(batch) == 1:
                self._one(batch[0])
                return
            try:
                self._submit([p.entity for p in batch])
                self.transactions += 1
                self.entities += len(batch)
            except Exception:  # noqa: BLE001 - find out which entity failed: each on its own
                for pending in batch:
                    self._one(pending)
        finally:
            for pending in batch:
                pending.done.set()

    def _one(self, pending: _Pending) -> None:
        try:
            self._create(pending.entity)
            self.transactions += 1
            self.entities += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the writer that owns the entity
            pending.error = exc
