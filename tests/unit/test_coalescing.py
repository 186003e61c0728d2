"""The generic group runner: each caller gets its own item's result or error."""
from __future__ import annotations

import threading

import pytest

from shared.coalescing import Coalescer


def test_each_caller_gets_its_own_result_from_a_shared_group():
    entered, release, groups = threading.Event(), threading.Event(), []

    def run(key, items):
        groups.append(list(items))
        if len(groups) == 1:
            entered.set()
            assert release.wait(10)
        return [f"{key}:{i * 10}" for i in items]

    coalescer: Coalescer[str, int, str] = Coalescer(run)
    results: dict[int, str] = {}

    def call(i):
        results[i] = coalescer.submit("k", i)

    first = threading.Thread(target=call, args=(1,))
    first.start()
    assert entered.wait(10)
    rest = [threading.Thread(target=call, args=(i,)) for i in (2, 3, 4)]
    for t in rest:
        t.start()
    for _ in range(1000):
        if coalescer.waiting("k") == 3:
            break
        threading.Event().wait(0.005)
    release.set()
    for t in [first, *rest]:
        t.join(10)
    assert groups[0] == [1] and sorted(groups[1]) == [2, 3, 4] and len(groups) == 2
    assert results == {1: "k:10", 2: "k:20", 3: "k:30", 4: "k:40"}
    assert coalescer.idle


def test_a_failing_group_is_run_item_by_item_and_only_the_bad_item_fails():
    def run(key, items):
        if 13 in items:
            raise ValueError("unlucky")
        return [i + 1 for i in items]

    coalescer: Coalescer[str, int, int] = Coalescer(run)
    # a group of several is reached by calling _run directly with pending items, as a leader would
    from shared.coalescing import _Pending

    group = [_Pending(1), _Pending(13), _Pending(5)]
    coalescer._run("k", group)
    assert [p.result for p in group] == [2, None, 6]
    assert isinstance(group[1].error, ValueError) and group[0].error is None
    with pytest.raises(ValueError):
        coalescer.submit("k", 13)
    assert coalescer.submit("k", 7) == 8 and coalescer.idle


def test_a_group_answering_the_wrong_number_of_results_fails_its_callers():
    coalescer: Coalescer[str, int, int] = Coalescer(lambda key, items: [])
    with pytest.raises(ValueError):
        coalescer.submit("k", 1)
    assert coalescer.idle


def test_a_leader_waits_for_announced_items_and_takes_them_in_its_group():
    groups = []
    coalescer: Coalescer[str, str, str] = Coalescer(lambda key, items: groups.append(list(items)) or list(items),
                                                    max_linger=30)
    on_its_way = coalescer.expecting("k")
    announcement = on_its_way.__enter__()  # a request still being vaulted
    leader = threading.Thread(target=coalescer.submit, args=("k", "first"))
    leader.start()
    leader.join(0.2)
    assert leader.is_alive() and groups == []  # lingering for the announced item

    def arrive():
        coalescer.submit("k", "second", announced=announcement)
        on_its_way.__exit__(None, None, None)  # leaving the block after submitting changes nothing

    late = threading.Thread(target=arrive)
    late.start()
    for t in (leader, late):
        t.join(10)
    assert groups == [["first", "second"]] and coalescer.idle


def test_nobody_waits_when_nothing_is_announced_or_an_announcement_is_withdrawn():
    groups = []
    coalescer: Coalescer[str, str, str] = Coalescer(lambda key, items: groups.append(list(items)) or list(items),
                                                    max_linger=30)
    done = threading.Thread(target=coalescer.submit, args=("k", "alone"))
    done.start()
    done.join(10)
    assert not done.is_alive() and groups == [["alone"]]
    with coalescer.expecting("k"):
        waiting = threading.Thread(target=coalescer.submit, args=("k", "next"))
        waiting.start()
        waiting.join(0.2)
        assert waiting.is_alive()  # lingering for the announced item ...
    waiting.join(10)  # ... which was withdrawn (a vault write failed, say): the group goes without it
    assert not waiting.is_alive() and groups == [["alone"], ["next"]] and coalescer.idle
