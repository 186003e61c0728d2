"""LocalFunctionHost: runs any FunctionApp's HTTP, Service Bus queue and timer functions in-process."""
from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import timedelta
from typing import Any

from devhost import logs
from devhost.accounting import InvocationCounts
from devhost.discovery import Function, HttpFunction, QueueFunction, TimerFunction, discover
from devhost.hostjson import HostConfig, load_host_config
from devhost.http_server import FunctionHttpServer
from devhost.servicebus import EngineLink, QueueConsumer
from devhost.timers import TimerRunner

log = logging.getLogger("devhost")


class LocalFunctionHost:
    """Start with .start(), stop with .stop(grace). The engine is needed only for queue triggers."""

    def __init__(self, app: Any, engine: Any = None, *, port: int = 7071, host: str = "127.0.0.1",
                 max_concurrent_calls: int | None = None,
                 max_auto_lock_renewal: timedelta | float | None = None,
                 config: HostConfig | None = None, idle_wait: float = 1.0,
                 max_message_batch_size: int | None = None, listen_socket: socket.socket | None = None,
                 counts: InvocationCounts | None = None, run_timers: bool = True) -> None:
        """`listen_socket`: an already listening socket to serve HTTP on (a worker of `--workers N`);
        `counts`: shared invocation counters (default: this process's own); `run_timers`: False in all
        but one worker, so a schedule fires once per host."""
        self.config = config or load_host_config()
        self.functions: list[Function] = discover(app)
        self.engine = engine
        self._address = (host, port)
        self._listen_socket = listen_socket
        self.counts = counts or InvocationCounts(f.name for f in self.functions)
        renewal = max_auto_lock_renewal if max_auto_lock_renewal is not None else self.config.max_auto_lock_renewal
        if not isinstance(renewal, timedelta):
            renewal = timedelta(seconds=renewal)
        queue_functions = [f for f in self.functions if isinstance(f, QueueFunction)]
        if queue_functions and engine is None:
            raise ValueError("the app has Service Bus triggers; pass a local queue engine")
        concurrency = max_concurrent_calls or self.config.max_concurrent_calls
        batch_size = max_message_batch_size or self.config.max_message_batch_size
        link = EngineLink(engine) if queue_functions else None
        self.consumers = [QueueConsumer(f, link, max_concurrent_calls=concurrency,
                                        max_auto_lock_renewal=renewal, idle_wait=idle_wait,
                                        max_message_batch_size=batch_size, counts=self.counts,
                                        min_message_batch_size=min(self.config.min_message_batch_size, batch_size),
                                        max_batch_wait=self.config.max_batch_wait.total_seconds())
                          for f in queue_functions]
        self.timers = [TimerRunner(f, self.counts) for f in self.functions
                       if isinstance(f, TimerFunction) and run_timers]
        self.http_functions = [f for f in self.functions if isinstance(f, HttpFunction)]
        self._server: FunctionHttpServer | None = None
        self._server_thread: threading.Thread | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the host is not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:<port>/<routePrefix> (no trailing slash)."""
        prefix = f"/{self.config.route_prefix}" if self.config.route_prefix else ""
        return f"http://{self._address[0]}:{self.port}{prefix}"

    def describe(self) -> list[str]:
        lines = []
        for fn in self.functions:
            if isinstance(fn, HttpFunction):
                lines.append(f"{fn.name}: [{','.join(fn.methods)}] {self.base_url}/{fn.route.template}")
            elif isinstance(fn, QueueFunction):
                many = " cardinality=many" if fn.many else ""
                lines.append(f"{fn.name}: serviceBusTrigger queue={fn.queue}{many}")
            else:
                lines.append(f"{fn.name}: timerTrigger schedule='{fn.schedule.text}'")
        return lines

    def manifest(self) -> dict[str, list]:
        """What the host serves, for tools and tests: routes (with methods), queues, schedules."""
        return {
            "http": [{"name": f.name, "route": f.route.template, "methods": list(f.methods)}
                     for f in self.http_functions],
            "queues": [{"name": c.fn.name, "queue": c.fn.queue, **({"cardinality": "many"} if c.fn.many else {})}
                       for c in self.consumers],
            "timers": [{"name": t.fn.name, "schedule": t.fn.schedule.text} for t in self.timers],
        }

    def invocation_counts(self) -> dict[str, int]:
        """{function: invocations so far}, summed over the host's workers (GET /admin/host/invocations)."""
        return self.counts.snapshot()

    def start(self) -> LocalFunctionHost:
        logs.configure()
        self._server = FunctionHttpServer(self._address, self.http_functions, self.config.route_prefix,
                                          counts=self.counts, listen_socket=self._listen_socket)
        self._server_thread = threading.Thread(target=self._server.serve_forever, name="http",
                                               kwargs={"poll_interval": 0.2}, daemon=True)
        self._server_thread.start()
        for consumer in self.consumers:
            consumer.start()
        for timer in self.timers:
            timer.start()
        log.info("host started on %s with %d function(s)", self.base_url, len(self.functions))
        return self

    def stop(self, grace: float = 30.0) -> bool:
        """Stop taking work, let running handlers finish for up to `grace` seconds, then abandon the
        messages of those still running. Returns True when everything finished in time."""
        if self._stopped:
            return True
        self._stopped = True
        deadline = time.monotonic() + grace
        if self._server is not None:
            self._server.draining = True
            self._server.shutdown()
            self._server.server_close()
        for consumer in self.consumers:
            consumer.stop_receiving()
        for timer in self.timers:
            timer.stop()
        for consumer in self.consumers:
            consumer.join_pump(max(0.0, deadline - time.monotonic()))
        clean = True
        if self._server is not None:
            clean &= self._server.in_flight.wait_idle(max(0.0, deadline - time.monotonic()))
        for timer in self.timers:
            clean &= timer.wait_idle(max(0.0, deadline - time.monotonic()))
        for consumer in self.consumers:
            if not consumer.wait_idle(max(0.0, deadline - time.monotonic())):
                count = consumer.abandon_unfinished(f"host shut down before '{consumer.fn.name}' finished")
                log.warning("abandoned %d unfinished message(s) of '%s'", count, consumer.fn.name)
                clean = False
        log.info("host stopped%s", "" if clean else " (some invocations did not finish in time)")
        return clean

    def __enter__(self) -> LocalFunctionHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
