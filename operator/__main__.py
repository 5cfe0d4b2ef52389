"""`python -m kastor.operator`: run the operator (kopf) with Kastor's defaults.

Peering (kopf's leader election) is on unless --standalone: of two replicas with the
same peering name, the one with the lower priority pauses. kopf pauses *every* replica when
two share the highest priority, so `--priority auto` (the chart's default) gives each process
a random one of its own: `replicaCount: 2` is then an active/standby pair, the standby taking
over once the leader's peering entry lapses. A liveness endpoint serves /healthz for the
Deployment's liveness and readiness probes, and `--metrics-port` serves Prometheus metrics
(`operator/metrics.py`) for the chart's metrics Service and ServiceMonitor.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys

import kopf
from kastor.runtime import logging_setup


def priority(value: str) -> int:
    """An integer, or 'auto': random in [1, 2**31), so replicas of one Deployment differ."""
    if value == "auto":
        return 1 + secrets.randbelow(2**31 - 1)
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--priority takes an integer or 'auto', got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kastor.operator", description="Kastor Kubernetes operator")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (cluster-wide)")
    p.add_argument("--peering", default="kastor-operator", help="peering object shared by replicas")
    p.add_argument("--standalone", action="store_true", help="no peering: this is the only replica")
    p.add_argument("--priority", type=priority, default=0,
                   help="of replicas that peer, the highest priority runs; 'auto': a random one for this process "
                        "(replicas that share one would all pause)")
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL ('' for none)")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="serve Prometheus metrics on this port at /metrics (0: none)")
    p.add_argument("--metrics-address", default="0.0.0.0", help="the address the metrics port listens on")
    p.add_argument("--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # kopf logs every successful handler call at INFO, on kopf.objects
    logging_setup.configure(None, verbose=args.verbose, quiet=["kopf.objects"])
    from kastor.operator import handlers  # noqa: F401  (registers the handlers)
    if args.metrics_port:
        from kastor.operator import metrics
        metrics.serve(args.metrics_port, args.metrics_address)
    clusterwide = args.all_namespaces or not args.namespace
    asyncio.run(kopf.operator(
        clusterwide=clusterwide, namespaces=args.namespace, standalone=args.standalone, priority=args.priority,
        peering_name=None if args.standalone else args.peering, liveness_endpoint=args.liveness or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
