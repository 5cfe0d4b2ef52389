"""The session's real control plane (`controlplane_fixture.real_k8s`) for every Kubernetes
test module; each module builds its own nodes and pod network on it (`real_cluster.py`)."""

from __future__ import annotations

from .controlplane_fixture import real_k8s  # noqa: F401 - the session's real control plane
