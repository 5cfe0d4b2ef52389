"""The operator's Prometheus metrics, served on `--metrics-port` (the chart's metrics Service).

What a cluster admin graphs and alerts on: how many reconciles ran and failed, how long they
took, and every pod the operator created or deleted, by the role of the pod and the reason
(the same reason as the pod's Event). Counted where it happens (`actions.apply`,
`reconcile.run`), served by prometheus_client's own HTTP server on a registry of the
operator's own, so nothing from the rest of the process leaks into it.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter("kastor_operator_reconciles", "Reconciles run, by resource plural and result (ok, error)",
                     ["resource", "result"], registry=REGISTRY)
RECONCILE_SECONDS = Histogram("kastor_operator_reconcile_seconds", "How long one reconcile took, by resource plural",
                              ["resource"], registry=REGISTRY,
                              buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
POD_ACTIONS = Counter("kastor_operator_pod_actions", "Pods the operator created or deleted, by action "
                      "(created, deleted, force_deleted), pod role and reason", ["action", "role", "reason"],
                      registry=REGISTRY)

F = TypeVar("F", bound=Callable[..., Any])


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serves GET /metrics (Prometheus text) on a daemon thread of its own."""
    start_http_server(port, addr=address, registry=REGISTRY)


def pod_action(action: str, role: str, reason: str) -> None:
    POD_ACTIONS.labels(action=action, role=role or "unknown", reason=reason or "Unspecified").inc()


def counted(plural_arg: int) -> Callable[[F], F]:
    """Decorates a reconcile function whose positional argument `plural_arg` is the resource
    plural: counts each call by result and times it (sync or async alike)."""
    def wrap(fn: F) -> F:
        def record(args: tuple[Any, ...], kwargs: dict[str, Any], start: float, result: str) -> None:
            plural = str(kwargs.get("plural", args[plural_arg] if len(args) > plural_arg else "unknown"))
            RECONCILES.labels(resource=plural, result=result).inc()
            RECONCILE_SECONDS.labels(resource=plural).observe(time.monotonic() - start)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                start, result = time.monotonic(), "error"
                try:
                    value = await fn(*args, **kwargs)
                    result = "ok"
                    return value
                finally:
                    record(args, kwargs, start, result)
            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            start, result = time.monotonic(), "error"
            try:
                value = fn(*args, **kwargs)
                result = "ok"
                return value
            finally:
                record(args, kwargs, start, result)
        return run  # type: ignore[return-value]
    return wrap
