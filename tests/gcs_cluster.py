"""A multi-process cluster whose head keeps its state in a real Redis, for fault-injection tests.

The head and each node agent are separate processes the test can SIGKILL and start again,
exactly as pods would be; the test process itself is the driver.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import kastor
from kastor.runtime import launcher
from redis_server import RedisServer

TOKEN = "gcs-test-token-" + os.urandom(8).hex()

# Failure detection tuned for tests; the defaults are for real clusters.
FAST_FAILOVER = {
    "KASTOR_NODE_DEATH_TIMEOUT_S": "3",
    "KASTOR_NODE_RECONNECT_GRACE_S": "3",
    "KASTOR_RECONCILE_GRACE_S": "1",
    "KASTOR_JOB_RECONNECT_GRACE_S": "4",
}


class GcsCluster:
    def __init__(self, tmp: Path, redis: RedisServer, cluster_id: str = "ft"):
        self.tmp = tmp
        self.redis = redis
        self.cluster_id = cluster_id
        self.port = launcher.free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = dict(os.environ, KASTOR_TOKEN=TOKEN, KASTOR_SESSION_ROOT=str(tmp / "sessions"), **FAST_FAILOVER)
        self.env.pop("KASTOR_ADDRESS", None)
        self.head: launcher.Child | None = None
        self.nodes: dict[str, launcher.Child] = {}
        (tmp / "logs").mkdir(exist_ok=True)

    def start_head(self) -> None:
        self.head = launcher.Child(
            "kastor.runtime.head",
            ["--port", str(self.port), "--cluster-id", self.cluster_id, "--redis-address", self.redis.address],
            self.env, str(self.tmp / "logs" / "head.log"))
        self.head.wait_ready()

    def kill_head(self) -> None:
        sigkill(self.head)

    def add_node(self, node_id: str, num_cpus: float = 2, resources: dict | None = None,
                 head_address: str | None = None, labels: dict[str, str] | None = None) -> None:
        """Starts a node agent; `head_address` lets it reach the head another way (a TcpProxy)."""
        session = self.tmp / f"session-{node_id}"
        (session / "logs").mkdir(parents=True, exist_ok=True)
        args = ["--address", head_address or self.address, "--node-id", node_id, "--num-cpus", str(num_cpus),
                "--session-dir", str(session)]
        if resources:
            args += ["--resources", json.dumps(resources)]
        if labels:
            args += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
        child = launcher.Child("kastor.runtime.node_agent", args, self.env, str(self.tmp / "logs" / f"{node_id}.log"))
        child.wait_ready()
        self.nodes[node_id] = child

    def kill_node(self, node_id: str) -> None:
        """SIGKILL the agent; its workers see their stdin close and exit with it."""
        sigkill(self.nodes.pop(node_id))

    def stop(self) -> None:
        for child in [*self.nodes.values(), self.head]:
            if child is not None:
                child.stop()


def sigkill(child: launcher.Child) -> None:
    os.kill(child.proc.pid, signal.SIGKILL)
    child.proc.wait(10)


@contextmanager
def driven_cluster(tmp: Path, redis: RedisServer, monkeypatch, nodes: tuple[str, ...] = ("n1",),
                   env: dict[str, str] | None = None) -> Iterator[GcsCluster]:
    """A Redis-backed head plus `nodes`, with this test process connected as their driver.

    The fixture body the fault-injection suites share: the driver takes the cluster's token from
    the environment, as a pod would from its Secret. `env` overrides the head's and the nodes'
    settings (FAST_FAILOVER's, say).
    """
    monkeypatch.setenv("KASTOR_TOKEN", TOKEN)
    c = GcsCluster(tmp, redis)
    c.env.update(env or {})
    c.start_head()
    for node_id in nodes:
        c.add_node(node_id)
    kastor.init(address=c.address)
    try:
        yield c
    finally:
        kastor.shutdown()
        c.stop()


@contextmanager
def own_redis_cluster(tmp: Path, nodes: set[str]) -> Iterator[GcsCluster]:
    """A Redis of its own, a head on it and `nodes`, with this process as the driver: for
    module-scoped fixtures, which cannot use the function-scoped `redis_server`."""
    redis = RedisServer(tmp / "redis-data")
    redis.data_dir.mkdir()
    redis.start()
    c = GcsCluster(tmp, redis)
    try:
        c.start_head()
        for node_id in sorted(nodes):
            c.add_node(node_id)
        kastor.init(address=c.address, token=TOKEN)
        yield c
    finally:
        kastor.shutdown()
        c.stop()
        redis.stop()
