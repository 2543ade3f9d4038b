"""The waiting queue: FCFS order, priority order, putting requests back in front, O(1) abort."""

import pytest

from loomlm.engine.request import Request
from loomlm.engine.request_queue import FCFSQueue, PriorityQueue, make_request_queue
from loomlm.engine.sampling_params import SamplingParams


def req(request_id: str, priority: int = 0, index: int = 0) -> Request:
    return Request(request_id, [1, 2], SamplingParams(), priority=priority, arrival_index=index)


def drain(queue) -> list[str]:
    out = []
    while queue:
        out.append(queue.pop().request_id)
    return out


def test_fcfs_serves_in_arrival_order_and_prepend_keeps_order():
    queue = FCFSQueue()
    for name in "abcd":
        queue.add(req(name))
    first, second = queue.pop(), queue.pop()
    queue.prepend([first, second])  # skipped requests go back in front, in their order
    assert [r.request_id for r in queue] == ["a", "b", "c", "d"]
    assert drain(queue) == ["a", "b", "c", "d"]


def test_priority_serves_lowest_value_first_then_arrival():
    queue = PriorityQueue()
    requests = [req("low", 5, 0), req("high", 0, 1), req("mid", 2, 2), req("high2", 0, 3)]
    for r in requests:
        queue.add(r)
    assert queue.peek().request_id == "high"
    assert [r.request_id for r in queue] == ["high", "high2", "mid", "low"]
    assert drain(queue) == ["high", "high2", "mid", "low"]


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_removal_is_immediate_in_size_and_iteration_and_skipped_on_pop(policy):
    queue = make_request_queue(policy)
    a, b, c = req("a", 1, 0), req("b", 1, 1), req("c", 1, 2)
    for r in (a, b, c):
        queue.add(r)
    queue.remove(a)  # at the front
    queue.remove(c)  # at the back
    assert len(queue) == 1 and [r.request_id for r in queue] == ["b"]
    assert queue.peek() is b and queue.pop() is b
    assert len(queue) == 0 and not queue
    with pytest.raises(IndexError):
        queue.peek()


def test_unknown_policy_is_refused_with_guidance():
    with pytest.raises(ValueError, match="'fcfs' or 'priority'"):
        make_request_queue("lifo")
