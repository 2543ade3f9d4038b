"""The load-time timing probes: interleaved rounds call every candidate once a round after a
warm-up each, and report each candidate's median time relative to the first candidate's in the
same round, in order (a fake clock: no real timing)."""

from loomlm.engine import probe
from loomlm.engine.probe import median_ratios_interleaved


def test_interleaved_rounds_call_each_candidate_in_turn(monkeypatch):
    calls = []
    clock = [0.0]
    monkeypatch.setattr(probe.time, "perf_counter", lambda: clock[0])

    def candidate(name):
        def run():
            calls.append(name)
            clock[0] += 1.0

        return run

    ratios = median_ratios_interleaved([candidate("a"), candidate("b")], repeats=3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then 3 timed rounds
    assert ratios == [1.0, 1.0]


def test_a_slow_stretch_cancels_within_its_round(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(probe.time, "perf_counter", lambda: clock[0])
    # Warm-up first. The machine runs 3x slower for rounds 2 and 3: separate medians would read
    # "fast" at 6 against "slow" at 9 (1.5x); each round says 2x.
    costs = {"slow": iter([9.0, 2.0, 6.0, 6.0]), "fast": iter([9.0, 1.0, 3.0, 3.0])}

    def candidate(name):
        def run():
            clock[0] += next(costs[name])

        return run

    assert median_ratios_interleaved([candidate("slow"), candidate("fast")], repeats=3) == [1.0, 0.5]
