"""Invocations per function, counted in-process and summed over the worker processes of one host.

Every worker owns one row of 64-bit counters in a memory map (an unlinked file whose descriptor the
workers of a `--workers N` host inherit, anonymous memory otherwise): a worker only ever writes its own row, so no
cross-process lock is needed, and a reader sums the rows. Columns are the function names in sorted
order, the same in every worker because every worker indexes the same app.
"""
from __future__ import annotations

import mmap
import struct
import tempfile
import threading
from collections.abc import Iterable
from typing import IO

MAX_FUNCTIONS = 256
_CELL = struct.Struct("<q")
_ROW = MAX_FUNCTIONS * _CELL.size


def create_counts_file(slots: int) -> IO[bytes]:
    """A zeroed, already unlinked counters file for `slots` workers (the parent makes it before it
    starts them and passes its descriptor on; nothing is left behind even if the host is killed)."""
    out = tempfile.TemporaryFile()  # noqa: SIM115 - the supervisor keeps it open for its workers
    out.truncate(slots * _ROW)
    out.flush()
    return out


class InvocationCounts:
    def __init__(self, function_names: Iterable[str], fd: int | None = None, slot: int = 0) -> None:
        self.names = sorted(set(function_names))
        if len(self.names) > MAX_FUNCTIONS:
            raise ValueError(f"at most {MAX_FUNCTIONS} functions can be counted")
        self._column = {name: i for i, name in enumerate(self.names)}
        self._map = mmap.mmap(-1, _ROW) if fd is None else mmap.mmap(fd, 0)
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
