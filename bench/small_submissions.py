"""Many small submissions through the local host, as vendors send them: throughput, CPU per process
group, receiver latency, time to `completed`, invocations per submission.

    .venv/bin/python -m bench.small_submissions [--documents 1000] [--clients 8] [--mode async|sync|both]
                                                [--workers N] [--timeout 600] [--json]

1,000 deterministic documents of 10 results each (5 test ids, re-scans: some (test, student) pairs
appear in several documents) are POSTed to /api/import by 8 concurrent clients (threads, keep-alive
http.client connections), on a fresh throw-away stack per mode (PostgreSQL + Azurite under
.local/bench/, `python -m devhost` as a subprocess):

- async: `Prefer: respond-async` -> 202, then each client polls GET /api/submissions/{id} (oldest
  first) until completed/rejected/failed;
- sync: the default POST, which waits for the verdict -> 201.

The wall time runs from the first POST until every submission is done AND every test's aggregate
(count, mean and stddev) equals an oracle computed here with the Markr rule (per (test, student) the highest
obtained and the highest available, independently; percent = 100*obtained/available; population
stddev). CPU is measured from /proc for the host (and its children), the PostgreSQL cluster (postmaster
and backends, exited ones through the postmaster's cutime/cstime) and Azurite; the benchmark's own
client CPU is not counted. Invocations come from GET /admin/host/invocations when the host has it,
else from the host's "Executed '<function>'" log lines. Last, an idle latency check posts
tests/data/sample_results.xml 200 times (respond-async) and 100 times (sync), sequentially.

Exits non-zero if the time limit ran out or the aggregates never matched the oracle.
"""
from __future__ import annotations

import argparse
import collections
import http.client
import json
import math
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    BenchStack,
    CpuMeter,
    cpu_delta,
    host_supports,
    install_sigterm_as_interrupt,
    invocation_counts,
    machine_cpu,
    per_thousand,
    percentile,
)
from tests.documents import make_document  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "sample_results.xml"
XML = {"Content-Type": "text/xml+markr"}
ASYNC = {**XML, "Prefer": "respond-async"}
TERMINAL = ("completed", "rejected", "failed")
BENCH_GETS = ("submission_status", "results_aggregate")  # the benchmark's own polling, not the pipeline's


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ workload


def generate(documents: int, results_per_document: int = 10, tests: int = 5, seed: int = 7):
    """Deterministic documents and the oracle {test_id: (count, mean, stddev)}.

    About 1 result in 6 is a re-scan of an earlier (test, student) pair, sometimes with a different
    `available`, so the "highest obtained and highest available independently" rule matters."""
    rng = random.Random(seed)
    test_ids = [str(9100 + t) for t in range(tests)]
    used: list[tuple[str, str]] = []
    best: dict[tuple[str, str], list[int]] = {}
    bodies: list[bytes] = []
    next_student = 1
    for _ in range(documents):
        results = []
        for _ in range(results_per_document):
            if used and rng.random() < 0.17:
                test_id, student = used[rng.randrange(len(used))]
                available = rng.choice((20, 20, 20, 25))
            else:
                test_id, student = rng.choice(test_ids), f"{next_student:06d}"
                next_student += 1
                used.append((test_id, student))
                available = 20
            obtained = rng.randint(0, available)
            results.append({"student_number": student, "test_id": test_id, "available": available,
                            "obtained": obtained, "first_name": rng.choice(("Ana", "Li", "Sam", "Noor")),
                            "last_name": rng.choice(("Smith", "Chen", "Kaur", "Müller"))})
            mark = best.setdefault((test_id, student), [0, 0])
            mark[0], mark[1] = max(mark[0], available), max(mark[1], obtained)
        bodies.append(make_document(results))
    percents: dict[str, list[float]] = collections.defaultdict(list)
    for (test_id, _student), (available, obtained) in best.items():
        percents[test_id].append(100.0 * obtained / available)
    oracle = {}
    for test_id, values in sorted(percents.items()):
        mean = sum(values) / len(values)
        oracle[test_id] = (len(values), mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)))
    return bodies, oracle


# --------------------------------------------------------------------------------------------- HTTP


class Client:
    """One keep-alive HTTP/1.1 connection; every request carries `Client.auth` (set from the stack)."""

    auth: dict[str, str] = {}

    def __init__(self, root_url: str, timeout: float = 120) -> None:
        parts = urlsplit(root_url)
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict, float]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            started = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers={**self.auth, **(headers or {})})
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()  # a keep-alive connection the server closed: reconnect once
                if attempt == 2:
                    raise
                continue
            elapsed = time.perf_counter() - started
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            try:
                answer = json.loads(raw) if raw else {}
            except ValueError:
                answer = {"raw": raw[:200].decode(errors="replace")}
            return resp.status, answer, elapsed
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Tally:
    """What the clients saw, shared between threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.post_latency: list[float] = []
        self.to_completed: list[float] = []
        self.statuses: Counter = Counter()   # final status per submission
        self.answers: Counter = Counter()    # HTTP status of the POSTs
        self.errors: list[str] = []
        self.polls = 0


def client_loop(root: str, mode: str, bodies: list[bytes], next_index, tally: Tally, stop: threading.Event,
                poll_interval: float) -> None:
    client = Client(root)
    outstanding: collections.deque = collections.deque()  # (submission id, wall time of the 202)
    try:
        while not stop.is_set():
            i = next_index()
            if i is None:
                break
            status, answer, elapsed = client.request("POST", "/api/import", bodies[i],
                                                     ASYNC if mode == "async" else XML)
            accepted_at = time.time()
            with tally.lock:
                tally.post_latency.append(elapsed)
                tally.answers[status] += 1
            if status == 201:
                with tally.lock:
                    tally.statuses[answer.get("status", "?")] += 1
            elif status == 202:
                outstanding.append((answer["submissionId"], accepted_at))
            else:
                with tally.lock:
                    tally.statuses[answer.get("status", f"http-{status}")] += 1
                    tally.errors.append(f"POST -> {status}: {json.dumps(answer)[:300]}")
        while outstanding and not stop.is_set():
            sid, accepted_at = outstanding[0]
            status, state, _ = client.request("GET", f"/api/submissions/{sid}")
            with tally.lock:
                tally.polls += 1
            if state.get("status") in TERMINAL:
                seen = time.time()
                outstanding.popleft()
                done_at = _epoch(state.get("completedAt") or state.get("rejectedAt") or state.get("failedAt"))
                with tally.lock:
                    tally.statuses[state["status"]] += 1
                    tally.to_completed.append((done_at or seen) - accepted_at)
            else:
                stop.wait(poll_interval)
    except Exception as exc:  # noqa: BLE001 - reported, and the run fails
        with tally.lock:
            tally.errors.append(f"client: {type(exc).__name__}: {exc}")
    finally:
        client.close()


def aggregates_match(root: str, oracle: dict) -> tuple[bool, dict]:
    client, seen = Client(root, timeout=30), {}
    try:
        for test_id, (count, mean, stddev) in oracle.items():
            status, agg, _ = client.request("GET", f"/api/results/{test_id}/aggregate")
            seen[test_id] = agg
            if (status != 200 or agg.get("count") != count
                    or not math.isclose(agg.get("mean", math.nan), mean, rel_tol=1e-9, abs_tol=1e-9)
                    or not math.isclose(agg.get("stddev", math.nan), stddev, rel_tol=1e-6, abs_tol=1e-6)):
                return False, seen
        return True, seen
    finally:
        client.close()


# ------------------------------------------------------------------------------------------ one mode


def run_mode(mode: str, args: argparse.Namespace, bodies: list[bytes], oracle: dict, host_args: list[str],
             deadline: float, idle_check: bool) -> dict:
    result: dict = {"mode": mode, "documents": len(bodies), "clients": args.clients, "completed": False}
    env = {"MARKR_DEAD_LETTER_SWEEP_SCHEDULE": "0 0 0 1 1 *"} if args.quiet_timers else {}
    with BenchStack(f"small-{mode}-{uuid.uuid4().hex[:6]}", env=env, host_args=host_args) as stack:
        root = stack.root_url
        Client.auth = stack.auth_headers
        result["host_workers"] = stack.worker_count()
        status, health, _ = Client(root).request("GET", "/api/health")
        if status != 200:
            raise RuntimeError(f"health: {status} {health}")
        with CpuMeter(stack.groups()) as meter:
            inv_before, inv_source = invocation_counts(stack)
            cpu_before = meter.snapshot()
            machine_before, own_before = machine_cpu(), time.process_time()
            tally, stop = Tally(), threading.Event()
            lock, counter = threading.Lock(), iter(range(len(bodies)))

            def next_index():
                with lock:
                    return next(counter, None)

            log(f"[{mode}] posting {len(bodies)} documents with {args.clients} clients ...")
            started = time.perf_counter()
            threads = [threading.Thread(target=client_loop, args=(root, mode, bodies, next_index, tally, stop,
                                                                  args.poll_interval), daemon=True)
                       for _ in range(args.clients)]
            for t in threads:
                t.start()
            timed_out = False
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
                    if time.monotonic() > deadline:
                        timed_out = True
                        stop.set()
                        break
                if timed_out:
                    break
            posted_at = time.perf_counter()
            matched, seen = False, {}
            while not timed_out:
                matched, seen = aggregates_match(root, oracle)
                if matched:
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                time.sleep(0.1)
            ended = time.perf_counter()
            cpu_after = meter.snapshot()
            machine_after, own_after = machine_cpu(), time.process_time()
            inv_after, inv_source = invocation_counts(stack)
        stop.set()
        wall = ended - started
        done = sum(tally.statuses.values())
        cpu = cpu_delta(cpu_before, cpu_after)
        invocations = inv_after - inv_before
        busy = machine_after[0] - machine_before[0]
        machine = {"busy_cpu_seconds": busy, "capacity_cpu_seconds": machine_after[1] - machine_before[1],
                   "stack_cpu_seconds": cpu["total"], "bench_process_cpu_seconds": own_after - own_before,
                   "other_cpu_seconds": busy - cpu["total"] - (own_after - own_before),
                   "load_average_1m_at_end": os.getloadavg()[0]}
        pipeline = {k: v for k, v in invocations.items() if k not in BENCH_GETS}
        result.update({
            "completed": matched and not timed_out and tally.statuses.get("completed", 0) == len(bodies),
            "timed_out": timed_out,
            "aggregates_match_oracle": matched,
            "wall_seconds": wall,
            "clients_done_seconds": posted_at - started,
            # when incomplete: only what reached a final status counts
            "submissions_per_second": (len(bodies) if matched else done) / wall if wall else math.nan,
            "post_answers": dict(tally.answers),
            "final_statuses": dict(tally.statuses),
            "status_polls": tally.polls,
            "cpu_seconds": cpu,
            "cpu_seconds_per_1000": per_thousand(cpu, len(bodies)),
            "machine": machine,
            "receiver_latency_ms": {"p50": 1000 * percentile(tally.post_latency, 50),
                                    "p99": 1000 * percentile(tally.post_latency, 99)},
            "invocations_source": inv_source,
            "invocations": dict(sorted(invocations.items())),
            "invocations_per_submission": {k: v / len(bodies) for k, v in sorted(invocations.items())},
            "pipeline_invocations_per_submission": sum(pipeline.values()) / len(bodies),
            "errors": tally.errors[:20],
            "submissions_done": done,
        })
        if mode == "async":
            result["accepted_to_completed_ms"] = {"p50": 1000 * percentile(tally.to_completed, 50),
                                                  "p99": 1000 * percentile(tally.to_completed, 99)}
        if not matched:
            result["aggregates_seen"] = seen
            result["oracle"] = {k: {"count": c, "mean": m} for k, (c, m, _) in oracle.items()}
        if idle_check and not timed_out and time.monotonic() < deadline:
            result["idle_check"] = idle_latency(root, args.idle_async, args.idle_sync, deadline)
    return result


def idle_latency(root: str, n_async: int, n_sync: int, deadline: float) -> dict:
    """Sample file, one POST at a time: `n_async` with respond-async (then wait for them to finish, so
    the sync ones meet an idle pipeline), then `n_sync` default POSTs."""
    body, client = SAMPLE.read_bytes(), Client(root)
    accepted, created, ids, answers = [], [], [], Counter()
    try:
        log(f"idle check: {n_async} respond-async POSTs of {SAMPLE.name} ...")
        for _ in range(n_async):
            if time.monotonic() > deadline:
                break
            status, answer, elapsed = client.request("POST", "/api/import", body, ASYNC)
            answers[f"async {status}"] += 1
            if status == 202:
                accepted.append(elapsed)
                ids.append(answer["submissionId"])
        for sid in ids:
            while time.monotonic() < deadline:
                _, state, _ = client.request("GET", f"/api/submissions/{sid}")
                if state.get("status") in TERMINAL:
                    break
                time.sleep(0.05)
        log(f"idle check: {n_sync} sync POSTs ...")
        for _ in range(n_sync):
            if time.monotonic() > deadline:
                break
            status, answer, elapsed = client.request("POST", "/api/import", body, XML)
            answers[f"sync {status}"] += 1
            if status == 201:
                created.append(elapsed)
    finally:
        client.close()
    return {"answers": dict(answers),
            "accepted_202_ms": {"n": len(accepted), "p50": 1000 * percentile(accepted, 50),
                                "p99": 1000 * percentile(accepted, 99)},
            "created_201_ms": {"n": len(created), "p50": 1000 * percentile(created, 50),
                               "p99": 1000 * percentile(created, 99)}}


# --------------------------------------------------------------------------------------------- output


def table(report: dict) -> str:
    workers = {str(r.get("host_workers") or "1 (no --workers in this host)") for r in report["modes"]}
    lines = [f"small submissions: {report['documents']} documents x {report['results_per_document']} results, "
             f"{report['clients']} clients, host worker processes: {', '.join(sorted(workers)) or '-'}"]
    for r in report["modes"]:
        cpu = r["cpu_seconds_per_1000"]
        lat = r["receiver_latency_ms"]
        flag = "" if r["completed"] else "  ** INCOMPLETE" + (" (timed out)" if r["timed_out"] else "") + " **"
        lines += [
            "",
            f"== {r['mode']} =={flag}",
            f"  submissions/s                 {r['submissions_per_second']:8.1f}   "
            f"({r['documents']} in {r['wall_seconds']:.1f} s, first POST -> aggregates match the oracle)",
            f"  CPU-s per 1,000 submissions   host {cpu.get('host', math.nan):.1f} | postgres "
            f"{cpu.get('postgres', math.nan):.1f} | azurite {cpu.get('azurite', math.nan):.1f} | "
            f"total {cpu.get('total', math.nan):.1f}",
            f"  machine during the run        {r['machine']['busy_cpu_seconds']:.0f} of "
            f"{r['machine']['capacity_cpu_seconds']:.0f} CPU-s busy: stack {r['machine']['stack_cpu_seconds']:.0f}, "
            f"benchmark clients {r['machine']['bench_process_cpu_seconds']:.0f}, other processes "
            f"{r['machine']['other_cpu_seconds']:.0f} (load avg {r['machine']['load_average_1m_at_end']:.1f})",
            f"  receiver latency (POST)       p50 {lat['p50']:.1f} ms | p99 {lat['p99']:.1f} ms   "
            f"answers {r['post_answers']}",
        ]
        if "accepted_to_completed_ms" in r:
            c = r["accepted_to_completed_ms"]
            lines.append(f"  202 -> completed              p50 {c['p50']:.0f} ms | p99 {c['p99']:.0f} ms   "
                         f"({r['status_polls']} status polls)")
        lines.append(f"  final statuses                {r['final_statuses']}; aggregates match oracle: "
                     f"{r['aggregates_match_oracle']}")
        inv = r["invocations_per_submission"]
        lines.append(f"  invocations per submission    (from {r['invocations_source']})")
        for name, value in inv.items():
            note = "   (benchmark's own GETs)" if name in BENCH_GETS else ""
            lines.append(f"      {name:<26}{value:8.3f}{note}")
        lines.append(f"      {'total':<26}{sum(inv.values()):8.3f}")
        lines.append(f"      {'pipeline (without GETs)':<26}{r['pipeline_invocations_per_submission']:8.3f}")
        for err in r["errors"][:5]:
            lines.append(f"  error: {err}")
        if "idle_check" in r:
            idle = r["idle_check"]
            a, s = idle["accepted_202_ms"], idle["created_201_ms"]
            lines += ["", f"== idle sample-file latency ({SAMPLE.name}, one at a time, after the {r['mode']} run) ==",
                      f"  202 respond-async  n={a['n']:<4} p50 {a['p50']:.1f} ms | p99 {a['p99']:.1f} ms",
                      f"  201 sync           n={s['n']:<4} p50 {s['p50']:.1f} ms | p99 {s['p99']:.1f} ms",
                      f"  answers {idle['answers']}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--results-per-document", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--mode", choices=("async", "sync", "both"), default="both")
    parser.add_argument("--workers", type=int, help="passed to `python -m devhost --workers N` if it has it")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the whole run (default 600)")
    parser.add_argument("--poll-interval", type=float, default=0.25,
                        help="async: seconds a client waits before asking again about a pending submission")
    parser.add_argument("--idle-async", type=int, default=200)
    parser.add_argument("--idle-sync", type=int, default=100)
    parser.add_argument("--no-idle-check", action="store_true")
    parser.add_argument("--quiet-timers", action="store_true",
                        help="push the dead-letter sweep timer out of the run (default: the app's schedule)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()
    install_sigterm_as_interrupt()
    deadline = time.monotonic() + args.timeout

    host_args: list[str] = []
    if args.workers is not None:
        if host_supports("--workers"):
            host_args = ["--workers", str(args.workers)]
        else:
            log(f"python -m devhost has no --workers option; ignoring --workers {args.workers}")

    bodies, oracle = generate(args.documents, args.results_per_document)
    log(f"{len(bodies)} documents ({sum(map(len, bodies)) / 1e6:.1f} MB), oracle: "
        + ", ".join(f"{t}: {c} students" for t, (c, _, _) in oracle.items()))
    modes = ["async", "sync"] if args.mode == "both" else [args.mode]
    report = {"documents": args.documents, "results_per_document": args.results_per_document,
              "clients": args.clients, "modes": []}
    failed = False
    try:
        for i, mode in enumerate(modes):
            idle = not args.no_idle_check and i == len(modes) - 1
            result = run_mode(mode, args, bodies, oracle, host_args, deadline, idle)
            report["modes"].append(result)
            failed |= not result["completed"]
            log(f"[{mode}] {result['submissions_per_second']:.1f} submissions/s, "
                f"{result['cpu_seconds_per_1000'].get('total', math.nan):.1f} CPU-s per 1,000, ok={result['completed']}")
            if result["timed_out"]:
                break
    except KeyboardInterrupt:
        log("interrupted; the stack was stopped")
        failed = True
    except Exception as exc:  # noqa: BLE001
        log(f"error: {type(exc).__name__}: {exc}")
        failed = True
    if time.monotonic() > deadline:
        log(f"time limit of {args.timeout:.0f} s reached; reporting what was measured")
        failed = True
    report["ok"] = not failed
    print(json.dumps(report, indent=2, default=str) if args.json else table(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
