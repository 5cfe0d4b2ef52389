"""Two harness runs at once on one machine (other checkouts, other helpers): each `RealCluster`
claims its own loopback block, so one Service gets a different host-side address in each, its
processes resolve the Service's name to their own run's address, and the machine's /etc/hosts
is left alone (isolation.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .real_cluster import RealCluster, netns_problem

pytestmark = pytest.mark.skipif(netns_problem() is not None, reason=f"{netns_problem()}")
NS = "isolation"


def resolve(cluster: RealCluster, name: str) -> str | None:
    """What `name` resolves to for a host process of the run (None if it does not)."""
    program = f"import socket; print(socket.gethostbyname({name!r}))"
    done = subprocess.run(cluster.command([sys.executable, "-c", program]), capture_output=True, text=True, timeout=60)
    return done.stdout.strip() if done.returncode == 0 else None


def test_two_runs_at_once_keep_their_addresses_and_names_apart(real_k8s, tmp_path):
    machine_hosts = Path("/etc/hosts").read_text()
    clusters: list[RealCluster] = []
    try:
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            clusters.append(RealCluster(real_k8s, tmp_path / name, nodes=()).start())
        clusters[0].make_namespace(NS)
        service = {"metadata": {"name": "demo-head"},
                   "spec": {"selector": {"app": "head"}, "ports": [{"name": "gcs", "port": 6380}]}}
        clusters[0].core.create_namespaced_service(NS, service)
        ips = [c.wait(lambda c=c: c.service_host_address("demo-head", NS), "the Service's host-side address")
               for c in clusters]
        assert ips[0] != ips[1], ips
        for cluster, ip in zip(clusters, ips, strict=True):
            cluster.wait(lambda c=cluster, ip=ip: resolve(c, f"demo-head.{NS}.svc") == ip,
                         f"demo-head.{NS}.svc resolving to {ip} in its own run")
        assert Path("/etc/hosts").read_text() == machine_hosts
    finally:
        for cluster in reversed(clusters):
            cluster.stop()
