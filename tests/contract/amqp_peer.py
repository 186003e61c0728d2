"""A minimal AMQP 1.0 peer (python-qpid-proton) standing in for a Service Bus namespace.

It listens on loopback without TLS, accepts SASL ANONYMOUS, answers CBS put-token requests on the
`$cbs` node with 202, accepts every transfer to any other node and records what arrived. Batched
transfers (message format 0x80013700: one data section per embedded message) are unpacked; proton
does not expose a delivery's message format, so a batch is recognised by its embedded messages.
"""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

from proton import Data, Delivery, Described, Message, ulong
from proton.handlers import MessagingHandler
from proton.reactor import Container

_DATA = ulong(0x75)


@dataclass
class Received:
    address: str
    message: Message


@dataclass
class PeerLog:
    tokens: list[Message] = field(default_factory=list)  # CBS put-token requests
    attached_targets: list[str] = field(default_factory=list)  # sender links the client opened
    messages: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the peer's own failures, checked on exit


def _sections(raw: bytes) -> list[Described]:
    sections, pos = [], 0
    while pos < len(raw):
        data = Data()
        used = data.decode(raw[pos:])
        if used <= 0:
            raise ValueError(f"undecodable AMQP section at byte {pos}")
        pos += used
        data.rewind()
        data.next()
        section = data.get_object()
        if isinstance(section, Described) and isinstance(section.value, memoryview):
            # The view points into `data`'s buffer, which is freed with it: copy now.
            section = Described(section.descriptor, bytes(section.value))
        sections.append(section)
    return sections


def unpack(raw: bytes) -> list[Message]:
    """One transfer's payload as messages: a batch's data sections each hold an encoded message."""
    sections = _sections(raw)
    data = [s for s in sections if isinstance(s, Described) and s.descriptor == _DATA]
    if data and all(bytes(s.value).startswith(b"\x00S") for s in data):
        return [_decode(section.value) for section in data]
    return [_decode(raw)]


def _decode(raw: bytes) -> Message:
    message = Message()
    message.decode(raw)
    if isinstance(message.body, memoryview):
        message.body = bytes(message.body)
    return message


class _Handler(MessagingHandler):
    def __init__(self, port: int, log: PeerLog, stop: threading.Event, ready: threading.Event) -> None:
        super().__init__(prefetch=100, auto_accept=False)
        self.port, self.log, self.stop, self.ready = port, log, stop, ready
        self.cbs_reply = None

    def on_start(self, event) -> None:
        event.container.listen(f"127.0.0.1:{self.port}")
        event.container.schedule(0.05, self)
        self.ready.set()

    def on_timer_task(self, event) -> None:
        if self.stop.is_set():
            event.container.stop()
        else:
            event.container.schedule(0.05, self)

    def on_link_opening(self, event) -> None:
        link = event.link
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        if link.is_sender and link.remote_source.address == "$cbs":
            self.cbs_reply = link
        elif link.is_receiver and link.remote_target.address != "$cbs":
            self.log.attached_targets.append(link.remote_target.address or "")

    def on_delivery(self, event) -> None:
        delivery, link = event.delivery, event.link
        if not link.is_receiver or not delivery.readable or delivery.partial:
            return
        raw = link.recv(delivery.pending)
        link.advance()
        try:
            messages = unpack(raw)
        except Exception as exc:  # noqa: BLE001 - reported by AmqpPeer.__exit__, the sender sees a reject
            self.log.errors.append(f"cannot decode transfer on {link.remote_target.address}: {exc!r}")
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            return
        if link.remote_target.address == "$cbs":
            for request in messages:
                self.log.tokens.append(request)
                reply = Message(
                    correlation_id=request.id, address=request.reply_to,
                    properties={"status-code": 202, "status-description": "Accepted"},
                )
                self.cbs_reply.send(reply)
        else:
            self.log.messages.extend(Received(link.remote_target.address or "", m) for m in messages)
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AmqpPeer:
    """Run the peer on a background thread: `with AmqpPeer() as peer: ... peer.log`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.log = PeerLog()
        self._stop, self._ready = threading.Event(), threading.Event()
        self._container = Container(_Handler(self.port, self.log, self._stop, self._ready))
        self._thread = threading.Thread(target=self._container.run, name="amqp-peer", daemon=True)

    @property
    def connection_string(self) -> str:
        # UseDevelopmentEmulator=true makes the SDK speak plain AMQP and keep the port (as for the emulator).
        return (f"Endpoint=sb://127.0.0.1:{self.port}/;SharedAccessKeyName=RootManageSharedAccessKey;"
                "SharedAccessKey=contract-test-key;UseDevelopmentEmulator=true")

    def __enter__(self) -> AmqpPeer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("AMQP peer did not start listening within 10 s")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("AMQP peer did not stop within 10 s")
        if self.log.errors:
            raise AssertionError(f"AMQP peer failed: {self.log.errors}")
