"""Where a sync actor call's CPU and wake-ups go, in-cluster and through the client port (issue 16).

    python bench/relay_cost.py [--calls 20000]

Issue 16 asks the client port's sync calls for >= 0.9x the in-cluster rate on one machine. This
shows, per call, the CPU each thread of the tree spends (``/proc/<pid>/task/<tid>/schedstat``,
ns) and how often it went to sleep and was woken (``voluntary_ctxt_switches``): the client
port's frame relay is one more process on the call's path, and its thread sleeps between
messages. One CLI-started cluster with a client port; a measuring driver per path runs
``get(a.f.remote())`` in a loop and reads every thread of the cluster and of itself before and
after. Prints ``<path> <process>:<thread> <µs per call> <sleeps per call>`` for the threads
that did anything, then each path's rate. Python threads other than a process's main one are
named ``python`` by the OS: in the head, the frame relay's loop is one of them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from kastor.runtime import launcher

_MEASURE = """
import os, sys, time, kastor
sys.path.insert(0, {bench!r})
from proctree import descendants
from relay_cost import snapshot

kastor.init({address!r})

@kastor.remote
class A:
    def f(self):
        return 1

a = A.remote()
for _ in range(500):
    kastor.get(a.f.remote())
pids = [os.getpid(), *descendants({cluster})]
before, t = snapshot(pids), time.perf_counter()
for _ in range({calls}):
    kastor.get(a.f.remote())
elapsed, after = time.perf_counter() - t, snapshot(pids)
for key, (ns, sleeps) in sorted(after.items()):
    ns0, sleeps0 = before.get(key, (0, 0))
    us, woken = (ns - ns0) / 1e3 / {calls}, (sleeps - sleeps0) / {calls}
    if us >= 0.5 or woken >= 0.05:
        print(f"{{key}} {{us:.1f}} {{woken:.2f}}")
print(f"rate {{{calls} / elapsed:.0f}}")
"""


def _role(pid: int, threads: int) -> str:
    if pid == os.getpid():
        return "driver"
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            cmd = f.read()
    except OSError:
        return "gone"
    if "kastor.runtime.forkserver" in cmd:  # the server runs one thread; a worker it forked, more
        return "worker" if threads > 1 else "forkserver"
    for role in ("head", "node_agent", "worker", "cli"):
        if f"kastor.runtime.{role}" in cmd:
            return role
    return "other"


def snapshot(pids: list[int]) -> dict[str, tuple[int, int]]:
    """(ns on a CPU, voluntary context switches) per `<process role>:<thread name>`, summed."""
    out: dict[str, tuple[int, int]] = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        threads: dict[str, str] = {}
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    threads[tid] = f.read().strip()
            except OSError:
                continue
        role = _role(pid, len(threads))
        for tid, comm in threads.items():
            base = f"/proc/{pid}/task/{tid}"
            name = "main" if tid == str(pid) else comm.rstrip("0123456789_-")
            try:
                with open(f"{base}/schedstat") as f:
                    ns = int(f.read().split()[0])
                with open(f"{base}/status") as f:
                    sleeps = next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
            except (OSError, StopIteration, ValueError):
                continue
            key = f"{role}:{name}"
            total_ns, total_sleeps = out.get(key, (0, 0))
            out[key] = (total_ns + ns, total_sleeps + sleeps)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    port, client_port = launcher.free_port(), launcher.free_port()
    token = os.urandom(16).hex()
    env = dict(os.environ, KASTOR_TOKEN=token, KASTOR_SESSION_ROOT=tempfile.mkdtemp(prefix="kastor-bench-"))
    cluster = subprocess.Popen([sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--block", "--port",
                                str(port), "--client-port", str(client_port)], env=env, stdout=subprocess.PIPE,
                               text=True)
    bench = os.path.dirname(os.path.abspath(__file__))
    try:
        cluster.stdout.readline()
        for path, address in (("in-cluster", f"127.0.0.1:{port}"), ("client-port", f"kastor://127.0.0.1:{client_port}")):
            code = _MEASURE.format(bench=bench, address=address, cluster=cluster.pid, calls=args.calls)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                                 env=dict(os.environ, KASTOR_TOKEN=token))
            if out.returncode:
                raise RuntimeError(f"the measuring driver for {path} failed:\n{out.stderr[-3000:]}")
            print(f"# {path}: thread, µs of CPU per call, sleeps per call")
            for line in out.stdout.splitlines():
                print(f"{path:12} {line}", flush=True)
    finally:
        cluster.terminate()
        cluster.wait(30)


if __name__ == "__main__":
    main()
