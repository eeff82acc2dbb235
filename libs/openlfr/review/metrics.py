"""Per-deployment alert figures for Prometheus: how many alerts, how many were wrong.

A custom collector reads the review store's tallies at each scrape, so the figures are the
store's own (exact, the same after a restart, untouched by retention purges) and nothing has to
be counted twice. The only label is ``deployment`` (an authorised deployment is a bounded set);
``(none)`` stands for alerts without a deployment id.

* ``openlfr_deployment_alerts_total{deployment}``: alerts received.
* ``openlfr_deployment_adjudications_total{deployment,outcome}``: final outcomes,
  ``confirmed`` or ``rejected``.
* ``openlfr_deployment_alerts_unadjudicated{deployment,stage}``: alerts waiting for their
  ``first`` or ``second`` review.
* ``openlfr_deployment_alert_precision{deployment}``: confirmed / (confirmed + rejected); no
  sample while nothing is adjudicated. One minus it is the share of adjudicated alerts that
  were wrong.
* ``openlfr_review_stream_events_dropped_total``, ``openlfr_review_stream_subscribers``: the
  live stream's losses to slow subscribers, and its open streams.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from openlfr.review.events import EventHub
from openlfr.review.store import ReviewStore

logger = logging.getLogger(__name__)


class ReviewCollector(Collector):
    """Reads the figures from the store (and the hub, if given) at each scrape."""

    def __init__(self, store: ReviewStore, hub: EventHub | None = None) -> None:
        self.store = store
        self.hub = hub

    def _families(self) -> tuple[CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily(
                "openlfr_deployment_alerts", "Alerts received, per deployment.", labels=["deployment"]
            ),
            CounterMetricFamily(
                "openlfr_deployment_adjudications",
                "Final review outcomes per deployment: confirmed (two reviewers) or rejected.",
                labels=["deployment", "outcome"],
            ),
            GaugeMetricFamily(
                "openlfr_deployment_alerts_unadjudicated",
                "Alerts waiting for their first or second review, per deployment.",
                labels=["deployment", "stage"],
            ),
            GaugeMetricFamily(
                "openlfr_deployment_alert_precision",
                "Confirmed / (confirmed + rejected) per deployment; absent while nothing is adjudicated.",
                labels=["deployment"],
            ),
        )

    def _hub_families(self) -> tuple[CounterMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily(
                "openlfr_review_stream_events_dropped",
                "Live-stream events lost because a subscriber fell behind (oldest first).",
            ),
            GaugeMetricFamily("openlfr_review_stream_subscribers", "Live streams open now."),
        )

    def describe(self) -> Iterator[Metric]:
        """The families, without reading the store (so registering does not touch it)."""
        yield from self._families()
        if self.hub is not None:
            yield from self._hub_families()

    def collect(self) -> Iterator[Metric]:
        """The figures now."""
        alerts, adjudications, unadjudicated, precision = self._families()
        for t in self.store.all_tallies():
            alerts.add_metric([t.deployment_id], t.alerts)
            adjudications.add_metric([t.deployment_id, "confirmed"], t.confirmed)
            adjudications.add_metric([t.deployment_id, "rejected"], t.rejected)
            unadjudicated.add_metric([t.deployment_id, "first"], t.pending)
            unadjudicated.add_metric([t.deployment_id, "second"], t.awaiting_second)
            if t.precision is not None:
                precision.add_metric([t.deployment_id], t.precision)
        yield from (alerts, adjudications, unadjudicated, precision)
        if self.hub is not None:
            dropped, subscribers = self._hub_families()
            dropped.add_metric([], self.hub.dropped_total)
            subscribers.add_metric([], len(self.hub))
            yield from (dropped, subscribers)


def register_review_metrics(
    store: ReviewStore, hub: EventHub | None = None, *, registry: CollectorRegistry | None = REGISTRY
) -> ReviewCollector:
    """Register the review figures in ``registry`` (the default one unless told); returns
    the collector (``registry.unregister(collector)`` removes it).

    Raises:
        ValueError: the registry already has these metric names.
    """
    collector = ReviewCollector(store, hub)
    if registry is not None:
        registry.register(collector)
    return collector
