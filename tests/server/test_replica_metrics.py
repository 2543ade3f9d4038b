"""Several engines' metrics in one exposition: ``EngineMetrics(engine=...)`` puts a constant ``engine``
label on every series (none without it: one engine's output is unchanged), and ``ReplicaMetrics``
merges registries family by family, labelling the samples of engines that do not label themselves,
into text that Prometheus' parser reads with every family once."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loomlm.engine.metrics import EngineMetrics
from loomlm.server.replica_metrics import ReplicaMetrics
from loomlm.server.router import ReplicaRouter


def families(registry) -> dict:
    text = generate_latest(registry).decode()
    parsed = list(text_string_to_metric_families(text))
    names = [family.name for family in parsed]
    assert len(names) == len(set(names)), "no family may appear twice"
    return {family.name: family for family in parsed}


def test_an_engine_label_goes_on_every_series():
    labelled = families(EngineMetrics("tiny", 512, engine="3").registry)
    samples = [s for family in labelled.values() for s in family.samples]
    assert samples and all(s.labels["engine"] == "3" and s.labels["model_name"] == "tiny" for s in samples)
    plain = families(EngineMetrics("tiny", 512).registry)
    assert all("engine" not in s.labels for family in plain.values() for s in family.samples)
    assert labelled.keys() == plain.keys()


def test_replica_registries_merge_into_one_exposition_with_an_engine_label_each():
    engines = [EngineMetrics("tiny", 512), EngineMetrics("tiny", 512), EngineMetrics("tiny", 512, engine="7")]
    router = ReplicaRouter(3)
    router.acquire()
    merged = families(ReplicaMetrics([m.registry for m in engines], router))
    single = families(engines[0].registry)
    assert single.keys() <= merged.keys()
    for name in single:
        values = {s.labels["engine"] for s in merged[name].samples}
        assert values == {"0", "1", "7"}, name  # an engine labelled by itself keeps its label
        assert len(merged[name].samples) == 3 * len(single[name].samples)
    in_flight = {s.labels["engine"]: s.value for s in merged["loomlm:router_requests_in_flight"].samples}
    assert in_flight == {"0": 1.0, "1": 0.0, "2": 0.0}
    routed = merged["loomlm:router_requests_routed"].samples
    assert sum(s.value for s in routed if s.name.endswith("_total")) == 1


def test_a_replica_without_a_registry_is_skipped():
    merged = families(ReplicaMetrics([None, EngineMetrics("tiny", 512).registry]))
    assert {s.labels["engine"] for s in merged["loomlm:prompt_tokens"].samples} == {"1"}


def test_an_empty_engine_label_is_refused():
    with pytest.raises(ValueError, match="engine must be a non-empty string"):
        EngineMetrics("tiny", 512, engine="")
