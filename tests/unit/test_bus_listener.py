"""The local queue engine's LISTEN/NOTIFY wake-ups, without a database: who is woken by what."""
import threading
import time

from shared.bus.local import listener as listener_module


class CountingCondition(threading.Condition):
    """Counts the waits of the waiters on it: each return from wait() is one wake-up."""

    def __init__(self, lock=None):
        super().__init__(lock)
        self.waits = 0

    def wait(self, timeout=None):
        self.waits += 1
        return super().wait(timeout)


def test_a_waiter_is_woken_by_its_own_queue_only(monkeypatch):
    # Every consumer of every queue waits on the listener; under load one queue is notified
    # hundreds of times a second, and each notification used to wake every waiter of every queue.
    monkeypatch.setattr(listener_module.threading, "Condition", CountingCondition)
    listener = listener_module.Listener("postgresql://unused", ["work", "other"])
    seen = listener.generation("work")
    waiter = threading.Thread(target=listener.wait, args=("work", seen, 30.0))
    waiter.start()
    time.sleep(0.05)
    for _ in range(50):
        listener._bump(["other"])
        time.sleep(0.002)
    listener._bump(["work"])
    waiter.join(5)
    assert not waiter.is_alive()
    conditions = {id(c): c for c in vars(listener).values() if isinstance(c, CountingCondition)}
    conditions.update({id(c): c for v in vars(listener).values() if isinstance(v, dict)
                       for c in v.values() if isinstance(c, CountingCondition)})
    assert sum(c.waits for c in conditions.values()) == 1  # slept once, woke once, for "work"
    assert listener.generation("other") == 50 and listener.generation("work") == 1
