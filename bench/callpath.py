"""Where one synchronous actor call spends its time, per thread of the caller and of the worker.

    python bench/callpath.py              # 20,000 calls (or 10 s), Kastor
    python bench/callpath.py --calls 2000
    python bench/callpath.py --tasks      # get(f.remote()) of a stateless task instead
    python bench/callpath.py --batched    # get([f.remote() for _ in range(1000)]), per task

`get(a.f.remote())` runs in a loop on one actor of an embedded cluster. Before and after the
window it reads, for every thread of the driver and of the actor's worker, the CPU time
(``/proc/PID/task/TID/stat``: utime + stime) and the voluntary and involuntary context switches
(``/proc/PID/task/TID/status``). Divided by the calls made, that says how many microseconds of CPU
each thread spends on a call and how many times it goes to sleep and is woken for one: a thread
hand-off shows as one voluntary switch of the thread that waits. Wall time per call minus the CPU
on the call's critical path is what the waits and wake-ups cost (bench/README.md, "The remaining
gap").
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from dataclasses import dataclass

import kastor
from proctree import descendants


@kastor.remote
class Target:
    def f(self) -> int:
        return 0

    def pid(self) -> int:
        return os.getpid()

    def thread_names(self) -> dict[int, str]:
        return python_thread_names()


def python_thread_names() -> dict[int, str]:
    """OS thread id -> Python thread name (threads gRPC's C core starts keep their OS name)."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    names.setdefault(os.getpid(), "MainThread")  # a forked worker's main thread: its tid is its pid
    return names


@dataclass(frozen=True)
class ThreadReading:
    name: str
    cpu_ns: int  # time on a CPU (schedstat), nanosecond resolution
    runq_ns: int  # time runnable but waiting for a CPU: what the machine's load adds
    voluntary: int  # went to sleep (a wait on a lock, a queue, epoll): one per hand-off it waits for
    involuntary: int  # preempted


@kastor.remote
def task_f() -> int:
    return 0


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return str(pid)
    for a in args:
        for word in (b"head", b"node_agent", b"forkserver", b"worker"):
            if word in a:
                return f"{word.decode()}:{pid}"
    return f"proc:{pid}"


def threads(pid: int, names: dict[int, str]) -> dict[int, ThreadReading]:
    out: dict[int, ThreadReading] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out  # it exited
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                cpu_ns, runq_ns, _ = (int(v) for v in f.read().split())
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        name = names.get(int(tid), status["Name"].strip())
        out[int(tid)] = ThreadReading(name, cpu_ns, runq_ns, int(status["voluntary_ctxt_switches"]),
                                      int(status["nonvoluntary_ctxt_switches"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--tasks", action="store_true",
                    help="time get(f.remote()) of a task; read every process of the cluster")
    ap.add_argument("--batched", action="store_true",
                    help="time batches of 1,000 tasks submitted, then got; figures per task")
    ap.add_argument("--seconds", type=float, default=10.0, help="stop earlier than --calls after this long")
    args = ap.parse_args()
    kastor.init(num_cpus=2)
    batch = 1000 if args.batched else 1
    if args.tasks or args.batched:
        def one() -> None:
            if args.batched:
                kastor.get([task_f.remote() for _ in range(batch)])
            else:
                kastor.get(task_f.remote())
        for _ in range(500 // batch + 2):
            one()
        procs = {"caller": os.getpid(), **{process_name(p): p for p in descendants(os.getpid())}}
        names = {"caller": python_thread_names()}
    else:
        a = Target.remote()
        worker = kastor.get(a.pid.remote())

        def one() -> None:
            kastor.get(a.f.remote())
        for _ in range(500):
            one()
        procs = {"caller": os.getpid(), "worker": worker}
        names = {"caller": python_thread_names(), "worker": kastor.get(a.thread_names.remote())}
    before = {who: threads(pid, names.get(who, {})) for who, pid in procs.items()}
    n, t0 = 0, time.perf_counter()
    while n < args.calls and time.perf_counter() - t0 < args.seconds:
        one()
        n += batch
    wall = time.perf_counter() - t0
    after = {who: threads(pid, names.get(who, {})) for who, pid in procs.items()}
    what = "tasks" if batch > 1 else "sync calls"
    print(f"# {n} {what} in {wall:.2f} s: {n / wall:.0f}/s, {wall / n * 1e6:.0f} us each; loadavg "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])}")
    print(f"# {'process':<18} {'thread':<26} {'cpu_us':>8} {'runq_us':>8} {'vol_sw':>7} {'invol_sw':>8}   (per call)")
    cpu_total = 0
    for who in procs:
        for tid, r in sorted(after[who].items()):
            r0 = before[who].get(tid)
            if r0 is None or (r.cpu_ns == r0.cpu_ns and r.voluntary == r0.voluntary):
                continue
            cpu_total += r.cpu_ns - r0.cpu_ns
            print(f"  {who[:18]:<18} {r.name[:26]:<26} {(r.cpu_ns - r0.cpu_ns) / n / 1e3:>8.1f} "
                  f"{(r.runq_ns - r0.runq_ns) / n / 1e3:>8.1f} {(r.voluntary - r0.voluntary) / n:>7.2f} "
                  f"{(r.involuntary - r0.involuntary) / n:>8.2f}")
    print(f"# CPU of the processes read, per call: {cpu_total / n / 1e3:.0f} us; "
          f"wall per call: {wall / n * 1e6:.0f} us")
    kastor.shutdown()


if __name__ == "__main__":
    main()
