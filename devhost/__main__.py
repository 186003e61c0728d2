"""`python -m devhost`: run the function app locally, as `func start` would, on the local stack.

Loads local.settings.json, starts PostgreSQL and Azurite unless settings point elsewhere, applies
migrations, then serves HTTP on 127.0.0.1:<port>/api and runs queue and timer triggers until
Ctrl-C / SIGTERM (running handlers get a grace period; exit code 0).
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
    parser.add_argument("--queues", type=Path, help="queue definitions file (infra/queues.json format)")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds running handlers get at shutdown")
    parser.add_argument("--max-concurrent-calls", type=int,
                        help="per queue; default host.json extensions.serviceBus.maxConcurrentCalls")
    parser.add_argument("--max-auto-lock-renewal", type=float,
                        help="seconds (0 disables); default host.json maxAutoLockRenewalDuration")
    parser.add_argument("--ready-file", type=Path, help="write {base_url, pid, functions} here once serving")
    return parser.parse_args(argv)


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
    logs.configure()

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C: give up waiting; locks run out, nothing is lost
            log.warning("second %s: exiting without waiting", signal.Signals(signum).name)
            os._exit(1)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    from devhost.localstack import LocalStack

    stack = LocalStack(use_stack=not args.no_stack)
    try:
        stack.start()
        return _serve(args, stop)
    finally:
        stack.stop()


def _serve(args: argparse.Namespace, stop: threading.Event) -> int:
    import shared.bootstrap
    from devhost.host import LocalFunctionHost
    from devhost.queuesfile import load_queues
    from shared.bus.local_engine import LocalQueueEngine
    from shared.config import settings
    from shared.db.migrations import migrate

    shared.bootstrap.reset()
    url = settings().database_url
    for name in migrate(url):
        log.info("applied migration %s", name)
    if settings().bus != "local":
        raise SystemExit(f"the local host needs MARKR_BUS=local (it is {settings().bus!r})")
    app = load_app(args.app)
    engine = LocalQueueEngine(url, load_queues(args.queues) if args.queues else None)
    host = LocalFunctionHost(app, engine, port=args.port, max_concurrent_calls=args.max_concurrent_calls,
                             max_auto_lock_renewal=args.max_auto_lock_renewal)
    host.start()
    print(f"\nMarkr local host: {host.base_url}\n", flush=True)
    for line in host.describe():
        print(f"    {line}", flush=True)
    print("\nCtrl-C to stop.", flush=True)
    if args.ready_file:
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"base_url": host.base_url, "port": host.port, "pid": os.getpid(),
                                   "functions": host.describe(), **host.manifest()}))
        tmp.replace(args.ready_file)
    stop.wait()
    log.info("shutting down (grace %.0f s)", args.grace)
    host.stop(args.grace)
    engine.close()
    shared.bootstrap.reset()
    return 0


if __name__ == "__main__":
    sys.exit(main())
