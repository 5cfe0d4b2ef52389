"""Two operator replicas are an active/standby pair (issue 12 defect 5). kopf pauses every
replica that shares the highest peering priority, so with the chart's fixed priority,
`replicaCount: 2` reconciled nothing; `--priority auto` gives each process its own."""

from __future__ import annotations

import pytest

from .cluster import EmulatedCluster
from .test_operator_e2e import actor_cr, create, patch_spec, status


@pytest.fixture
def replicas(tmp_path_factory):
    cluster = EmulatedCluster(tmp_path_factory.mktemp("replicas")).start()
    logs = [cluster.workdir / "operator-a.log", cluster.workdir / "operator-b.log"]
    try:
        procs = [cluster.start_operator(priority="auto", log=log) for log in logs]
        yield cluster, procs, logs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        cluster.stop()


def test_two_replicas_with_auto_priorities_are_an_active_standby_pair(replicas):
    k8s, procs, logs = replicas
    for proc in procs:
        k8s.wait_for_operator(proc)

    def peers() -> int:
        body = k8s.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", "kastor-operator")
        return len(body.get("status") or {})

    def reconciled(generation: int) -> bool:
        got = status(k8s, "detachedactors", "paired")
        return got.get("observedGeneration") == generation and got.get("state") == "Pending"

    def acted(i: int) -> bool:  # kopf logs a handler's run on kastor.operator's loggers
        return "kastor.operator" in logs[i].read_text(errors="replace")

    k8s.wait(lambda: peers() == 2, "both replicas registered in the peering object")
    create(k8s, "detachedactors", actor_cr("paired", "not-created"))
    k8s.wait(lambda: reconciled(1), "reconciled by one of the two replicas (equal priorities: by none)")
    leader = 0 if acted(0) else 1
    standby = 1 - leader
    assert acted(leader) and not acted(standby), "exactly one replica acts"

    procs[leader].terminate()
    procs[leader].wait(30)
    k8s.wait(lambda: "Resuming operations" in logs[standby].read_text(errors="replace"),
             "the standby takes over once the leader is gone", timeout=180)
    patch_spec(k8s, "detachedactors", "paired", {"args": [7]})
    k8s.wait(lambda: reconciled(2), "the former standby reconciles")


def test_priority_auto_gives_each_process_its_own():
    from kastor.operator.__main__ import build_parser

    drawn = {build_parser().parse_args(["--priority", "auto"]).priority for _ in range(20)}
    assert len(drawn) == 20 and all(1 <= p < 2**31 for p in drawn)
    assert build_parser().parse_args(["--priority", "7"]).priority == 7
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--priority", "high"])
