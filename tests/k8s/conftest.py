"""The emulated Kubernetes (API server, kubelet harness, a real operator process) that each
end-to-end module gets for itself."""

from __future__ import annotations

import pytest

from .cluster import EmulatedCluster
from .controlplane_fixture import real_k8s  # noqa: F401 - the session's real control plane


@pytest.fixture(scope="module")
def k8s(tmp_path_factory):
    cluster = EmulatedCluster(tmp_path_factory.mktemp("k8s")).start()
    try:
        cluster.start_operator()
        yield cluster
    finally:
        cluster.stop()
