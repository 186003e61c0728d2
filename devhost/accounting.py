"""Invocations per function, counted in-process and summed over the worker processes of one host.

Every worker owns one row of 64-bit counters in a memory map (a file shared by the workers of a
`--workers N` host, anonymous memory otherwise): a worker only ever writes its own row, so no
cross-process lock is needed, and a reader sums the rows. Columns are the function names in sorted
order, the same in every worker because every worker indexes the same app.
"""
from __future__ import annotations

import mmap
import struct
import threading
from collections.abc import Iterable
from pathlib import Path

MAX_FUNCTIONS = 256
_CELL = struct.Struct("<q")
_ROW = MAX_FUNCTIONS * _CELL.size


def create_counts_file(path: Path, slots: int) -> Path:
    """A zeroed counters file for `slots` workers (made by the parent before it starts them)."""
    with open(path, "wb") as out:
        out.truncate(slots * _ROW)
    return path


class InvocationCounts:
    def __init__(self, function_names: Iterable[str], path: Path | None = None, slot: int = 0) -> None:
        self.names = sorted(set(function_names))
        if len(self.names) > MAX_FUNCTIONS:
            raise ValueError(f"at most {MAX_FUNCTIONS} functions can be counted")
        self._column = {name: i for i, name in enumerate(self.names)}
        if path is None:
            self._map = mmap.mmap(-1, _ROW)
        else:
            with open(path, "r+b") as f:
                self._map = mmap.mmap(f.fileno(), 0)
        self.slots = len(self._map) // _ROW
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} is outside the counters file ({self.slots} slots)")
        self._row = slot * _ROW
        self._lock = threading.Lock()  # handler threads of this process share the row

    def add(self, function_name: str, invocations: int = 1) -> None:
        column = self._column.get(function_name)
        if column is None:
            return
        offset = self._row + column * _CELL.size
        with self._lock:
            _CELL.pack_into(self._map, offset, _CELL.unpack_from(self._map, offset)[0] + invocations)

    def snapshot(self) -> dict[str, int]:
        """{function name: invocations} over every worker, every function listed (0 if never run)."""
        totals = dict.fromkeys(self.names, 0)
        for slot in range(self.slots):
            for name, column in self._column.items():
                totals[name] += _CELL.unpack_from(self._map, slot * _ROW + column * _CELL.size)[0]
        return totals
