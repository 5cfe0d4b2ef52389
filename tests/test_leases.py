"""Task leases are returned on every path, and `kastor status` shows who holds what.

A CLI-started head with a 2-CPU node (as `kastor start --head` runs it), drivers in their own
processes that shut down with tasks in flight, and a lease owner that vanishes between the
grant and its first call. Every test waits for the condition it asserts, with a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import grpc
import pytest
from kastor.runtime import auth
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from support import DEADLINE_S, cli_head, wait_until

TOKEN = "test-token-" + os.urandom(8).hex()

# The reproduction: actors, then ten tasks still running when the driver shuts down.
SHUTDOWN_MID_FLIGHT = """
import time, kastor
kastor.init()

@kastor.remote
class A:
    def ping(self):
        return 1

@kastor.remote
def f():
    time.sleep(600)

actors = [A.remote() for _ in range(3)]
kastor.get([a.ping.remote() for a in actors])
refs = [f.remote() for _ in range(10)]
time.sleep(0.3)
kastor.shutdown()
print("shut down")
"""

STILL_WORKS = """
import kastor
kastor.init()

@kastor.remote
def g(x):
    return x + 1

@kastor.remote
class B:
    def ping(self):
        return "pong"

print(kastor.get([g.remote(i) for i in range(4)], timeout=60), kastor.get(B.remote().ping.remote(), timeout=60))
"""


@pytest.fixture
def head(tmp_path):
    # A short reclaim grace keeps the unused-lease test quick; the shutdown test does not rely on it.
    with cli_head(tmp_path, TOKEN, "--client-port", "-1", KASTOR_LEASE_RECLAIM_GRACE_S="1") as h:
        yield h


def _driver(head: dict, code: str) -> str:
    env = dict(head["env"], KASTOR_ADDRESS=head["head"])
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _status(head: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "status", "--json", "--address", head["head"]],
                         env=head["env"], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def _node(head: dict) -> dict:
    return _status(head)["nodes"][0]


def _all_cpus_free(head: dict) -> bool:
    node = _node(head)
    return node["available"].get("CPU") == node["total"]["CPU"] == 2


def test_shutdown_with_tasks_in_flight_returns_every_cpu(head):
    """Three drivers shut down with tasks running; the CPUs come back each time (the issue's 2/2 -> 0/2)."""
    for run in range(3):
        assert "shut down" in _driver(head, SHUTDOWN_MID_FLIGHT)
        wait_until(lambda: _all_cpus_free(head), f"both CPUs free again after driver {run + 1} shut down")
    assert _driver(head, STILL_WORKS).split() == ["[1,", "2,", "3,", "4]", "pong"]


def test_lease_granted_to_an_owner_that_never_uses_it_is_reclaimed(head):
    """An owner that dies between the grant and its first call (or a lost WorkerIdle) loses nothing:
    the node asks the worker, finds it idle, and takes the lease back."""
    node_address = _node(head)["address"]
    with grpc.insecure_channel(node_address) as channel:
        reply = pb_grpc.NodeAgentStub(channel).RequestLease(
            pb.LeaseRequest(required={"CPU": 2}, job_id=b"\0\0\0\x63", owner_address="127.0.0.1:1"),
            metadata=auth.metadata(TOKEN), timeout=DEADLINE_S)
    assert reply.granted
    wait_until(lambda: _all_cpus_free(head), "the unused lease's 2 CPUs returned to the node")


HOLDS_AND_WAITS = """
import sys, time, kastor
kastor.init()

@kastor.remote
def busy():
    time.sleep(600)

@kastor.remote(num_gpus=1)
def needs_a_gpu():
    return 1

@kastor.remote(num_cpus=0, resources={"TPU": 1})
class Small:
    def ping(self):
        return 1

@kastor.remote(resources={"TPU": 8})
class Big:
    def ping(self):
        return 1

small = Small.remote()
kastor.get(small.ping.remote())
running = busy.remote()
waiting = needs_a_gpu.remote()
big = Big.remote()
print("submitted", flush=True)
sys.stdin.read()  # the test closes stdin when it has seen what it checks
"""


def test_status_shows_every_resource_its_holders_and_infeasible_work(tmp_path):
    with cli_head(tmp_path, TOKEN, "--client-port", "-1", "--resources", '{"TPU": 4}') as head:
        env = dict(head["env"], KASTOR_ADDRESS=head["head"])
        driver = subprocess.Popen([sys.executable, "-c", HOLDS_AND_WAITS], env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert driver.stdout.readline().strip() == "submitted", driver.stderr.read()

            def holders_and_demands_shown() -> bool:
                status = _status(head)
                node = status["nodes"][0]
                kinds = {(x["kind"], tuple(sorted(x["resources"].items()))) for x in node["leases"]}
                shapes = {(d["kind"], tuple(sorted(d["shape"].items()))) for d in status["infeasible"]}
                return (("task", (("CPU", 1.0),)) in kinds and ("actor", (("TPU", 1.0),)) in kinds
                        and node["used"] == {"CPU": 1.0, "TPU": 1.0}
                        and ("task", (("CPU", 1.0), ("GPU", 1.0))) in shapes
                        and ("actor", (("CPU", 1.0), ("TPU", 8.0))) in shapes)

            wait_until(holders_and_demands_shown, "the task lease, the TPU actor and both infeasible demands in status")
            lease = [x for x in _node(head)["leases"] if x["kind"] == "task"][0]
            assert lease["owner"] and lease["job"] >= 1 and lease["pid"] > 0
            text = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "status", "--address", head["head"]],
                                  env=head["env"], capture_output=True, text=True, timeout=60, check=True).stdout
            assert "used: CPU 1/2, TPU 1/4" in text, text
            assert f"task lease of {lease['owner']}" in text and "holds {TPU: 1}" in text, text
            assert "infeasible" in text and "{CPU: 1, GPU: 1}: tasks of job" in text, text
            assert "{CPU: 1, TPU: 8}: actor Big" in text, text
            listed = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "list", "nodes", "--address",
                                     head["head"]], env=head["env"], capture_output=True, text=True, timeout=60,
                                    check=True).stdout
            assert "CPU 1/2, TPU 1/4" in listed, listed
        finally:
            _, err = driver.communicate("", timeout=120)
        # The driver was told, once each, as Ray tells it.
        assert err.count("the task needs_a_gpu is infeasible") == 1, err
        assert "requires {CPU: 1, GPU: 1}" in err, err
        assert err.count("the actor Big is infeasible") == 1 and "requires {CPU: 1, TPU: 8}" in err, err


NESTED_THEN_KILLED = """
import time, kastor
kastor.init()

@kastor.remote
def inner():
    time.sleep(600)

@kastor.remote
def outer():
    ref = inner.remote()  # owned by outer's worker, not by the driver
    time.sleep(600)
    return ref

ref = outer.remote()
print("submitted", flush=True)
time.sleep(600)
"""


def test_a_killed_drivers_tasks_and_their_nested_tasks_end_and_free_their_cpus(head):
    """Ray's ownership: the driver dies, so the worker running its task does, and with that worker
    dies the owner of the nested task, whose worker exits too. Both CPUs come back."""
    env = dict(head["env"], KASTOR_ADDRESS=head["head"])
    driver = subprocess.Popen([sys.executable, "-c", NESTED_THEN_KILLED], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "submitted", driver.stderr.read()
        wait_until(lambda: len([x for x in _node(head)["leases"] if x["kind"] == "task"]) == 2,
                   "outer and its nested inner task both holding a CPU")
        owners = {x["owner"] for x in _node(head)["leases"]}
        assert len(owners) == 2, owners  # the driver owns outer's lease, outer's worker owns inner's
    finally:
        driver.kill()
        driver.communicate(timeout=60)
    wait_until(lambda: _all_cpus_free(head) and not _node(head)["leases"], "both CPUs free after the driver was killed")
