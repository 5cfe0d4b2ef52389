"""CPU per 100 MiB put+get, per process: the load-independent figure behind
`put_get_100MiB_GiB_per_s` (microbench.py) and the client port's put+get (client_port.py).

    python bench/put_get_cpu.py in-cluster      # this driver, kastor.init() (embedded cluster)
    python bench/put_get_cpu.py ray             # the same loop on Ray (run with Ray's Python)
    python bench/put_get_cpu.py client-port     # a notebook through kastor://, with the CPU of the
                                                # head (its frame relay), the node agent and the notebook
    python bench/put_get_cpu.py MODE --actor    # each put's first use an actor call that reads it
                                                # (a notebook's put is uploaded then: lazy_puts.py)

Wall times on a machine shared with other work swing 1.5-3x from run to run; the CPU a put+get
costs each process does not, so A/B comparisons (e.g. KASTOR_STORE_RECYCLE=0 or
KASTOR_UPLOAD_SPLICE=0 against the defaults) read these. Prints one line: the median wall time,
and the median CPU milliseconds per put+get of each process that spent any.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

ROUNDS = 15
PUT_GET = ("", "out = rt.get(rt.put(big))")
ACTOR_USE = ("""
@rt.remote
class Reader:
    def nbytes(self, arr):
        return arr.nbytes
reader = Reader.remote()
""", "out = big if rt.get(reader.nbytes.remote(rt.put(big))) == big.nbytes else None")
LOOP = f"""
import os, resource, statistics, sys, time
import numpy as np
big = np.ones(100 * 2**20, dtype=np.uint8)
SETUP
for _ in range(3):
    OP
print("READY", flush=True)
sys.stdin.readline()
walls, cpus = [], []
for _ in range({ROUNDS}):
    r = resource.getrusage(resource.RUSAGE_SELF)
    c, t = r.ru_utime + r.ru_stime, time.perf_counter()
    OP
    assert out.nbytes == big.nbytes
    del out
    r = resource.getrusage(resource.RUSAGE_SELF)
    walls.append(time.perf_counter() - t)
    cpus.append(r.ru_utime + r.ru_stime - c)
print("WALL", statistics.median(walls), "CPU", statistics.median(cpus), flush=True)
"""


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []
    return [pid] + [p for c in children for p in _tree(c)]


def _name(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline") as f:
        args = f.read().split("\0")
    return next((a.rsplit(".", 1)[-1] for a in args if a.startswith("kastor.runtime.")), "driver")


def run_driver(init: str, env: dict[str, str], others: list[int], op: tuple[str, str] = PUT_GET) -> str:
    """Runs the loop in a driver process; returns the result line with every process's CPU."""
    code = init + LOOP.replace("SETUP", op[0]).replace("OP", op[1])
    driver = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        line = driver.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"the measuring driver did not start: {line!r}")
        pids = [p for p in others if p != driver.pid] + _tree(driver.pid)  # an embedded cluster is its children
        names = {p: _name(p) for p in pids}
        before = {p: _cpu_s(p) for p in pids}
        driver.stdin.write("go\n")
        driver.stdin.flush()
        _, wall, _, cpu = driver.stdout.readline().split()
        after = {p: _cpu_s(p) for p in pids}
    finally:
        driver.wait(120)
    spent = {names[p]: (after[p] - before[p]) / ROUNDS for p in pids if after[p] - before[p] > 0.005 * ROUNDS}
    per_process = "; ".join(f"{n} {1e3 * s:.0f} ms" for n, s in spent.items())
    return (f"wall median {1e3 * float(wall):.0f} ms ({100 / 1024 / float(wall):.2f} GiB/s); driver loop CPU median "
            f"{1e3 * float(cpu):.0f} ms; CPU per put+get by process (mean): {per_process}")


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "in-cluster"
    op = ACTOR_USE if "--actor" in sys.argv[2:] else PUT_GET
    if mode == "ray":
        init = "import ray as rt\nrt.init(num_cpus=1, include_dashboard=False)\n"
        print("ray", run_driver(init, dict(os.environ), [], op))
        return
    if mode == "in-cluster":
        init = "import kastor as rt\nrt.init(num_cpus=1)\n"
        print("in-cluster", run_driver(init, dict(os.environ), [], op))
        return
    if mode != "client-port":
        raise SystemExit(f"unknown mode {mode!r}: in-cluster, ray or client-port")
    from kastor.runtime import launcher
    port, client_port = launcher.free_port(), launcher.free_port()
    token = os.urandom(16).hex()
    env = dict(os.environ, KASTOR_TOKEN=token, KASTOR_SESSION_ROOT=tempfile.mkdtemp(prefix="kastor-bench-"))
    head = subprocess.Popen([sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--block", "--port",
                             str(port), "--client-port", str(client_port)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        head.stdout.readline()
        init = f"import kastor as rt\nrt.init('kastor://127.0.0.1:{client_port}')\n"
        print("client-port", run_driver(init, env, [p for p in _tree(head.pid) if p != head.pid], op))
    finally:
        head.terminate()
        head.wait(30)


if __name__ == "__main__":
    main()
