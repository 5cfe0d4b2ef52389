"""Two emulated clusters at once, as two test runs on one machine: each has its own pod and
Service addresses, its processes resolve its own Service names, and the machine's
/etc/hosts is left alone (isolation.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .cluster import NEEDS_PRIVATE_HOSTS, EmulatedCluster

pytestmark = NEEDS_PRIVATE_HOSTS


def resolve(cluster: EmulatedCluster, name: str) -> str | None:
    """What `name` resolves to for a process of the cluster (None if it does not)."""
    program = f"import socket; print(socket.gethostbyname({name!r}))"
    done = subprocess.run(cluster.command([sys.executable, "-c", program]), capture_output=True, text=True, timeout=60)
    return done.stdout.strip() if done.returncode == 0 else None


def test_two_runs_at_once_keep_their_addresses_and_names_apart(tmp_path):
    machine_hosts = Path("/etc/hosts").read_text()
    clusters: list[EmulatedCluster] = []
    try:
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            clusters.append(EmulatedCluster(tmp_path / name).start())
        service = {"metadata": {"name": "demo-head"},
                   "spec": {"selector": {"app": "head"}, "ports": [{"name": "gcs", "port": 6380}]}}
        ips = [c.core.create_namespaced_service("default", service).spec.cluster_ip for c in clusters]
        assert ips[0] != ips[1], ips
        for cluster, ip in zip(clusters, ips, strict=True):
            cluster.wait(lambda c=cluster, ip=ip: resolve(c, "demo-head.default.svc") == ip,
                         f"demo-head.default.svc resolving to {ip} in its own run")
        assert Path("/etc/hosts").read_text() == machine_hosts
    finally:
        for cluster in reversed(clusters):
            cluster.stop()
