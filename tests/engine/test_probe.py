"""The load-time timing probes: interleaved rounds call every candidate once a round after a
warm-up each, and report one median per candidate, in order (a fake clock: no real timing)."""

from loomlm.engine import probe
from loomlm.engine.probe import median_seconds_interleaved


def test_interleaved_rounds_call_each_candidate_in_turn():
    calls = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b")]
    times = median_seconds_interleaved(fns, repeats=3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then 3 timed rounds
    assert len(times) == 2


def test_each_candidate_gets_the_median_of_its_own_rounds(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(probe.time, "perf_counter", lambda: clock[0])
    costs = {"fast": iter([9.0, 1.0, 2.0, 100.0]), "slow": iter([9.0, 5.0, 7.0, 6.0])}  # warm-up first

    def candidate(name):
        def run():
            clock[0] += next(costs[name])

        return run

    fast, slow = median_seconds_interleaved([candidate("fast"), candidate("slow")], repeats=3)
    assert (fast, slow) == (2.0, 6.0)  # an outlier round (100) does not move the median
