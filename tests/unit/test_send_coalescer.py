"""Concurrent single sends share one statement; each sender still gets its own answer."""
from __future__ import annotations

import threading

import pytest

from shared.bus.local.coalesce import SendCoalescer
from shared.bus.port import OutgoingMessage


def message(mid: str) -> OutgoingMessage:
    return OutgoingMessage(body=b"{}", message_id=mid)


class SlowSend:
    """send_many that holds its first statement until released, recording every statement."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.refuse = refuse or set()

    def __call__(self, queue: str, messages: list[OutgoingMessage]) -> None:
        ids = [m.message_id for m in messages]
        self.calls.append((queue, ids))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10)
        if self.refuse.intersection(ids):
            raise ValueError(f"refused {sorted(self.refuse.intersection(ids))}")


def start_senders(coalescer: SendCoalescer, ids: list[str], errors: dict) -> list[threading.Thread]:
    def run(mid: str) -> None:
        try:
            coalescer.send("q", message(mid))
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            errors[mid] = exc

    threads = [threading.Thread(target=run, args=(mid,)) for mid in ids]
    for t in threads:
        t.start()
    return threads


def wait_queued(coalescer: SendCoalescer, n: int) -> None:
    for _ in range(1000):
        if coalescer.waiting("q") >= n:
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"{n} senders never queued")


def test_an_idle_send_goes_at_once_alone():
    sent = []
    coalescer = SendCoalescer(lambda q, ms: sent.append((q, [m.message_id for m in ms])))
    coalescer.send("q", message("a"))
    coalescer.send("q", message("b"))
    assert sent == [("q", ["a"]), ("q", ["b"])]


def test_senders_arriving_during_a_send_share_the_next_statement():
    send, errors = SlowSend(), {}
    coalescer = SendCoalescer(send)
    first = start_senders(coalescer, ["a"], errors)
    assert send.entered.wait(10)
    rest = start_senders(coalescer, ["b", "c", "d", "e"], errors)
    wait_queued(coalescer, 4)  # the four waiting while a is in flight
    send.release.set()
    for t in first + rest:
        t.join(10)
    assert send.calls[0] == ("q", ["a"])
    assert [sorted(ids) for _, ids in send.calls[1:]] == [["b", "c", "d", "e"]]
    assert errors == {} and coalescer.idle


def test_a_refused_message_fails_only_its_own_sender():
    send, errors = SlowSend(refuse={"c"}), {}
    coalescer = SendCoalescer(send)
    first = start_senders(coalescer, ["a"], errors)
    assert send.entered.wait(10)
    rest = start_senders(coalescer, ["b", "c", "d"], errors)
    wait_queued(coalescer, 3)
    send.release.set()
    for t in first + rest:
        t.join(10)
    assert list(errors) == ["c"] and "refused ['c']" in str(errors["c"])
    # the group failed, then each of its messages went on its own
    assert sorted(ids[0] for _, ids in send.calls[2:]) == ["b", "c", "d"]


def test_a_lone_failing_send_raises_without_a_second_attempt():
    calls = []

    def broken(queue, messages):
        calls.append(messages)
        raise ConnectionError("database down")

    coalescer = SendCoalescer(broken)
    with pytest.raises(ConnectionError):
        coalescer.send("q", message("a"))
    assert len(calls) == 1 and coalescer.idle
