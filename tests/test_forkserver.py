"""Fast actor start: workers forked from the node agent's pre-imported fork server (issue 16).

Real embedded clusters (head, node agent, fork server, workers as processes); the fork server is
crashed with SIGKILL, never simulated. Where a worker came from is read from the process tree
(its parent's command line) and from the marker a forked worker carries (forkserver.forked_from).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import kastor
import pytest
from support import process_gone, wait_until


@kastor.remote
class Probe:
    def __init__(self):
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    def origin(self) -> dict:
        from kastor.runtime import forkserver
        print("probe says hello", flush=True)
        return {
            "pid": os.getpid(), "ppid": os.getppid(), "forked_from": forkserver.forked_from(),
            "parent_cmdline": _cmdline(os.getppid()),
            "stdout": os.readlink("/proc/self/fd/1"), "stderr": os.readlink("/proc/self/fd/2"),
            "stdin_is_pipe": stat.S_ISFIFO(os.fstat(0).st_mode), "argv0": sys.argv[0], "cwd": os.getcwd(),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "worker_id": os.environ.get("KASTOR_WORKER_ID"),
            "threads": len(os.listdir("/proc/self/task")),
            "imported_since_fork": forkserver.imported_since_fork(),
        }


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def cluster(monkeypatch):
    """An embedded cluster with 2 CPUs and 1 GPU, started after the test set its environment."""
    started = []

    def start(**env: str):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        started.append(kastor.init(num_cpus=2, num_gpus=1))
        return started[-1]

    yield start
    if started:
        kastor.shutdown()


def test_the_fork_server_preloads_the_public_api_its_workers_user_code_imports():
    """The server names no public module (the runtime may not import `kastor`, see
    tests/test_layering.py): importing it imports the package `kastor` first, whose
    __init__ imports the public API, so forked workers share it. Checked in a fresh
    interpreter, as the node agent starts the server."""
    code = "import json, sys; import kastor.runtime.forkserver; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert {"kastor.api", "kastor.actor", "kastor.remote_function", "kastor.runtime.worker", "cloudpickle",
            "grpc.aio"} <= loaded


def test_an_actor_is_forked_from_the_fork_server_and_behaves_as_a_fresh_one(cluster):
    cluster()
    probe = Probe.options(num_gpus=1).remote()
    assert kastor.get([probe.add.remote(2), probe.add.remote(3)]) == [2, 5]
    o = kastor.get(probe.origin.remote())
    assert o["forked_from"] == o["ppid"], o
    assert "kastor.runtime.forkserver" in o["parent_cmdline"], o
    # What a fresh worker has: its own log file on stdout and stderr, the agent's pipe as stdin
    # (the parent-death watch), the worker module as argv[0], its resources' environment.
    assert o["stdout"] == o["stderr"] and f"worker-{o['worker_id'][:12]}.log" in o["stdout"], o
    assert o["stdin_is_pipe"] and o["argv0"].endswith(os.path.join("runtime", "worker.py")), o
    assert o["cuda"] == "0", o
    # Everything the runtime needs was imported before the fork (an import after it is start time
    # every actor pays: uvloop, for the core's loop, was one). The test module's imports follow.
    runtime = ("kastor.runtime", "grpc", "google", "cloudpickle", "uvloop", "asyncio", "concurrent")
    assert [m for m in o["imported_since_fork"] if m.startswith(runtime)] == [], o
    wait_until(lambda: "probe says hello" in open(o["stdout"]).read(), "the actor's output in its log file")
    # The agent knows the worker's pid, and notices its death: a killed actor restarts, again forked.
    restartable = Probe.options(max_restarts=1, max_task_retries=1).remote()
    first = kastor.get(restartable.origin.remote())
    assert first["forked_from"] is not None
    os.kill(first["pid"], signal.SIGKILL)
    wait_until(lambda: process_gone(first["pid"]), "the killed actor's process to go")
    second = kastor.get(restartable.origin.remote(), timeout=60)
    assert second["pid"] != first["pid"] and second["forked_from"] == first["forked_from"], (first, second)


def test_a_crashed_fork_server_is_restarted_then_given_up_for_fresh_starts(cluster):
    cluster(KASTOR_PRESTART_WORKERS="0")  # every actor below gets a new worker
    survivor = Probe.options(max_restarts=1, max_task_retries=1).remote()
    s = kastor.get(survivor.origin.remote())
    servers = [s["forked_from"]]
    assert servers[0] is not None
    os.kill(servers[0], signal.SIGKILL)
    wait_until(lambda: process_gone(servers[0]), "the fork server to die")
    # Its workers live on, and the agent still notices their death (through their pidfds).
    assert kastor.get(survivor.add.remote(7)) == 7
    os.kill(s["pid"], signal.SIGKILL)
    restarted = kastor.get(survivor.origin.remote(), timeout=60)
    assert restarted["pid"] != s["pid"]
    # The next worker comes from a new fork server; one that keeps dying is given up.
    for _ in range(2):
        o = kastor.get(Probe.remote().origin.remote(), timeout=60)
        assert o["forked_from"] not in (None, *servers) and "kastor.runtime.forkserver" in o["parent_cmdline"], o
        servers.append(o["forked_from"])
        os.kill(o["forked_from"], signal.SIGKILL)
        wait_until(lambda: process_gone(servers[-1]), "the fork server to die")
    fresh = kastor.get(Probe.remote().origin.remote(), timeout=60)
    assert fresh["forked_from"] is None and "kastor.runtime.node_agent" in fresh["parent_cmdline"], fresh


def test_the_setting_turns_the_fork_server_off(cluster):
    cluster(KASTOR_FORK_SERVER="0")
    o = kastor.get(Probe.remote().origin.remote())
    assert o["forked_from"] is None and "kastor.runtime.node_agent" in o["parent_cmdline"], o
