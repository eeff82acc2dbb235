"""The registry's figures for Prometheus, read at scrape time from the registry itself.

* ``openlfr_registry_withheld_lookups_total{deployment}``: frames whose gate answer was withheld
  from an active deployment (its watchlists wait for re-embedding), since start. Every such
  frame was not matched: a deployment an operator thinks is running is not.
* ``openlfr_registry_deployments_withheld``: active deployments the gate withholds now.
* ``openlfr_registry_subjects_to_reembed``: subjects with references of another embedder than
  the running one (``POST /v1/reembed`` moves them).

The alert rule ``OpenLFRDeploymentWithheld`` (deploy/prometheus/rules) fires on the first two.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from openlfr.registry.core import RegistryCore


class RegistryCollector(Collector):
    """Reads the registry's gate and re-embedding state at each scrape."""

    def __init__(self, registry: RegistryCore) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        registry = self._registry
        lookups = CounterMetricFamily(
            "openlfr_registry_withheld_lookups",
            "Frames whose deployment was withheld from matching (its watchlists wait for re-embedding), "
            "per deployment, since start: none of them was matched.",
            labels=["deployment"],
        )
        with registry._activity_lock:
            counts = dict(registry.withheld_lookups)
        for deployment_id, n in sorted(counts.items()):
            lookups.add_metric([deployment_id], float(n))
        yield lookups
        yield GaugeMetricFamily(
            "openlfr_registry_deployments_withheld",
            "Active deployments the gate withholds from matching now (watchlists waiting for re-embedding).",
            value=float(len(registry._withheld)),
        )
        pending = registry._pending_reembedding()
        yield GaugeMetricFamily(
            "openlfr_registry_subjects_to_reembed",
            "Subjects with references of another embedder than the running one (POST /v1/reembed moves them).",
            value=float(sum(pending.values())),
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read at scrape time; no names reserved ahead


def register_registry_metrics(
    registry: RegistryCore, *, collectors: CollectorRegistry | None = REGISTRY
) -> RegistryCollector:
    """Register the registry's figures in ``collectors`` (the default registry unless told);
    returns the collector (``collectors.unregister(collector)`` removes it)."""
    collector = RegistryCollector(registry)
    if collectors is not None:
        collectors.register(collector)
    return collector
