"""A driver on a host with no node of the cluster (a driver in an ordinary pod).

The cluster's head and node run at 127.0.0.2, as another pod would; the drivers here join
with `kastor.init(address=...)` from 127.0.0.1, where no node agent runs, so they have no
node store to write to. Their values over 100 KiB must still reach the actors and come back,
generator items must reach them, and the address they advertise must be the one they are
told to use (KASTOR_NODE_IP, as a pod's Downward API sets it) and are listening on. In
network namespaces of its own (a head "pod" and a driver "pod" on a bridge, as
tests/k8s/podnet.py makes them), a driver that sets nothing advertises the address it
reaches the head from, its pod IP, not 127.0.0.1. On a real control plane the same
driver is tested by
tests/k8s/test_real_user_flow.py::test_a_driver_pod_passes_objects_over_100_kib_both_ways_and_uses_a_generator.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import grpc
import pytest
from kastor.runtime import launcher
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc

TOKEN = "test-token-" + os.urandom(8).hex()
CLUSTER_IP = "127.0.0.2"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`kastor start --head` with its node at 127.0.0.2: no node runs at this host's 127.0.0.1."""
    port = launcher.free_port(CLUSTER_IP)
    env = dict(os.environ, KASTOR_TOKEN=TOKEN, KASTOR_SESSION_ROOT=str(tmp_path_factory.mktemp("sessions")))
    env.pop("KASTOR_NODE_IP", None)  # the drivers' too: one test sets it, the others find their address
    with started_head(CLUSTER_IP, port, env) as address:
        yield {"address": address, "env": env}


@contextlib.contextmanager
def started_head(ip: str, port: int, env: dict[str, str], *prefix: str) -> Iterator[str]:
    """`kastor start --head --block` with its node at `ip` (`prefix`: e.g. `ip netns exec <ns>`)."""
    env = dict(env)
    for name in ("KASTOR_ADDRESS", "KASTOR_NODE_IP"):
        env.pop(name, None)
    head = subprocess.Popen([*prefix, sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--block",
                             "--port", str(port), "--num-cpus", "2", "--node-ip", ip, "--client-port", "-1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = head.stdout.readline()
        assert "started" in line, line + head.stdout.read()
        yield f"{ip}:{port}"
    finally:
        head.terminate()
        head.wait(30)


DRIVER = """
    import json, os, sys
    import kastor
    from kastor.runtime import context

    kastor.init()

    @kastor.remote
    class Echo:
        def echo(self, value):
            return value
        def blob(self, n):
            return b"x" * n
        def owner_of(self, refs):
            return refs[0].owner_address
        def count(self, n):
            for i in range(n):
                yield i * 10

    echo = Echo.remote()
    assert len(kastor.get(echo.blob.remote(300 * 1024))) == 300 * 1024  # over 100 KiB, actor to driver
    blob = os.urandom(200 * 1024)
    assert kastor.get(echo.echo.remote(blob)) == blob  # over 100 KiB, driver to actor (an argument) and back
    ref = kastor.put(blob)
    assert kastor.get(echo.echo.remote(ref)) == blob  # a put, fetched by the actor from the driver's store
    gen = [kastor.get(r) for r in echo.count.options(num_returns="streaming").remote(4)]
    print(json.dumps({"advertised": context.core.address, "seen_by_actor": kastor.get(echo.owner_of.remote([ref])),
                      "gen": gen, "store_dir": context.core.store_dir}), flush=True)
    sys.stdin.readline()  # stay up while the test calls this driver's port
"""


def run_driver(cluster, *prefix: str, **env_extra: str):
    """The driver as a process of its own (`prefix`: e.g. `ip netns exec <ns>`); its report, once its work is done."""
    env = dict(cluster["env"], KASTOR_ADDRESS=cluster["address"], **env_extra)
    proc = subprocess.Popen([*prefix, sys.executable, "-c", textwrap.dedent(DRIVER)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # the driver's own kastor.get calls have deadlines: this returns
    if not line:
        proc.wait(60)
        pytest.fail(f"the driver failed ({proc.returncode}):\n{proc.stderr.read()[-4000:]}")
    return proc, json.loads(line)


def finish(proc) -> None:
    proc.stdin.close()
    assert proc.wait(60) == 0, proc.stderr.read()[-4000:]


def test_a_driver_without_a_node_passes_objects_over_100_kib_both_ways_and_gets_generator_items(cluster):
    proc, seen = run_driver(cluster)
    try:
        assert seen["gen"] == [0, 10, 20, 30]
        # The head is reached from 127.0.0.1 here: that is the interface the driver listens on.
        assert seen["advertised"].startswith("127.0.0.1:") and seen["seen_by_actor"] == seen["advertised"]
    finally:
        finish(proc)
    assert not os.path.exists(seen["store_dir"]), "the driver's own store folder outlived it"


def test_a_driver_advertises_and_listens_on_kastor_node_ip(cluster):
    proc, seen = run_driver(cluster, KASTOR_NODE_IP="127.0.0.9")
    try:
        assert seen["advertised"].startswith("127.0.0.9:"), seen
        assert seen["seen_by_actor"] == seen["advertised"], seen
        assert seen["gen"] == [0, 10, 20, 30]
    finally:
        finish(proc)


def test_the_driver_store_port_checks_the_token_and_serves_only_its_store(cluster):
    proc, seen = run_driver(cluster)
    try:
        with grpc.insecure_channel(seen["advertised"]) as channel:
            stub = pb_grpc.NodeAgentStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.FetchObject(pb.FetchObjectRequest(path="/etc/passwd"), timeout=30))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as outside:
                list(stub.FetchObject(pb.FetchObjectRequest(path=os.path.join(seen["store_dir"], "..", "x")),
                                      metadata=(("kastor-token", TOKEN),), timeout=30))
            assert outside.value.code() == grpc.StatusCode.NOT_FOUND
            assert "driver's store" in outside.value.details()
            with pytest.raises(grpc.RpcError) as not_a_node:
                stub.KillWorker(pb.KillWorkerRequest(reason="test"), metadata=(("kastor-token", TOKEN),), timeout=30)
            assert not_a_node.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        finish(proc)


def netns_problem() -> str | None:
    """None if this machine lets the test make network namespaces (as the k8s harness does)."""
    if os.geteuid() != 0:
        return "network namespaces, veth pairs and a bridge need root"
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"`ip netns list` failed: {done.stderr.strip()}"


@pytest.fixture
def pod_network():
    """Two-pod room: a bridge and pod namespaces on 10.244.<n>.0/24, n claimed by an flock
    (tests/k8s/isolation.py), so concurrent runs never share a name or an address."""
    from k8s.isolation import AddressBlock
    from k8s.podnet import PodNetwork

    block = AddressBlock()
    network = PodNetwork(block.number)
    try:
        yield network.create()
    finally:
        network.destroy()
        block.release()


@pytest.mark.skipif(netns_problem() is not None, reason=f"{netns_problem()}")
def test_a_driver_in_a_pod_of_its_own_advertises_its_pod_ip(pod_network, tmp_path):
    head_netns, head_ip = pod_network.add_pod("head", "default")
    driver_netns, driver_ip = pod_network.add_pod("driver", "default")
    env = dict(os.environ, KASTOR_TOKEN=TOKEN, KASTOR_SESSION_ROOT=str(tmp_path))
    # Each pod has its own ports: the head's default port is free in its namespace.
    with started_head(head_ip, 6380, env, "ip", "netns", "exec", head_netns) as address:
        env.pop("KASTOR_NODE_IP", None)
        proc, seen = run_driver({"address": address, "env": env}, "ip", "netns", "exec", driver_netns)
        try:
            assert seen["advertised"].startswith(f"{driver_ip}:"), seen
            assert seen["seen_by_actor"] == seen["advertised"] and seen["gen"] == [0, 10, 20, 30], seen
        finally:
            finish(proc)
