"""Where pipelined actor calls spend their CPU, per thread of the caller and of the worker.

    python bench/pipelined.py                # a plain (serial) actor: the async_actor_calls_per_s pattern
    python bench/pipelined.py --async-def    # an actor whose method is `async def`
    python bench/pipelined.py --rounds 20

Each round submits 5,000 calls to one actor and then gets them all, as
``async_actor_calls_per_s`` in microbench.py does. Before and after the rounds it reads every
thread's CPU time and voluntary context switches (see callpath.py) and prints them per call.
The machine's load changes the calls per second a lot and the CPU per call little, so the CPU
columns are the figures to compare between two versions (bench/README.md, "Pipelined calls").
"""

from __future__ import annotations

import argparse
import os
import time

import kastor
from callpath import Target, python_thread_names, threads

CALLS = 5_000


@kastor.remote
class AsyncDef:
    async def f(self) -> int:
        return 0

    def pid(self) -> int:
        return os.getpid()

    def thread_names(self) -> dict[int, str]:
        return python_thread_names()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--async-def", action="store_true", help="an actor whose method is `async def`")
    args = ap.parse_args()
    kastor.init(num_cpus=2)
    a = (AsyncDef if args.async_def else Target).remote()
    worker = kastor.get(a.pid.remote())
    for _ in range(3):  # warm-up
        kastor.get([a.f.remote() for _ in range(CALLS)])
    procs = {"caller": os.getpid(), "worker": worker}
    names = {"caller": python_thread_names(), "worker": kastor.get(a.thread_names.remote())}
    before = {who: threads(pid, names[who]) for who, pid in procs.items()}
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        kastor.get([a.f.remote() for _ in range(CALLS)])
    wall = time.perf_counter() - t0
    after = {who: threads(pid, names[who]) for who, pid in procs.items()}
    n = args.rounds * CALLS
    print(f"# {n} pipelined calls ({'async def' if args.async_def else 'plain'} actor) in {wall:.2f} s: "
          f"{n / wall:.0f} calls/s; loadavg {' '.join(open('/proc/loadavg').read().split()[:3])}")
    print(f"# {'process':<7} {'thread':<26} {'cpu_us':>8} {'vol_sw':>7}   (per call)")
    total = {}
    for who in procs:
        total[who] = 0
        for tid, r in sorted(after[who].items()):
            r0 = before[who].get(tid)
            if r0 is None or (r.cpu_ns - r0.cpu_ns) / n < 100:  # under 0.1 us per call: idle threads
                continue
            total[who] += r.cpu_ns - r0.cpu_ns
            print(f"  {who:<7} {r.name[:26]:<26} {(r.cpu_ns - r0.cpu_ns) / n / 1e3:>8.1f} "
                  f"{(r.voluntary - r0.voluntary) / n:>7.3f}")
    print(f"# CPU per call: caller {total['caller'] / n / 1e3:.1f} us, worker {total['worker'] / n / 1e3:.1f} us, "
          f"both {(total['caller'] + total['worker']) / n / 1e3:.1f} us")
    kastor.shutdown()


if __name__ == "__main__":
    main()
