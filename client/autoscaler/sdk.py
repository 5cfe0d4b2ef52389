"""`kastor.autoscaler.sdk.request_resources`, as Ray's `ray.autoscaler.sdk.request_resources`.

It asks the autoscaler (the operator, on Kubernetes) to size the cluster so that it can hold
the given resources at once, whatever runs now: it does not reserve anything, it is a floor
for the cluster's capacity. Each call replaces the previous one; `request_resources()` with
nothing (or `num_cpus=0`, `bundles=[]`) withdraws it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kastor.runtime import submission
from kastor.session import current_core


def request_resources(num_cpus: int | None = None,
                      bundles: Sequence[Mapping[str, float]] | None = None) -> None:
    """Asks for capacity for `num_cpus` one-CPU bundles plus `bundles` (e.g. [{"GPU": 1}] * 4).

    As in Ray, the request stands until the next call replaces it, and it counts the
    cluster's total resources, not its free ones: request_resources(num_cpus=8) on a cluster
    with 8 CPUs adds no node even while all 8 are busy.
    """
    if num_cpus is not None and (not isinstance(num_cpus, int) or isinstance(num_cpus, bool) or num_cpus < 0):
        raise TypeError(f"request_resources: num_cpus must be an int >= 0, got {num_cpus!r}")
    shapes: list[dict[str, float]] = [{"CPU": 1.0}] * (num_cpus or 0)
    for i, bundle in enumerate(bundles or ()):
        if not isinstance(bundle, Mapping):
            raise TypeError(f"request_resources: bundles[{i}] must be a dict of resource amounts such as "
                            f"{{'CPU': 2, 'GPU': 1}}, got {bundle!r}")
        for name, amount in bundle.items():
            if not isinstance(name, str) or isinstance(amount, bool) or not isinstance(amount, (int, float)) \
                    or amount < 0:
                raise TypeError(f"request_resources: bundles[{i}] must map resource names to amounts >= 0, "
                                f"got {name!r}: {amount!r}")
        shapes.append({name: float(amount) for name, amount in bundle.items()})
    submission.request_resources(current_core(), shapes)
