"""`python -m devhost`: run the function app locally, as `func start` would, on the local stack.

Loads local.settings.json, starts PostgreSQL and Azurite unless settings point elsewhere, applies
migrations, then serves HTTP on 127.0.0.1:<port>/api and runs queue and timer triggers until
Ctrl-C / SIGTERM (running handlers get a grace period; exit code 0). With --workers N (default: one
per CPU) N worker processes share the port and the queues (devhost/workers.py); --workers 1 runs
everything in this process.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from devhost import logs
from devhost.settings import load_local_settings
from devhost.stack import ROOT

log = logging.getLogger("devhost")


def _parse_args(argv: list[str], default_port: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=default_port, help="HTTP port (0 = any free port)")
    parser.add_argument("--no-stack", action="store_true",
                        help="start no PostgreSQL/Azurite; MARKR_DATABASE_URL must be set")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--queues", type=Path, help="queue definitions file (schemas/queues.json format)")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds running handlers get at shutdown")
    parser.add_argument("--max-concurrent-calls", type=int,
                        help="per queue; default host.json extensions.serviceBus.maxConcurrentCalls")
    parser.add_argument("--max-auto-lock-renewal", type=float,
                        help="seconds (0 disables); default host.json maxAutoLockRenewalDuration")
    parser.add_argument("--max-message-batch-size", type=int,
                        help="batch triggers; default host.json extensions.serviceBus.maxMessageBatchSize")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes sharing the HTTP port and the queues (default: CPU count; "
                             "1 = everything in this process)")
    parser.add_argument("--ready-file", type=Path, help="write {base_url, pid, functions} here once serving")
    # Internal: how the supervisor starts a worker.
    parser.add_argument("--worker-slot", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--counts-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def _worker_args(args: argparse.Namespace) -> list[str]:
    """The command-line options a worker of this host gets (it starts no stack of its own)."""
    out = ["--no-stack", "--app", args.app, "--grace", str(args.grace), "--workers", "1"]
    for flag, value in (("--queues", args.queues), ("--max-concurrent-calls", args.max_concurrent_calls),
                        ("--max-auto-lock-renewal", args.max_auto_lock_renewal),
                        ("--max-message-batch-size", args.max_message_batch_size)):
        if value is not None:
            out += [flag, str(value)]
    return out


def load_app(spec: str):
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute or "app")


def main(argv: list[str] | None = None) -> int:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    local = load_local_settings()
    from devhost.settings import apply_values

    apply_values(local.get("Values", {}))
    args = _parse_args(sys.argv[1:] if argv is None else argv,
                       int(local.get("Host", {}).get("LocalHttpPort", 7071)))
    worker = args.worker_slot is not None
    if worker:
        from devhost.workers import die_with_parent

        die_with_parent(args.parent_pid)
    logs.configure(worker_pid=worker)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C: give up waiting; locks run out, nothing is lost
            log.warning("second %s: exiting without waiting", signal.Signals(signum).name)
            os._exit(1)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if worker:
        return _serve(args, stop, worker=True)
    from devhost.localstack import LocalStack

    stack = LocalStack(use_stack=not args.no_stack)
    try:
        stack.start()
        _prepare()
        if args.workers == 1:
            return _serve(args, stop)
        return _supervise(args, stop)
    finally:
        stack.stop()


def _prepare() -> None:
    """Once per host (not per worker): migrations, and the bus check."""
    import shared.bootstrap
    from shared.config import settings
    from shared.db.migrations import migrate

    shared.bootstrap.reset()
    for name in migrate(settings().database_url):
        log.info("applied migration %s", name)
    if settings().bus != "local":
        raise SystemExit(f"the local host needs MARKR_BUS=local (it is {settings().bus!r})")


def _banner(base_url: str, functions: list[str], extra: str = "") -> None:
    print(f"\nMarkr local host: {base_url}{extra}\n", flush=True)
    for line in functions:
        print(f"    {line}", flush=True)
    root = base_url.split("/", 3)[:3]
    print(f"\nDashboard: {'/'.join(root)}/", flush=True)
    print("\nCtrl-C to stop.", flush=True)


def _write_ready(path: Path | None, info: dict) -> None:
    if path:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(path)


def _serve(args: argparse.Namespace, stop: threading.Event, worker: bool = False) -> int:
    import shared.bootstrap
    from devhost.host import LocalFunctionHost
    from devhost.queuesfile import load_queues
    from shared.bus.local import LocalQueueEngine
    from shared.config import settings

    shared.bootstrap.reset()
    url = settings().database_url
    app = load_app(args.app)
    engine = LocalQueueEngine(url, load_queues(args.queues) if args.queues else None)
    options = {}
    if worker:
        import socket

        from devhost.accounting import InvocationCounts
        from devhost.discovery import discover

        options = {
            "listen_socket": socket.socket(fileno=args.listen_fd),
            "counts": InvocationCounts((f.name for f in discover(app)), args.counts_fd, args.worker_slot),
            "run_timers": args.worker_slot == 0,
        }
    host = LocalFunctionHost(app, engine, port=args.port, max_concurrent_calls=args.max_concurrent_calls,
                             max_auto_lock_renewal=args.max_auto_lock_renewal,
                             max_message_batch_size=args.max_message_batch_size, **options)
    host.start()
    if not worker:
        _banner(host.base_url, host.describe())
    _write_ready(args.ready_file, {"base_url": host.base_url, "port": host.port, "pid": os.getpid(),
                                   "workers": [os.getpid()], "functions": host.describe(), **host.manifest()})
    stop.wait()
    log.info("shutting down (grace %.0f s)", args.grace)
    host.stop(args.grace)
    engine.close()
    shared.bootstrap.reset()
    return 0


def _supervise(args: argparse.Namespace, stop: threading.Event) -> int:
    from devhost.hostjson import load_host_config
    from devhost.workers import Supervisor

    supervisor = Supervisor(args.workers, _worker_args(args), port=args.port, grace=args.grace)
    try:
        info = supervisor.start()
    except BaseException:
        stop.set()
        supervisor.stop()
        raise
    prefix = load_host_config().route_prefix
    base_url = f"http://127.0.0.1:{supervisor.port}" + (f"/{prefix}" if prefix else "")

    def publish() -> None:
        _write_ready(args.ready_file, {**info, "base_url": base_url, "port": supervisor.port,
                                       "pid": os.getpid(), "workers": supervisor.pids()})

    _banner(base_url, info["functions"], f"  ({args.workers} workers)")
    publish()
    supervisor.supervise(stop, on_change=publish)
    log.info("shutting down %d workers (grace %.0f s)", args.workers, args.grace)
    return 0 if supervisor.stop() else 1


if __name__ == "__main__":
    sys.exit(main())
