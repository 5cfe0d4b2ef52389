"""Scale benchmark: waves of actors, each kept alive, with creation rate, memory per actor and
process counts after every wave, on any Ray-core-compatible module.

    python bench/scale.py --ray-python /opt/rayvenv/bin/python   # Kastor, then Ray, same machine
    python bench/scale.py --backend kastor --waves 20 --wave 10   # 200 actors, one backend
    python bench/scale.py --quick                                 # 3 waves of 3 (smoke test)
    python bench/scale.py --backend kastor --waves 30 --wave 20 --hold 60   # 600 actors, then 60 s idle

How many actors a machine holds is decided by the memory each one costs, and how fast a job fans
out by the creation rate while many actors already run. After each wave of `--wave` new actors
(all alive, each answering a ping) it prints the wave's creation rate, the PSS of the driver's
process tree (shared pages counted once, `bench/proctree.py`), PSS per live actor above the
empty cluster, the process count, how many of all the actors created so far still answer a
ping (`actors_answering`: an actor may die after its wave, e.g. a fenced worker) and the load
average. At the end it kills every actor and prints how many
processes are left once the count stops falling: a runtime that leaks workers shows it there.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from types import ModuleType
from typing import Any

from microbench import emit, parse, run_subprocess, side_by_side
from proctree import sample


class Idle:
    def ping(self) -> int:
        return os.getpid()


def settled_process_count(deadline_s: float = 60.0) -> int:
    """The tree's process count once it has not fallen for 5 readings (or at the deadline)."""
    best, steady, end = sample().processes, 0, time.monotonic() + deadline_s
    while steady < 5 and time.monotonic() < end:
        time.sleep(1.0)  # a benchmark reading, not a test: it waits for the count to stop falling
        now = sample().processes
        steady = steady + 1 if now >= best else 0
        best = min(best, now)
    return best


def answering(rt: ModuleType, actors: list[Any], within_s: float = 120.0) -> int:
    """How many of `actors` answer a ping within `within_s`. A wave's get() proves only its new
    actors; an earlier one may have died since (a fenced worker exits), and only this count
    shows it."""
    refs = [a.ping.remote() for a in actors]
    deadline, alive = time.monotonic() + within_s, 0
    for ref in refs:
        try:
            rt.get(ref, timeout=max(0.1, deadline - time.monotonic()))
            alive += 1
        except Exception:  # dead (ActorDiedError), lost, or not answering in time: not alive
            pass
    return alive


def run_backend(name: str, waves: int, wave: int, hold_s: float = 0.0) -> None:
    rt: ModuleType = importlib.import_module(name)
    print(f"# backend={name} version={getattr(rt, '__version__', '?')} python={platform.python_version()}"
          f" nproc={os.cpu_count()} date={time.strftime('%Y-%m-%dT%H:%M:%S%z')} waves={waves}x{wave}", flush=True)
    rt.init(**({"include_dashboard": False} if name == "ray" else {}))
    actor_cls = rt.remote(Idle)
    warm = actor_cls.remote()  # the first actor pays one-off imports; it is not counted
    rt.get(warm.ping.remote())
    rt.kill(warm)
    base = sample()
    emit(name, "scale_empty_pss_mib", base.pss_mib)
    emit(name, "scale_empty_processes", base.processes)
    live: list[Any] = []
    for i in range(1, waves + 1):
        t0 = time.perf_counter()
        try:
            new = [actor_cls.remote() for _ in range(wave)]
            rt.get([a.ping.remote() for a in new], timeout=600)
        except Exception as exc:  # record where it broke and stop adding
            emit(name, f"scale_wave_{i}_actors_per_s", float("nan"), f"error: {type(exc).__name__}: {str(exc)[:200]!r}")
            break
        rate = wave / (time.perf_counter() - t0)
        live.extend(new)
        s = sample()
        emit(name, f"scale_wave_{i}_actors_per_s", rate)
        emit(name, f"scale_wave_{i}_pss_mib", s.pss_mib)
        emit(name, f"scale_wave_{i}_pss_per_actor_mib", (s.pss_mib - base.pss_mib) / len(live))
        emit(name, f"scale_wave_{i}_processes", s.processes)
        emit(name, f"scale_wave_{i}_actors_answering", answering(rt, live))
        emit(name, f"scale_wave_{i}_load_1m", os.getloadavg()[0])
    emit(name, "scale_actors_created", len(live))
    if hold_s:
        time.sleep(hold_s)  # a benchmark's idle phase, not a test's wait: idle actors must stay alive
        emit(name, "scale_hold_s", hold_s)
        emit(name, "scale_hold_load_1m", os.getloadavg()[0])
    emit(name, "scale_actors_alive", answering(rt, live))
    for a in live:
        rt.kill(a)
    emit(name, "scale_processes_after_kill", settled_process_count())
    rt.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", help="run only this module (kastor or ray), in this process")
    ap.add_argument("--ray-python", help="interpreter with ray installed, to compare against")
    ap.add_argument("--waves", type=int, default=10)
    ap.add_argument("--wave", type=int, default=10, help="actors per wave")
    ap.add_argument("--quick", action="store_true", help="3 waves of 3 actors (smoke test)")
    ap.add_argument("--hold", type=float, default=0.0,
                    help="seconds all actors then stay idle before the last count of those answering")
    args = ap.parse_args()
    waves, wave = (3, 3) if args.quick else (args.waves, args.wave)
    if args.backend:
        run_backend(args.backend, waves, wave, args.hold)
        return
    here, extra = os.path.abspath(__file__), ["--waves", str(waves), "--wave", str(wave), "--hold", str(args.hold)]
    kastor = parse(run_subprocess(sys.executable, "kastor", False, script=here, extra=extra), "kastor")
    if args.ray_python:
        ray = parse(run_subprocess(args.ray_python, "ray", False, script=here, extra=extra), "ray")
        side_by_side(kastor, ray)


if __name__ == "__main__":
    main()
