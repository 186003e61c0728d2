"""Shared pieces of the benchmarks: a throw-away stack, CPU accounting per process group, invocation
counts, percentiles.

CPU accounting (ProcessGroup / CpuMeter): a group is a root process and all its descendants. Its
cumulative CPU at an instant is, over every live process of the tree, utime+stime (its own) plus
cutime+cstime (what its reaped children, and theirs, used). An exited child that its parent reaped
is thus still counted (in the parent's cutime/cstime), so short-lived PostgreSQL backends are not
lost between samples. The meter samples /proc periodically and keeps the maximum seen per group, so
a child caught between exit and reaping never makes the total go backwards.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devhost.stack import Azurite, Postgres  # noqa: E402
from devhost.testing import HostProcess, start_host_process  # noqa: E402

BENCH_VENDOR = "bench"

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------- /proc


def _stat(pid: int) -> tuple[int, int, float, float] | None:
    """(ppid, starttime, own cpu s, reaped children's cpu s) from /proc/<pid>/stat, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # fields from #3 (state) on; comm may hold spaces
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    starttime = int(fields[19])
    return ppid, starttime, (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is not None:
            children.setdefault(st[0], []).append(int(entry.name))
    return children


@dataclass
class ProcessGroup:
    """A root pid and its descendants."""
    name: str
    root_pid: int
    peak: float = 0.0
    seen: dict[int, int] = field(default_factory=dict)  # pid -> starttime

    def cumulative(self, children: dict[int, list[int]]) -> float:
        total, stack = 0.0, [self.root_pid]
        while stack:
            pid = stack.pop()
            st = _stat(pid)
            if st is None:
                continue
            self.seen[pid] = st[1]
            total += st[2] + st[3]
            stack.extend(children.get(pid, ()))
        self.peak = max(self.peak, total)
        return self.peak


class CpuMeter:
    """Samples the groups every `interval` s in a thread; snapshot() gives {group: cumulative CPU s}."""

    def __init__(self, groups: list[ProcessGroup], interval: float = 0.5) -> None:
        self.groups = groups
        self.interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)

    def sample(self) -> dict[str, float]:
        with self._lock:
            children = _children_map()
            return {g.name: g.cumulative(children) for g in self.groups}

    def snapshot(self) -> dict[str, float]:
        return self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> CpuMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU-seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    total = sum(fields)
    return (total - fields[3] - fields[4]) / CLK_TCK, total / CLK_TCK


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    delta = {name: after[name] - before.get(name, 0.0) for name in after}
    delta["total"] = sum(delta.values())
    return delta


def per_thousand(delta: dict[str, float], submissions: int) -> dict[str, float]:
    return {name: value * 1000 / submissions for name, value in delta.items()} if submissions else {}


def format_cpu_line(delta: dict[str, float], submissions: int) -> str:
    per = per_thousand(delta, submissions)
    return ("CPU-s per 1,000 submissions: " + ", ".join(
        f"{name} {per[name]:.1f}" for name in ("host", "postgres", "azurite") if name in per)
        + f", total {per.get('total', float('nan')):.1f}")


# ------------------------------------------------------------------------------------------- stack


def bench_auth(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(app settings, request headers): the host trusts a development issuer of the benchmark's own,
    and the headers carry a token from it (minted as `markr-ops token` does) with every role, as
    vendor BENCH_VENDOR, valid for 12 h."""
    from devhost.devissuer import DevIssuer, local_auth_env

    env = local_auth_env(directory)
    token = DevIssuer.ensure(directory).mint(["Results.Submit", "Results.Read", "Ops.Admin"], vendor=BENCH_VENDOR,
                                             expires_in=12 * 3600)
    return env, {"Authorization": f"Bearer {token}"}


def postmaster_pid(pg: Postgres) -> int:
    data_dir = getattr(pg, "server_data_dir", pg.data_dir)  # a relocated cluster (newer devhost.stack)
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def host_supports(option: str) -> bool:
    done = subprocess.run([sys.executable, "-m", "devhost", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    return option in done.stdout


class BenchStack:
    """A throw-away PostgreSQL + Azurite under .local/bench/<name> and `python -m devhost` as a
    subprocess (its stdout+stderr in host.log). Use as a context manager: everything it started is
    stopped on exit, even on Ctrl-C or error."""

    def __init__(self, name: str, env: dict[str, str] | None = None, host_args: list[str] | None = None,
                 start_host: bool = True) -> None:
        self.work = ROOT / ".local" / "bench" / name
        self.extra_env = env or {}
        self.host_args = host_args or []
        self.start_host_now = start_host
        self.pg = Postgres(self.work / "pg" / "data")
        self.azurite = Azurite(self.work / "azurite")
        self.host: HostProcess | None = None
        self.env: dict[str, str] = {}
        self.auth_headers: dict[str, str] = {}  # credentials for every route (bench_auth)
        self._host_pids: set[int] = set()
        self._host_group: ProcessGroup | None = None

    def __enter__(self) -> BenchStack:
        shutil.rmtree(self.work, ignore_errors=True)
        try:
            from shared.db.migrations import migrate

            url = self.pg.start()
            storage = self.azurite.start()
            migrate(url)
            auth_env, self.auth_headers = bench_auth(self.work / "auth")
            self.env = {"MARKR_DATABASE_URL": url, "VaultStorage": storage, "MARKR_BUS": "local", **auth_env,
                        **self.extra_env}
            if self.start_host_now:
                self.start_host()
        except BaseException:
            self.close()
            raise
        return self

    def start_host(self, timeout: float = 120) -> HostProcess:
        self.host = start_host_process(self.env, extra_args=self.host_args).wait_ready(timeout)
        return self.host

    def worker_count(self) -> int | None:
        """How many worker processes the host reports in its ready file (None: a host without workers)."""
        assert self.host is not None
        with contextlib.suppress(Exception):
            workers = json.loads(self.host.ready_file.read_text()).get("workers")
            if isinstance(workers, list):
                return len(workers)
        return None

    def groups(self) -> list[ProcessGroup]:
        assert self.host is not None and self.azurite.process is not None
        self._host_group = ProcessGroup("host", self.host.pid)
        return [self._host_group, ProcessGroup("postgres", postmaster_pid(self.pg)),
                ProcessGroup("azurite", self.azurite.process.pid)]

    @property
    def root_url(self) -> str:
        assert self.host is not None
        return self.host.base_url.removesuffix("/api")

    def stop_host(self) -> None:
        if self.host is None:
            return
        host, self.host = self.host, None
        seen = dict(self._host_group.seen) if self._host_group else {}
        with contextlib.suppress(Exception):
            host.terminate(60)
        host.close()
        # Worker processes of the host (if any) that outlived it: only pids this benchmark saw in the
        # host's tree, still with the same start time (not a reused pid).
        for pid, started in seen.items():
            if pid == host.pid:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                st = _stat(pid)
                if st is not None and st[1] == started:
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            shutil.rmtree(host.log_file.parent, ignore_errors=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_host()
        with contextlib.suppress(Exception):
            self.azurite.stop()
        with contextlib.suppress(Exception):
            self.pg.stop()
        with contextlib.suppress(Exception):
            if hasattr(self.pg, "remove"):  # newer devhost.stack: the cluster may live outside self.work
                self.pg.remove()
        shutil.rmtree(self.work, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------- invocations

_EXECUTED = re.compile(r"Executed '([^']+)' \(")


def invocations_from_log(text: str) -> Counter:
    return Counter(m.group(1) for m in _EXECUTED.finditer(text))


def invocation_counts(stack: BenchStack) -> tuple[Counter, str]:
    """{function: invocations so far} from GET /admin/host/invocations if the host answers 200, else
    from the "Executed '<name>' (...)" lines of the host's log. Returns (counts, source)."""
    import urllib.request

    assert stack.host is not None
    with contextlib.suppress(Exception), \
            urllib.request.urlopen(f"{stack.root_url}/admin/host/invocations", timeout=10) as resp:
        data = json.loads(resp.read())
        if resp.status == 200 and isinstance(data, dict):
            data = data.get("functions", data) if isinstance(data.get("functions"), dict) else data
            return Counter({k: int(v) for k, v in data.items()}), "GET /admin/host/invocations"
    return invocations_from_log(stack.host.log()), "host log lines"


# ------------------------------------------------------------------------------------------ numbers


def median_seconds(action, repeat: int) -> float:
    """The median wall time of `repeat` calls of `action`."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return percentile(times, 50)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); nan when empty."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def install_sigterm_as_interrupt() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt in the main thread, so `finally` blocks stop the stack."""
    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored


def now() -> float:
    return time.perf_counter()
