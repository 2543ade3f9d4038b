"""The load-time timing probes: interleaved rounds call every candidate once a round after a
warm-up each, and report one median per candidate, in order."""

from loomlm.engine.probe import median_seconds_interleaved


def test_interleaved_rounds_call_each_candidate_in_turn():
    calls = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b")]
    times = median_seconds_interleaved(fns, repeats=3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then 3 timed rounds
    assert len(times) == 2 and all(t >= 0 for t in times)


def test_a_slower_candidate_has_the_larger_median():
    def spin(n):
        return lambda: sum(range(n))

    fast, slow = median_seconds_interleaved([spin(1_000), spin(200_000)], repeats=5)
    assert slow > fast
