"""Soak benchmark: long runs of tasks, actor calls and nested refs, with memory and processes
recorded every 10,000 operations, on any Ray-core-compatible module.

    python bench/soak.py --ray-python /opt/rayvenv/bin/python   # Kastor, then Ray, same machine
    python bench/soak.py --backend kastor                        # one backend, in this process
    python bench/soak.py --quick                                 # 1/100 of the counts (smoke test)

A runtime can be fast for a minute and still leak: a worker that keeps every result it returned,
an owner that never frees a nested ref, an idle pool that only grows. The microbenchmark cannot
see that; this one runs 100k tasks, 50k actor calls, 20k nested refs returned by tasks and 20k
nested refs lent to an actor that keeps each batch until the next (`borrowed`: each batch must be
freed once the actor drops it, see runtime/borrowing.py), and prints, after every
10k operations of a phase, the PSS of the driver's whole process tree and how many processes it
has (`bench/proctree.py`). At the end of each phase it prints the largest growth of any single
process that lived through the phase (``*_max_proc_growth_mib``): after warm-up that should stay
near zero. Lines have microbench's shape, ``<backend> <figure> <value>``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
from microbench import emit, parse, run_subprocess, side_by_side
from proctree import TreeSample, sample

SAMPLE_EVERY = 10_000


def noop() -> int:
    return 0


def make_nested(n: int, backend: str) -> list[Any]:
    """Returns refs to objects it put, through `backend`'s own API, as a nested-ref workload does."""
    rt = importlib.import_module(backend)
    return [rt.put(np.full(1024, i, dtype=np.uint8)) for i in range(n)]


class Keeper:
    """Keeps the last batch of refs it was lent (a borrower), dropping the batch before."""

    def __init__(self) -> None:
        self.held: list[Any] = []

    def keep(self, refs: list[Any]) -> int:
        self.held = refs
        return len(refs)


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n


def max_growth(before: TreeSample, after: TreeSample) -> float:
    """The largest PSS growth of a process present at both readings."""
    common = before.by_pid.keys() & after.by_pid.keys()
    return max((after.by_pid[p] - before.by_pid[p] for p in common), default=0.0)


def phase(backend: str, name: str, total: int, batch: int, every: int, step: Callable[[int], int]) -> None:
    """Runs `step(batch)` until `total` operations are done, sampling the tree every `every`."""
    step(batch)  # warm-up: first workers, first imports
    warm = sample()
    done, next_sample, t0 = 0, every, time.perf_counter()
    while done < total:
        done += step(min(batch, total - done))
        if done >= next_sample or done >= total:
            s = sample()
            emit(backend, f"soak_{name}_at_{done}_pss_mib", s.pss_mib)
            emit(backend, f"soak_{name}_at_{done}_processes", s.processes)
            next_sample += every
    elapsed = time.perf_counter() - t0
    end = sample()
    emit(backend, f"soak_{name}_per_s", done / elapsed)
    emit(backend, f"soak_{name}_pss_growth_mib", end.pss_mib - warm.pss_mib)
    emit(backend, f"soak_{name}_max_proc_growth_mib", max_growth(warm, end))


PHASES = ("tasks", "calls", "nested", "borrowed")


def run_backend(name: str, quick: bool, phases: tuple[str, ...] = PHASES) -> None:
    rt: ModuleType = importlib.import_module(name)
    print(f"# backend={name} version={getattr(rt, '__version__', '?')} python={platform.python_version()}"
          f" nproc={os.cpu_count()} date={time.strftime('%Y-%m-%dT%H:%M:%S%z')} quick={quick}", flush=True)
    scale = 100 if quick else 1
    rt.init(**({"include_dashboard": False} if name == "ray" else {}))
    emit(name, "soak_start_pss_mib", sample().pss_mib)

    f = rt.remote(noop)
    nested = rt.remote(make_nested)
    counters = [rt.remote(Counter).remote() for _ in range(4)]
    rt.get([c.add.remote(0) for c in counters])
    keeper = rt.remote(Keeper).remote()

    def tasks(n: int) -> int:
        return len(rt.get([f.remote() for _ in range(n)]))

    def calls(n: int) -> int:
        return len(rt.get([counters[i % 4].add.remote(1) for i in range(n)]))

    def nested_refs(n: int) -> int:
        per_task = 50
        outer = rt.get([nested.remote(per_task, name) for _ in range(max(1, n // per_task))])
        inner = [ref for refs in outer for ref in refs]
        values = rt.get(inner)
        assert all(v.nbytes == 1024 for v in values)
        return len(values)

    def borrowed(n: int) -> int:
        return rt.get(keeper.keep.remote([rt.put(np.full(1024, i % 256, dtype=np.uint8)) for i in range(n)]))

    for label, total, batch, step in [("tasks", 100_000, 1_000, tasks), ("calls", 50_000, 1_000, calls),
                                      ("nested", 20_000, 500, nested_refs), ("borrowed", 20_000, 500, borrowed)]:
        if label not in phases:
            continue
        try:
            phase(name, label, total // scale, batch // scale, SAMPLE_EVERY // scale, step)
        except Exception as exc:  # record the failure, go on with the next phase
            emit(name, f"soak_{label}_per_s", float("nan"), f"error: {type(exc).__name__}: {str(exc)[:200]!r}")
    emit(name, "soak_end_pss_mib", sample().pss_mib)
    rt.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", help="run only this module (kastor or ray), in this process")
    ap.add_argument("--ray-python", help="interpreter with ray installed, to compare against")
    ap.add_argument("--quick", action="store_true", help="1/100 of the counts (smoke test)")
    ap.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)} "
                    "(with --backend)")
    args = ap.parse_args()
    if args.backend:
        run_backend(args.backend, args.quick, tuple(args.phases.split(",")))
        return
    # Each backend in its own process, one after the other, so neither's leftovers skew the other.
    here = os.path.abspath(__file__)
    kastor = parse(run_subprocess(sys.executable, "kastor", args.quick, script=here), "kastor")
    if args.ray_python:
        ray = parse(run_subprocess(args.ray_python, "ray", args.quick, script=here), "ray")
        side_by_side(kastor, ray)


if __name__ == "__main__":
    main()
