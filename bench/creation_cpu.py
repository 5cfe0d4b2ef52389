"""CPU per actor creation, per process of the tree and per thread of the new workers (issue 16).

    python bench/creation_cpu.py                 # 3 bursts of 20 creations and a ping each
    python bench/creation_cpu.py --bursts 5 --n 20

Creations per second depend on what else the machine runs; the CPU one creation costs does
not, so this is the firm figure for A/B comparisons on a shared machine. Before and after each
burst, the CPU of every live thread under the driver is read from ``/proc`` (schedstat, in ns;
utime+stime count 10 ms ticks); a worker forked during the burst counts whole (a fork starts
its counters at zero). The actors are
killed after the second reading, outside the figure. Per role: ``driver`` (this process, all
threads), ``head``, ``agent``, ``forkserver``, ``workers``; then the workers' CPU per thread
name (``/proc/<pid>/task/*/comm``), to show where a new worker's start goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

from proctree import descendants

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def _cpu_ms(path: str) -> float:
    """utime+stime of /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat, in ms (0 if gone)."""
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_MS


def _role(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            cmd = f.read()
    except OSError:
        return "gone"
    for role in ("head", "node_agent", "forkserver"):
        if f"kastor.runtime.{role}" in cmd:
            return role
    return "other"


def _snapshot() -> dict[int, float]:
    me = os.getpid()
    return {pid: _process_ms(pid) for pid in [me, *descendants(me)]}


def _process_ms(pid: int) -> float:
    """CPU of a process's live threads, in ms, from schedstat (ns; stat counts 10 ms ticks, too
    coarse for a process that runs a few ms), or from stat if schedstat is not there."""
    total, seen = 0.0, False
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e6
                seen = True
        except (OSError, ValueError):
            continue
    return total if seen else _cpu_ms(f"/proc/{pid}/stat")


def _thread_cpu(pids: list[int]) -> dict[str, float]:
    by_name: dict[str, float] = defaultdict(float)
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    name = f.read().strip()
            except OSError:
                continue
            try:  # schedstat: ns on the CPU, where stat counts 10 ms ticks
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns = int(f.read().split()[0])
            except OSError:
                continue
            name = "main" if tid == str(pid) else name.rstrip("0123456789_-") or name
            by_name[name] += ns / 1e6
    return by_name


class Pinger:
    def ping(self) -> int:
        return os.getpid()


def main() -> None:
    import kastor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="creations per burst")
    ap.add_argument("--bursts", type=int, default=3)
    args = ap.parse_args()
    kastor.init(num_cpus=2)
    cls = kastor.remote(Pinger)
    warm = [cls.remote() for _ in range(2)]
    kastor.get([a.ping.remote() for a in warm])
    for a in warm:
        kastor.kill(a)
    roles: dict[str, list[float]] = defaultdict(list)
    threads: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.bursts):
        before = _snapshot()
        driver_before = _thread_cpu([os.getpid()])
        t0 = time.perf_counter()
        actors = [cls.remote() for _ in range(args.n)]
        workers = kastor.get([a.ping.remote() for a in actors])
        roles["rate_per_s"].append(args.n / (time.perf_counter() - t0))
        after = _snapshot()
        per_role: dict[str, float] = defaultdict(float)
        for pid, ms in after.items():
            role = "driver" if pid == os.getpid() else "workers" if pid in workers else _role(pid)
            per_role[role] += ms - before.get(pid, 0.0)
        for role, ms in per_role.items():
            roles[role].append(ms / args.n)
        roles["total"].append(sum(per_role.values()) / args.n)
        for name, ms in _thread_cpu(workers).items():
            threads[name].append(ms / args.n)
        driver_threads = _thread_cpu([os.getpid()])
        for name, ms in driver_threads.items():
            threads["driver:" + name].append((ms - driver_before.get(name, 0.0)) / args.n)
        for a in actors:
            kastor.kill(a)
    kastor.shutdown()
    print(f"# {args.bursts} bursts of {args.n}; medians, ms of CPU per creation (rate: creations/s)")
    for role, values in sorted(roles.items()):
        print(f"creation_cpu_{role} {statistics.median(values):.2f}  ({' '.join(f'{v:.1f}' for v in values)})")
    for name, values in sorted(threads.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"worker_thread_cpu[{name}] {statistics.median(values):.2f}")


if __name__ == "__main__":
    main()
