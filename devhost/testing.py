"""Run `python -m devhost` as a subprocess, for end-to-end tests that need to kill the host."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devhost.stack import ROOT


class HostProcess:
    def __init__(self, process: subprocess.Popen, ready_file: Path, log_file: Path) -> None:
        self.process = process
        self.ready_file = ready_file
        self.log_file = log_file
        self.base_url = ""
        self.port = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 60.0) -> HostProcess:
        """Block until the host serves (its ready file appears); raises with the host's log if it died."""
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"devhost exited with {self.process.returncode} before it was ready:\n"
                                   f"{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"devhost not ready after {timeout} s:\n{self.log()}")
            time.sleep(0.05)
        info = json.loads(self.ready_file.read_text())
        self.base_url, self.port = info["base_url"], info["port"]
        return self

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    @property
    def worker_pids(self) -> list[int]:
        """The processes that run the functions (the host's own pid with --workers 1)."""
        return json.loads(self.ready_file.read_text())["workers"]

    def kill(self) -> int:
        """SIGKILL, as a crash would: nothing is settled, locks simply run out."""
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful drain); returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()


def start_host_process(env: dict[str, str], port: int = 0, *, app: str = "function_app:app",
                       queues_file: Path | None = None, grace: float = 30.0,
                       extra_args: list[str] | None = None, workers: int = 1) -> HostProcess:
    """Start `python -m devhost --no-stack --workers <workers>` with `env` layered over os.environ.

    `env` must carry MARKR_DATABASE_URL (and VaultStorage if the app uses the vault). Call
    .wait_ready() before using .base_url.
    """
    work = Path(tempfile.mkdtemp(prefix="devhost-"))
    ready, log = work / "ready.json", work / "host.log"
    args = [sys.executable, "-m", "devhost", "--no-stack", "--port", str(port), "--app", app,
            "--grace", str(grace), "--ready-file", str(ready), "--workers", str(workers), *(extra_args or [])]
    if queues_file is not None:
        args += ["--queues", str(queues_file)]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=out,
                                   stderr=subprocess.STDOUT)
    return HostProcess(process, ready, log)
