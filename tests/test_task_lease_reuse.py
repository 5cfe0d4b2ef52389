"""An owner keeps its task lease while work of that shape keeps coming (Ray's lease reuse).

A loop of `get(f.remote())` leaves its lease idle for a moment between two tasks. The owner
hands a lease back only once it stayed idle for KASTOR_LEASE_LINGER_S since its last task
ended; before that was counted from the idle moment, a timer set by an earlier task released
the lease whenever it fired between two tasks, and the loop asked its node for a new lease (and
often got another worker) every few dozen tasks. The node agent's Stats counters say how many
leases it granted; the tasks' pids say which workers ran them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

DRIVER = """
import json, os, time, kastor
from kastor.runtime import context
from kastor.runtime.protocol import kastor_pb2 as pb

@kastor.remote
def pid():
    return os.getpid()

kastor.init(num_cpus=2)
core = context.core

def lease_requests():
    return core.node_call("Stats", pb.Empty()).rpcs_served.get("RequestLease", 0)

kastor.get(pid.remote())  # the loop's lease
before = lease_requests()
pids, n, started = set(), 0, time.monotonic()
# Four lingers long: on the old code each task's end set a release timer, and the ones set in
# the first three quarters fired while the loop ran, each in an idle moment or not.
while n < 200 or time.monotonic() - started < 4 * float(os.environ["KASTOR_LEASE_LINGER_S"]):
    pids.add(kastor.get(pid.remote(), timeout=60))
    n += 1
print(json.dumps({"tasks": n, "lease_requests": lease_requests() - before, "workers": len(pids)}))
kastor.shutdown()
"""


def test_a_sync_task_loop_keeps_its_lease_and_worker(tmp_path):
    # A linger of 0.5 s: a gap that long between two tasks of the loop would be a stall of the
    # machine, not the behaviour under test.
    env = dict(os.environ, KASTOR_LEASE_LINGER_S="0.5")
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(DRIVER)], env=env, capture_output=True, text=True,
                         timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["lease_requests"] == 0, f"the loop asked for new leases: {seen}"
    assert seen["workers"] == 1, f"the loop's tasks ran on several workers: {seen}"
