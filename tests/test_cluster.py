"""A cluster started with the CLI, as a pod would run it, and drivers that come and go.

Covers `kastor start --head --block`, a second node joining with `kastor start --address`,
`kastor status` / `kastor list`, detached actors outliving their driver while non-detached
ones die with it, and the cluster token being required on every port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import grpc
import pytest
from kastor.runtime import launcher
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc

TOKEN = "test-token-" + os.urandom(8).hex()


def _env(tmp_root) -> dict[str, str]:
    env = dict(os.environ)
    env["KASTOR_SESSION_ROOT"] = str(tmp_root)
    env.pop("KASTOR_ADDRESS", None)
    return env


def _kastor(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kastor.runtime.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=check)


def _wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    env = _env(root)
    port = launcher.free_port()
    head = subprocess.Popen([sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--block",
                             "--port", str(port), "--client-port", "0", "--num-cpus", "2", "--token", TOKEN],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    address = f"127.0.0.1:{port}"
    line = head.stdout.readline()
    assert "started" in line, line
    yield {"address": address, "env": env, "proc": head}
    head.terminate()
    head.wait(30)


def _driver(cluster, code: str) -> str:
    env = dict(cluster["env"], KASTOR_TOKEN=TOKEN, KASTOR_ADDRESS=cluster["address"])
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _actors(cluster) -> list[dict]:
    out = _kastor("list", "actors", "--json", "--address", cluster["address"], "--token", TOKEN, env=cluster["env"])
    return json.loads(out.stdout)


COUNTER = """
import kastor
kastor.init(namespace="shop")
@kastor.remote
class Counter:
    def __init__(self):
        self.n = 0
    def inc(self):
        self.n += 1
        return self.n
"""


def test_detached_actor_outlives_driver_and_non_detached_dies(cluster):
    _driver(cluster, COUNTER + """
keeper = Counter.options(name="keeper", lifetime="detached").remote()
temp = Counter.options(name="temp").remote()
assert kastor.get([keeper.inc.remote(), temp.inc.remote()]) == [1, 1]
""")
    out = _driver(cluster, COUNTER + """
keeper = kastor.get_actor("keeper")
print(kastor.get(keeper.inc.remote()))
try:
    kastor.get_actor("temp")
    print("temp alive")
except ValueError:
    print("temp gone")
""")
    assert out.split() == ["2", "temp", "gone"]
    rows = {r["name"]: r for r in _actors(cluster)}
    assert rows["keeper"]["state"] == "ALIVE" and rows["keeper"]["detached"]
    assert rows["temp"]["state"] == "DEAD" and "driver exited" in rows["temp"]["death_cause"]


def test_status_and_second_node_joins(cluster):
    node = subprocess.Popen([sys.executable, "-m", "kastor.runtime.cli", "start", "--block", "--address",
                             cluster["address"], "--num-cpus", "1", "--resources", '{"special": 1}',
                             "--token", TOKEN], env=cluster["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert "started" in node.stdout.readline()
        status = json.loads(_kastor("status", "--json", "--address", cluster["address"], "--token", TOKEN,
                                    env=cluster["env"]).stdout)
        assert len([n for n in status["nodes"] if n["alive"]]) == 2
        # A task that needs the custom resource can only run on the new node (spillback).
        out = _driver(cluster, """
import kastor
kastor.init()
@kastor.remote(resources={"special": 1})
def where():
    return kastor.get_runtime_context().get_node_id()
print(kastor.get(where.remote(), timeout=60))
""")
        special = [n for n in status["nodes"] if "special" in n["total"]][0]
        assert out.strip() == special["node_id"]
    finally:
        node.terminate()
        node.wait(30)


def _call(address: str, service: str, method: str, token: str | None, payload: bytes = b"\x00garbage"):
    channel = grpc.insecure_channel(address)
    try:
        fn = channel.unary_unary(f"/kastor.{service}/{method}", request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)
        metadata = (("kastor-token", token),) if token is not None else None
        return fn(payload, metadata=metadata, timeout=10)
    finally:
        channel.close()


def test_every_port_requires_the_token(cluster):
    _driver(cluster, COUNTER + """
Counter.options(name="guard", lifetime="detached").remote()
kastor.get(kastor.get_actor("guard").inc.remote())
""")
    guard = next(r for r in _actors(cluster) if r["name"] == "guard")
    head = pb_grpc.HeadStub(grpc.insecure_channel(cluster["address"]))
    nodes = head.ListNodes(pb.ListRequest(), metadata=(("kastor-token", TOKEN),), timeout=10).nodes
    actors = head.ListActors(pb.ListRequest(), metadata=(("kastor-token", TOKEN),), timeout=10).actors
    worker_address = next(a.address for a in actors if a.spec.name == "guard")
    ports = [(cluster["address"], "Head", "ListActors"), (nodes[0].address, "NodeAgent", "FreeObjects"),
             (worker_address, "CoreWorker", "GetObjects")]
    for address, service, method in ports:
        for token in (None, "wrong-token"):
            with pytest.raises(grpc.RpcError) as info:
                _call(address, service, method, token)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, (service, token)
    # The actor still serves after the rejected calls.
    assert guard["state"] == "ALIVE"
    out = _driver(cluster, COUNTER + "print(kastor.get(kastor.get_actor('guard').inc.remote()))")
    assert out.strip() == "2"


def test_driver_with_wrong_token_is_refused(cluster):
    env = dict(cluster["env"], KASTOR_TOKEN="not-the-token", KASTOR_ADDRESS=cluster["address"])
    out = subprocess.run([sys.executable, "-c", "import kastor; kastor.init()"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert "rejected the token" in out.stderr


def test_kill_detached_actor_by_name(cluster):
    _driver(cluster, COUNTER + """
Counter.options(name="doomed", lifetime="detached").remote()
kastor.kill(kastor.get_actor("doomed"))
""")
    _wait_for(lambda: next(r for r in _actors(cluster) if r["name"] == "doomed")["state"] == "DEAD",
              what="the killed actor to be DEAD")
