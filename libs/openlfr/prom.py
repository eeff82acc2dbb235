"""One set of Prometheus metrics per registry, made on first use.

Stages and publishers may be built more than once in a process (tests, a restarted runner, the
embedded pipeline beside a service): the second one must reuse the metrics of the first, because
a registry refuses a second collector of the same name. The sets are keyed by the registry object
itself, weakly: keying by ``id(registry)`` handed a new registry the metrics of a collected one
whose id it reused, so its counts went nowhere.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry

T = TypeVar("T")

_SETS: weakref.WeakKeyDictionary[CollectorRegistry, dict[type, Any]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def metrics_for(kind: type[T], registry: CollectorRegistry | None) -> T:
    """The ``kind`` metrics set of ``registry`` (the default registry for None): ``kind(registry)``
    on first use, the same object after."""
    registry = REGISTRY if registry is None else registry
    with _LOCK:
        sets = _SETS.setdefault(registry, {})
        if kind not in sets:
            sets[kind] = kind(registry)
        return sets[kind]
