"""Outage driver: Azurite and PostgreSQL go away under load; does the pipeline lose, double or lie?

    .venv/bin/python bench/outages.py                       # both scenarios
    .venv/bin/python bench/outages.py --only storage --submissions 300
    .venv/bin/python bench/outages.py --only database --heal-timeout 420

Starts a throw-away stack (PostgreSQL + Azurite under .local/bench, `python -m devhost` running the
real function app; bench/harness.py) and stops everything it started on exit.

storage:  a stream of async imports (`Prefer: respond-async`, 4 clients); mid-stream Azurite is
          stopped (SIGINT, as the stack stops it) and started again on the same port and data. A 503
          is retried after its Retry-After, as a vendor would. Then: every accepted submission must
          end `completed` (none `failed`, none stuck), and every test's aggregate must equal an
          oracle computed from the accepted documents with shared/domain/scoring_policy.py.
database: PostgreSQL is stopped (fast shutdown) while a sync import is being validated; meanwhile
          reads, health and a new sync import are timed; then it is started again and the time until
          each heals by itself is measured (health 200, reads 200, the interrupted import completed,
          and the import refused with `503 queue-unavailable` (vaulted, never queued) completed by
          the reconciler once older than its 5-minute grace).

Prints the figures; exits 1 if an expectation failed (it prints which). Not part of the test suite.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import statistics
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

from bench.harness import BenchStack, install_sigterm_as_interrupt, percentile  # noqa: E402
from devhost.stack import azurite_connection_string, port_open  # noqa: E402
from shared.domain.scoring_policy import BestMarks  # noqa: E402
from tests.documents import make_document  # noqa: E402

XML = {"Content-Type": "text/xml+markr"}
FINAL = {"completed", "rejected", "failed"}
problems: list[str] = []


def expect(ok: bool, what: str) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}")
    if not ok:
        problems.append(what)


def request(base: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 120) -> tuple[int, dict, dict, float]:
    """(status, JSON body, headers, seconds); status 0 when the connection itself failed."""
    started = time.perf_counter()
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw, hdrs = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        status, raw, hdrs = exc.code, exc.read(), dict(exc.headers)
    except OSError as exc:
        return 0, {"error": str(exc)}, {}, time.perf_counter() - started
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        data = {"raw": raw[:200].decode(errors="replace")}
    return status, data, hdrs, time.perf_counter() - started


# ------------------------------------------------------------------------------------------ oracle


def documents(n: int, tests: int, seed: int, first_test: int) -> list[list[dict]]:
    """n small documents over `tests` tests; students repeat across documents (re-scans)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        test = str(first_test + rng.randrange(tests))
        docs.append([{"test_id": test, "student_number": f"{rng.randrange(60):04d}",
                      "available": (a := rng.choice((10, 20, 25))), "obtained": rng.randint(0, a)}
                     for _ in range(rng.randint(1, 4))])
    return docs


def oracle(accepted: list[list[dict]]) -> dict[str, dict]:
    best: dict[tuple[str, str], BestMarks] = {}
    for doc in accepted:
        for r in doc:
            key, seen = (r["test_id"], r["student_number"]), best.get((r["test_id"], r["student_number"]))
            best[key] = BestMarks(max(seen.available, r["available"]) if seen else r["available"],
                                  max(seen.obtained, r["obtained"]) if seen else r["obtained"])
    out = {}
    for test in sorted({t for t, _ in best}):
        pct = sorted(b.percent for (t, _), b in best.items() if t == test)
        out[test] = {"count": len(pct), "mean": statistics.fmean(pct), "stddev": statistics.pstdev(pct),
                     "min": pct[0], "max": pct[-1], "p25": percentile(pct, 25), "p50": percentile(pct, 50),
                     "p75": percentile(pct, 75)}
    return out


def wait_final(base: str, ids: list[str], timeout: float) -> dict[str, str]:
    deadline, status = time.monotonic() + timeout, {}
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        still = []
        for sid in pending:
            code, body, _, _ = request(base, "GET", f"/api/submissions/{sid}")
            status[sid] = body.get("status", f"http {code}")
            if status[sid] not in FINAL:
                still.append(sid)
        pending = still
        if pending:
            time.sleep(0.5)
    return status


# ----------------------------------------------------------------------------------------- storage


class CuttableLink:
    """A TCP forwarder in front of Azurite. cut(seconds) makes it vanish as a stopped Azurite would:
    live connections are reset, and new ones are reset as soon as they are accepted, for `seconds`.
    (Closing the listener instead can strand a connection in its accept queue, never answered.)"""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self._cut_until = 0.0
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        # shutdown() first: a bare close() while a pump thread sits in recv() on the socket sends
        # nothing, leaving the peer waiting for an answer until its read timeout.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def _accept(self) -> None:
        while True:
            client, _ = self._server.accept()
            if time.monotonic() < self._cut_until:
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                self._reset(client)
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._conns.discard(sock)

    def cut(self, seconds: float) -> float:
        """Reset everything for `seconds`; returns how long the cut lasted."""
        started = time.monotonic()
        self._cut_until = started + seconds
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for sock in conns:
            self._reset(sock)
        time.sleep(seconds)
        return time.monotonic() - started


def storage_outage(stack: BenchStack, link: CuttableLink, n: int, seed: int, cut: float, restart: bool) -> None:
    base = stack.root_url
    docs = documents(n, tests=5, seed=seed, first_test=7100 if restart else 7000)  # tests of its own
    accepted: dict[int, str] = {}
    answers: dict[int, int] = {}
    lock = threading.Lock()
    outage: dict[str, float] = {}
    stopping = threading.Event()

    def post(i: int) -> None:
        body = make_document(docs[i])
        for _ in range(60):
            if stopping.is_set():
                return
            code, data, hdrs, _ = request(base, "POST", "/api/import", body, {**XML, "Prefer": "respond-async"})
            with lock:
                answers[code] = answers.get(code, 0) + 1
            if code == 202:
                with lock:
                    accepted[i] = data["submissionId"]
                return
            time.sleep(float(hdrs.get("Retry-After", "1")) if code == 503 else 0.5)

    def blip() -> None:
        while len(accepted) < n // 3:
            time.sleep(0.01)
        outage["at"] = len(accepted)
        if restart:  # the real thing: Azurite stopped as the stack stops it, and started again
            started = time.perf_counter()
            stack.azurite.stop()
            stack.azurite.start()
            outage["down"] = time.perf_counter() - started
        else:
            outage["down"] = link.cut(cut)

    print(f"storage outage ({'restart' if restart else f'{cut:.1f} s cut'}): {n} async imports, 4 clients")
    started = time.perf_counter()
    killer = threading.Thread(target=blip)
    killer.start()
    pool = ThreadPoolExecutor(4)
    try:
        list(pool.map(post, range(n)))
    finally:
        stopping.set()  # on Ctrl-C: no queued document is sent, no client retries
        pool.shutdown(wait=False, cancel_futures=True)
    killer.join()
    posted = time.perf_counter() - started
    how = "stopped (SIGINT) and restarted" if restart else "unreachable (connections reset, new ones refused)"
    print(f"  Azurite {how} for {outage['down']:.2f} s, after {outage['at']} accepted")
    print(f"  POST answers: {dict(sorted(answers.items()))} in {posted:.1f} s")
    expect(len(accepted) == n, f"every document accepted in the end ({len(accepted)}/{n})")
    status = wait_final(base, list(accepted.values()), timeout=180)
    by = {}
    for s in status.values():
        by[s] = by.get(s, 0) + 1
    print(f"  final statuses: {by}")
    expect(by.get("completed", 0) == len(accepted), "every accepted submission completed; none failed or stuck")
    want = oracle([docs[i] for i in accepted])
    wrong = []
    for test, stats in want.items():
        _, got, _, _ = request(base, "GET", f"/api/results/{test}/aggregate")
        if got.get("count") != stats["count"] or any(abs(got.get(k, 1e9) - v) > 1e-9 for k, v in stats.items()):
            wrong.append((test, got, stats))
    expect(not wrong, f"every aggregate equals the oracle ({len(want) - len(wrong)}/{len(want)} tests)")
    for test, got, stats in wrong:
        print(f"    test {test}: got {got}, oracle {stats}")


# ---------------------------------------------------------------------------------------- database


def _validation_locked(url: str) -> bool:
    with psycopg.connect(url, connect_timeout=2) as conn:
        return bool(conn.execute("SELECT count(*) FROM bus.messages WHERE queue = 'submission-validation'"
                                 " AND locked_until > now()").fetchone()[0])


def database_outage(stack: BenchStack, down_for: float, heal_timeout: float) -> None:
    base, url = stack.root_url, stack.env["MARKR_DATABASE_URL"]
    test = "7999"
    warm = request(base, "POST", "/api/import", make_document([{"test_id": test, "student_number": "w1"}]), XML)
    expect(warm[0] == 201, f"a sync import before the outage answers 201 (got {warm[0]})")
    print(f"database outage: PostgreSQL stopped while a sync import is being validated, for {down_for:.0f} s")

    # A document big enough that its validation is still running when the database goes.
    big = make_document([{"test_id": test, "student_number": f"b{i:05d}", "available": 20, "obtained": i % 21}
                         for i in range(20000)])
    interrupted: dict = {}

    def sync_import() -> None:
        interrupted["answer"] = request(base, "POST", "/api/import", big, XML)

    poster = threading.Thread(target=sync_import)
    poster.start()
    deadline = time.monotonic() + 60
    while not _validation_locked(url) and time.monotonic() < deadline and poster.is_alive():
        time.sleep(0.005)
    stopping = time.perf_counter()
    stack.pg.stop()
    down_at = time.perf_counter()
    print(f"  pg_ctl stop -m fast took {down_at - stopping:.2f} s")

    probes = {"GET aggregate": ("GET", f"/api/results/{test}/aggregate", None, {}),
              "GET health": ("GET", "/api/health", None, {}),
              "GET submission": ("GET", f"/api/submissions/{warm[1].get('submissionId')}", None, {}),
              "POST import (sync)": ("POST", "/api/import",
                                     make_document([{"test_id": test, "student_number": "o1"}]), XML)}
    refused_id = None
    for name, (method, path, body, headers) in probes.items():
        code, data, hdrs, took = request(base, method, path, body, headers)
        err = data.get("error", {}).get("code") if isinstance(data.get("error"), dict) else data.get("status")
        print(f"  {name:20s} {code} {err!s:22s} Retry-After={hdrs.get('Retry-After', '-'):>3}  {took:.2f} s")
        expect(code == 503 and "Retry-After" in hdrs and took <= 5.0,
               f"{name} answers 503 with Retry-After within 5 s while the database is down")
        if name.startswith("POST"):
            refused_id = (data.get("error", {}).get("details") or data.get("error", {})).get("submissionId") \
                or data.get("submissionId")
    poster.join(120)
    code, data, _, took = interrupted["answer"]
    print(f"  interrupted sync import: {code} {data.get('status')} after {took:.1f} s "
          f"(submissionId {data.get('submissionId')}, statusUrl {data.get('statusUrl')})")
    expect(code == 202 and data.get("submissionId") and data.get("statusUrl"),
           "the sync import whose wait lost the database answers 202 with submissionId and statusUrl")

    time.sleep(max(0.0, down_for - (time.perf_counter() - down_at)))
    stack.pg.start()
    up = time.perf_counter()
    print(f"  PostgreSQL back after {up - down_at:.1f} s down")
    healed: dict[str, float] = {}
    watch = {"health 200": lambda: request(base, "GET", "/api/health")[0] == 200,
             "aggregate 200": lambda: request(base, "GET", f"/api/results/{test}/aggregate")[0] == 200,
             "interrupted import completed": lambda: request(
                 base, "GET", f"/api/submissions/{data.get('submissionId')}")[1].get("status") == "completed"}
    if refused_id:
        watch["refused (503) import completed by the reconciler"] = lambda: request(
            base, "GET", f"/api/submissions/{refused_id}")[1].get("status") == "completed"
    deadline = up + heal_timeout
    while len(healed) < len(watch) and time.perf_counter() < deadline:
        for name, check in watch.items():
            if name not in healed and check():
                healed[name] = time.perf_counter() - up
        time.sleep(0.25)
    for name in watch:
        took = healed.get(name)
        when = f"{took:.1f} s after restart" if took is not None else f"NOT within {heal_timeout:.0f} s"
        print(f"  {name:50s} {when}")
        expect(took is not None, f"{name} by itself after the restart")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("storage", "database"))
    parser.add_argument("--submissions", type=int, default=263)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--cut", type=float, default=0.8, help="seconds Azurite is unreachable")
    parser.add_argument("--restart-too", action="store_true",
                        help="also stop and restart the Azurite process itself (several seconds down)")
    parser.add_argument("--down-for", type=float, default=10.0, help="seconds PostgreSQL stays down")
    parser.add_argument("--heal-timeout", type=float, default=420.0,
                        help="seconds to wait for everything to heal (the reconciler's grace is 5 min)")
    args = parser.parse_args()
    install_sigterm_as_interrupt()
    env = {"MARKR_DEAD_LETTER_SWEEP_SCHEDULE": "*/10 * * * * *", "MARKR_IMPORT_WAIT_SECONDS": "30"}
    with BenchStack("outages", env=env, start_host=False) as stack:
        link = CuttableLink(stack.azurite.table_port)  # the host reaches Azurite through it
        stack.env["VaultStorage"] = azurite_connection_string(link.port)
        stack.start_host()
        if args.only in (None, "storage"):
            storage_outage(stack, link, args.submissions, args.seed, args.cut, restart=False)
            if args.restart_too:
                storage_outage(stack, link, args.submissions, args.seed + 1, args.cut, restart=True)
        if args.only in (None, "database"):
            assert port_open(stack.pg.port)
            database_outage(stack, args.down_for, args.heal_timeout)
    print("all expectations held" if not problems else f"{len(problems)} expectation(s) failed")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
