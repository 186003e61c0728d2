"""`python -m devhost --workers N`: N worker processes behind one HTTP port, like several Functions
worker processes.

Pre-fork: the parent binds and listens once and each worker inherits the listening socket (every
worker accepts on it), and runs its own queue consumers (the engine's SKIP LOCKED hands each message
to one of them). Timer triggers run in worker 0 only, so a schedule fires once per host. The parent
supervises: SIGINT/SIGTERM is forwarded, workers drain (the grace period) and exit; a worker that
dies is started again. Workers die with the parent (PR_SET_PDEATHSIG), so killing the parent is a
crash of the whole host, as it is for a single process. Invocation counts are summed over the
workers through a counters file they all map (devhost/accounting.py).
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from devhost.accounting import create_counts_file
from devhost.http_server import BACKLOG
from devhost.stack import ROOT

log = logging.getLogger("devhost")
RESTART_BACKOFF = (1.0, 30.0)  # seconds between restarts of a crashing worker: first, at most
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """In a worker: be killed when the supervising parent dies (Linux), and notice if it already did."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the worker outlives a killed parent until its own SIGTERM
    if os.getppid() != parent_pid:
        os._exit(1)


def listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


@dataclass
class _Worker:
    slot: int
    ready_file: Path
    process: subprocess.Popen | None = None
    started: float = 0.0
    backoff: float = RESTART_BACKOFF[0]
    info: dict = field(default_factory=dict)


class Supervisor:
    def __init__(self, count: int, worker_args: list[str], *, host: str = "127.0.0.1", port: int = 7071,
                 grace: float = 30.0) -> None:
        if count < 1:
            raise ValueError("--workers must be at least 1")
        self.count = count
        self.worker_args = worker_args
        self.grace = grace
        self.sock = listen(host, port)
        self.counts_file = create_counts_file(count)
        # Only while starting: each worker says here that it serves (restarted ones are not waited for).
        self.work_dir = Path(tempfile.mkdtemp(prefix="devhost-workers-"))
        self.workers = [_Worker(slot, self.work_dir / f"worker-{slot}.json") for slot in range(count)]

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _spawn(self, worker: _Worker, ready_file: Path | None = None) -> None:
        fds = (self.sock.fileno(), self.counts_file.fileno())
        args = [sys.executable, "-m", "devhost", *self.worker_args, "--worker-slot", str(worker.slot),
                "--listen-fd", str(fds[0]), "--counts-fd", str(fds[1]), "--parent-pid", str(os.getpid())]
        if ready_file is not None:
            args += ["--ready-file", str(ready_file)]
        # Own session: a terminal's Ctrl-C reaches the parent only, which forwards it once (a second
        # SIGINT makes a worker give up draining).
        worker.process = subprocess.Popen(args, cwd=ROOT, pass_fds=fds, start_new_session=True)
        worker.started = time.monotonic()
        log.info("worker %d started (pid %d)", worker.slot, worker.process.pid)

    def start(self, timeout: float = 120.0) -> dict:
        """Start every worker and wait until all serve; returns worker 0's ready info."""
        try:
            for worker in self.workers:
                self._spawn(worker, worker.ready_file)
            deadline = time.monotonic() + timeout
            for worker in self.workers:
                while not worker.ready_file.exists():
                    if worker.process.poll() is not None:
                        raise RuntimeError(f"worker {worker.slot} exited with {worker.process.returncode} "
                                           "before it was ready (see its log above)")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"worker {worker.slot} not ready after {timeout} s")
                    time.sleep(0.05)
                worker.info = json.loads(worker.ready_file.read_text())
        finally:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        return self.workers[0].info

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process is not None]

    def supervise(self, stop: threading.Event, on_change=None) -> None:
        """Restart workers that die until `stop` is set."""
        while not stop.wait(0.5):
            for worker in self.workers:
                code = worker.process.poll()
                if code is None or stop.is_set():
                    continue
                if time.monotonic() - worker.started < worker.backoff:
                    continue
                log.warning("worker %d (pid %d) exited with %s; starting it again", worker.slot,
                            worker.process.pid, code)
                # Crashing at once again and again: back off; a worker that ran a while restarts fast.
                ran = time.monotonic() - worker.started
                worker.backoff = (RESTART_BACKOFF[0] if ran > RESTART_BACKOFF[1]
                                  else min(RESTART_BACKOFF[1], worker.backoff * 2))
                self._spawn(worker)
                if on_change is not None:
                    on_change()

    def stop(self) -> bool:
        """Forward SIGTERM, let every worker drain, then exit; True if all exited cleanly."""
        self.sock.close()  # the workers hold their own copies until they stop serving
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 30.0
        clean = True
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                code = worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop; killing it", worker.slot, worker.process.pid)
                worker.process.kill()
                code = worker.process.wait()
            clean &= code == 0
        self.counts_file.close()
        return clean
