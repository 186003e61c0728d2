"""`python -m devhost` as a real process: it serves exactly the app's functions, drains on SIGTERM,
and loses nothing when SIGKILLed while messages are locked."""
from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from devhost.discovery import indexed_functions
from devhost.queuesfile import load_queues, write_queues
from devhost.stack import ROOT
from devhost.testing import HostProcess, start_host_process
from shared.bus.local import LocalQueueEngine
from shared.bus.port import OutgoingMessage
from shared.bus.queues import QueueDefinition
from tests.e2e.apps.slow_app import SCHEMA

pytestmark = pytest.mark.e2e
SLOW_QUEUE = "slow-work"


def wait_until(predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def processes() -> Iterator[list[HostProcess]]:
    started: list[HostProcess] = []
    yield started
    for process in started:
        process.close()


# -- the real app -------------------------------------------------------------------------------
def _setting_env(host_env: dict[str, str]) -> dict[str, str]:
    """The settings the host process resolves binding expressions with."""
    env: dict[str, str] = {}
    for path in (ROOT / "local.settings.template.json", ROOT / "local.settings.json"):
        if path.exists():
            env.update({k: str(v) for k, v in json.loads(path.read_text()).get("Values", {}).items()})
    return {**env, **os.environ, **host_env}


def _resolved(text: str, env: dict[str, str]) -> str:
    return re.sub(r"%([^%]+)%", lambda m: env[m.group(1)], text)


def test_host_serves_exactly_the_real_apps_functions(database_url: str, vault_storage: str, vault_table: str,
                                                     processes: list[HostProcess]) -> None:
    import function_app

    host_env = {"MARKR_DATABASE_URL": database_url, "VaultStorage": vault_storage,
                "MARKR_VAULT_TABLE": vault_table, "MARKR_BUS": "local"}
    env = _setting_env(host_env)
    expected_http, expected_queues, expected_timers = set(), set(), set()
    for fn in indexed_functions(function_app.app):
        spec = fn.get_trigger().get_dict_repr()
        kind = str(getattr(spec["type"], "value", spec["type"]))
        name = fn.get_function_name()
        if kind == "httpTrigger":
            methods = tuple(sorted(str(getattr(m, "value", m)).upper() for m in spec.get("methods") or ()))
            expected_http.add((name, spec.get("route") or name, methods))
        elif kind == "serviceBusTrigger":
            expected_queues.add((name, _resolved(spec["queueName"], env)))
        elif kind == "timerTrigger":
            expected_timers.add((name, _resolved(spec["schedule"], env)))
    assert expected_http, "the app has no HTTP functions?"

    host = start_host_process(host_env).wait_ready()
    processes.append(host)
    manifest = json.loads(host.ready_file.read_text())
    all_methods = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")
    served_http = {(f["name"], f["route"], tuple(sorted(f["methods"])) if tuple(sorted(f["methods"])) != all_methods
                    else ()) for f in manifest["http"]}
    assert served_http == expected_http
    assert {(q["name"], q["queue"]) for q in manifest["queues"]} == expected_queues
    assert {(t["name"], t["schedule"]) for t in manifest["timers"]} == expected_timers

    # Every route answers on its path: a method it does not take gets 405 naming the ones it does
    # (which proves the route is served without running the handler).
    for name, route, methods in expected_http:
        if not methods:
            continue
        path = re.sub(r"\{[^}]*\}", "1", route)
        other = next(m for m in ("PATCH", "TRACE", "PUT", "DELETE", "POST", "GET") if m not in methods)
        request = urllib.request.Request(f"{host.base_url}/{path}", method=other)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        assert caught.value.code == 405, (name, route)
        allowed = {m.strip() for m in caught.value.headers["Allow"].split(",")}
        assert set(methods) <= allowed, (name, route)
    assert host.terminate() == 0


# -- the slow test app: draining and durability ---------------------------------------------------
def _slow_queue(lock_seconds: float) -> QueueDefinition:
    return QueueDefinition(
        name=SLOW_QUEUE, lock_duration=timedelta(seconds=lock_seconds),
        default_message_time_to_live=timedelta(days=1), requires_duplicate_detection=True,
        duplicate_detection_window=timedelta(minutes=10), dead_lettering_on_message_expiration=True,
        max_delivery_count=10,
    )


class SlowAppRun:
    def __init__(self, database_url: str, tmp_path: Path, processes: list[HostProcess], *, lock_seconds: float,
                 handler_seconds: float, concurrency: int) -> None:
        self.database_url = database_url
        self.queues_file = tmp_path / "queues.json"
        write_queues(self.queues_file, {SLOW_QUEUE: _slow_queue(lock_seconds)})
        self.engine = LocalQueueEngine(database_url, load_queues(self.queues_file))
        self.env = {"MARKR_DATABASE_URL": database_url, "MARKR_BUS": "local", "SLOW_APP_QUEUE": SLOW_QUEUE,
                    "SLOW_APP_SECONDS": str(handler_seconds)}
        self.concurrency = concurrency
        self.processes = processes
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(SCHEMA)

    def start(self) -> HostProcess:
        host = start_host_process(self.env, app="tests.e2e.apps.slow_app:app", queues_file=self.queues_file,
                                  extra_args=["--max-concurrent-calls", str(self.concurrency)])
        self.processes.append(host)
        return host.wait_ready()

    def send(self, count: int) -> list[str]:
        ids = [f"job-{i:03d}" for i in range(count)]
        self.engine.send_many(SLOW_QUEUE, [OutgoingMessage(body=b"{}", message_id=i) for i in ids])
        return ids

    def rows(self, sql: str) -> list[tuple]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(sql).fetchall()

    def attempts(self) -> list[tuple[str, int, int]]:
        return self.rows("SELECT message_id, delivery_count, pid FROM slow_attempts ORDER BY id")

    def completions(self) -> dict[str, tuple[int, int]]:
        return {m: (d, p) for m, d, p in self.rows("SELECT message_id, delivery_count, pid FROM slow_completions")}


@pytest.fixture
def slow_app(database_url: str, tmp_path: Path, processes: list[HostProcess]) -> Iterator[Callable[..., SlowAppRun]]:
    runs: list[SlowAppRun] = []

    def make(**options) -> SlowAppRun:
        run = SlowAppRun(database_url, tmp_path, processes, **options)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.engine.close()


@pytest.mark.slow
def test_sigterm_lets_running_handlers_finish_and_leaves_the_rest_queued(slow_app) -> None:
    run = slow_app(lock_seconds=30, handler_seconds=3, concurrency=2)
    host = run.start()
    ids = run.send(6)
    wait_until(lambda: len(run.attempts()) >= 2, what="two running handlers")
    assert host.terminate() == 0

    attempted = {m for m, _, _ in run.attempts()}
    done = run.completions()
    assert attempted == set(done)  # every handler that started finished (none cut off)
    assert len(done) == 2
    counts = run.engine.counts(SLOW_QUEUE)
    assert (counts.active, counts.dead_lettered) == (len(ids) - len(done), 0)
    left = run.engine.peek(SLOW_QUEUE)
    assert {m.message_id for m in left} == set(ids) - set(done)
    assert all(m.delivery_count == 0 for m in left)  # never handed out: nothing was abandoned

    # Nothing lost: the next run finishes the rest.
    run.start()
    wait_until(lambda: len(run.completions()) == len(ids) and run.engine.counts(SLOW_QUEUE).active == 0,
               what="the remaining messages")
    assert len(run.attempts()) == len(ids)


@pytest.mark.slow
def test_sigkill_while_messages_are_locked_loses_nothing(slow_app) -> None:
    run = slow_app(lock_seconds=2, handler_seconds=1, concurrency=3)
    first = run.start()
    ids = run.send(9)
    wait_until(lambda: len(run.attempts()) >= 4, what="handlers to be running")
    first.kill()
    interrupted = {m for m, _, _ in run.attempts()} - set(run.completions())
    assert interrupted, "the kill should have caught handlers mid-flight"

    second = run.start()
    wait_until(lambda: len(run.completions()) == len(ids) and run.engine.counts(SLOW_QUEUE).active == 0,
               what="every message to complete")
    done = run.completions()
    assert set(done) == set(ids)  # each message completed once (one row per message id)
    for message_id in interrupted:
        delivery_count, pid = done[message_id]
        assert delivery_count >= 2 and pid == second.pid  # redelivered after the lock ran out
    assert run.engine.counts(SLOW_QUEUE).dead_lettered == 0
    assert second.terminate() == 0


# -- several worker processes ------------------------------------------------------------------------
WORKERS_QUEUE, WORKERS_BATCH_QUEUE = "workers-one", "workers-many"


@pytest.fixture
def workers_app(database_url: str, tmp_path: Path) -> Iterator[tuple[dict[str, str], LocalQueueEngine, Path]]:
    from tests.e2e.apps.workers_app import SCHEMA as WORKERS_SCHEMA

    queues_file = tmp_path / "queues.json"
    write_queues(queues_file, {name: _slow_queue(30).with_overrides(name=name)
                               for name in (WORKERS_QUEUE, WORKERS_BATCH_QUEUE)})
    engine = LocalQueueEngine(database_url, load_queues(queues_file))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(WORKERS_SCHEMA)
    env = {"MARKR_DATABASE_URL": database_url, "MARKR_BUS": "local", "WORKERS_APP_QUEUE": WORKERS_QUEUE,
           "WORKERS_APP_BATCH_QUEUE": WORKERS_BATCH_QUEUE}
    yield env, engine, queues_file
    engine.close()


def _start_workers(env, queues_file: Path, processes: list[HostProcess], workers: int = 2) -> HostProcess:
    host = start_host_process(env, app="tests.e2e.apps.workers_app:app", queues_file=queues_file,
                              workers=workers, extra_args=["--max-concurrent-calls", "2"])
    processes.append(host)
    return host.wait_ready(120)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:  # a new connection each time
        return json.loads(resp.read())


def _supervisor_dirs() -> set[Path]:
    import tempfile

    return set(Path(tempfile.gettempdir()).glob("devhost-workers-*"))


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: nothing runs any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.slow
def test_two_workers_share_http_and_queues_and_stop_on_sigterm(workers_app, processes, database_url) -> None:
    env, engine, queues_file = workers_app
    host = _start_workers(env, queues_file, processes)
    assert not _supervisor_dirs()  # used only while the workers start
    workers = host.worker_pids
    assert len(set(workers)) == 2 and host.pid not in workers

    served_by: list[int] = []
    deadline = time.monotonic() + 120
    while set(served_by) != set(workers):
        assert time.monotonic() < deadline, f"HTTP served only by {set(served_by)}, workers {workers}"
        served_by.append(_get_json(f"{host.base_url}/pid")["pid"])
    assert set(served_by) <= set(workers)

    ids = [f"one-{i:02d}" for i in range(40)]
    engine.send_many(WORKERS_QUEUE, [OutgoingMessage(body=b"{}", message_id=i) for i in ids])
    batch_ids = [f"many-{i:02d}" for i in range(25)]
    engine.send_many(WORKERS_BATCH_QUEUE, [OutgoingMessage(body=b"{}", message_id=i) for i in batch_ids])

    def rows(function_name: str) -> list[tuple[str, str, int]]:
        with psycopg.connect(database_url) as conn:
            return conn.execute("SELECT message_id, invocation, pid FROM worker_handled WHERE function_name = %s",
                                (function_name,)).fetchall()

    wait_until(lambda: len(rows("one_by_one")) == len(ids) and len(rows("in_batches")) == len(batch_ids)
               and engine.counts(WORKERS_QUEUE).active == engine.counts(WORKERS_BATCH_QUEUE).active == 0,
               timeout=120, what="every message")
    singles, batches = rows("one_by_one"), rows("in_batches")
    assert sorted(m for m, _, _ in singles) == ids and sorted(m for m, _, _ in batches) == batch_ids
    assert {p for _, _, p in singles} == set(workers)  # both workers took queue messages
    assert {p for _, _, p in batches} <= set(workers)

    # Invocation counts are summed over both workers, whichever one answers.
    expected = {"pid": len(served_by), "one_by_one": len(ids), "in_batches": len({i for _, i, _ in batches})}
    for _ in range(4):
        assert _get_json(f"http://127.0.0.1:{host.port}/admin/host/invocations") == expected

    assert host.terminate(120) == 0
    assert all(_gone(pid) for pid in workers)
    log = host.log()
    assert all(f"pid={pid} " in log for pid in workers)  # each worker's lines name it
    assert log.count("host stopped") == 2


@pytest.mark.slow
def test_a_dead_worker_is_restarted_and_workers_die_with_the_host(workers_app, processes) -> None:
    env, engine, queues_file = workers_app
    host = _start_workers(env, queues_file, processes)
    first, second = host.worker_pids
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: first not in host.worker_pids and len(host.worker_pids) == 2, timeout=120,
               what="the worker to be restarted")
    [replacement] = set(host.worker_pids) - {second}
    deadline = time.monotonic() + 120
    seen: set[int] = set()
    while replacement not in seen:
        assert time.monotonic() < deadline, "the restarted worker never served HTTP"
        seen.add(_get_json(f"{host.base_url}/pid")["pid"])
    # Killing the host is a crash of all of it: no worker keeps running (and consuming) on its own.
    host.kill()
    wait_until(lambda: _gone(replacement) and _gone(second), timeout=60, what="the workers to die")
    assert not _supervisor_dirs()  # nothing left behind by the crash either
