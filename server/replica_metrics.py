"""ReplicaMetrics: the Prometheus collector /metrics serves with several engine replicas.

Every replica's registry has the same metric families; exposed one after the other they would
repeat each family (a format error) and each series (indistinguishable). Here each family appears
once, holding every replica's samples, each sample labelled ``engine="<index>"`` (vLLM's label)
unless its engine labels itself already; and the router's per-replica counts are added, so that
the balance between replicas can be watched. With one replica the server exposes that engine's
registry as it is, and this collector is not used."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from loomlm.server.router import REASONS, ReplicaRouter

PREFIX = "loomlm:"
ENGINE_LABEL = "engine"


class ReplicaMetrics:
    """A collector (pass it to ``generate_latest``) over ``registries[i]``, replica ``i``'s."""

    def __init__(self, registries: Sequence[Any], router: ReplicaRouter | None = None) -> None:
        self._registries = list(registries)
        self._router = router

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}  # in order of first appearance
        for index, registry in enumerate(self._registries):
            if registry is None:
                continue
            for family in registry.collect():
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                target.samples.extend(_labelled(sample, str(index)) for sample in family.samples)
        yield from merged.values()
        if self._router is not None:
            yield from self._router_families(self._router)

    @staticmethod
    def _router_families(router: ReplicaRouter) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            PREFIX + "router_requests_in_flight",
            "Requests the data-parallel router has sent to a replica and not seen end yet.",
            labels=[ENGINE_LABEL],
        )
        routed = CounterMetricFamily(
            PREFIX + "router_requests_routed",
            "Requests routed to a replica, by why that replica: adapter (affinity), prefix (locality), "
            "least_loaded, balance (affinity overridden to spread load), round_robin.",
            labels=[ENGINE_LABEL, "reason"],
        )
        for replica in range(router.num_replicas):
            engine = str(replica)
            in_flight.add_metric([engine], router.in_flight[replica])
            reasons = router.reasons(replica)
            for reason in REASONS:
                routed.add_metric([engine, reason], reasons[reason])
        yield in_flight
        yield routed


def _labelled(sample: Sample, engine: str) -> Sample:
    if ENGINE_LABEL in sample.labels:
        return sample
    labels: dict[str, str] = {}
    for name, value in sample.labels.items():
        labels[name] = value
        if name == "model_name":  # engine next to model_name, as EngineMetrics(engine=...) has it
            labels[ENGINE_LABEL] = engine
    labels.setdefault(ENGINE_LABEL, engine)
    return sample._replace(labels=labels)
