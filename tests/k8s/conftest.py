"""The emulated Kubernetes (API server, kubelet harness, a real operator process) that each
end-to-end module gets for itself. When a test that uses it fails, its report carries what
the operator and the kubelet logged during the test (the whole logs stay in the test's
temporary directory)."""

from __future__ import annotations

import pytest

from .cluster import EmulatedCluster
from .controlplane_fixture import real_k8s  # noqa: F401 - the session's real control plane


@pytest.fixture(scope="module")
def k8s(tmp_path_factory):
    cluster = EmulatedCluster(tmp_path_factory.mktemp("k8s")).start()
    try:
        cluster.start_operator()
        cluster.wait_for_operator()
        yield cluster
    finally:
        cluster.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    cluster = getattr(item, "funcargs", {}).get("k8s")
    if isinstance(cluster, EmulatedCluster):
        cluster.mark_logs()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    cluster = getattr(item, "funcargs", {}).get("k8s")
    if report.failed and report.when == "call" and isinstance(cluster, EmulatedCluster):
        report.sections.append(("emulated cluster logs", cluster.logs_since_mark()))
    return report
