"""Actor start: creations per second and memory per idle actor, Kastor (fork server on and off)
and Ray side by side in one run (issue 16).

    python bench/actor_start.py --ray-python /opt/rayvenv/bin/python
    python bench/actor_start.py --quick          # small counts, no Ray

Each backend runs in a process of its own (``--backend``), on an embedded cluster with 2 CPUs:

- ``actor_creations_per_s``: create N default actors at once and ``get`` a ping from each (after
  a warm-up of 2), as in ``microbench.py``; the actors are then killed.
- ``pss_per_idle_actor_mib``: the PSS of the driver's whole process tree (``proctree.py``: shared
  pages counted once) once N more actors answered a ping, minus before, per actor.

``kastor_nofork`` is Kastor with ``KASTOR_FORK_SERVER=0``: every worker a fresh interpreter.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from microbench import parse, run_subprocess
from proctree import sample

FIGURES = ["actor_creations_per_s", "pss_per_idle_actor_mib"]
BACKENDS = {"kastor": ("kastor", {"KASTOR_FORK_SERVER": "1"}), "kastor_nofork": ("kastor", {"KASTOR_FORK_SERVER": "0"})}


class Pinger:
    def ping(self) -> str:
        return "pong"


def run_backend(label: str, module: str, n: int) -> None:
    rt = importlib.import_module(module)
    rt.init(num_cpus=2, **({"include_dashboard": False} if module == "ray" else {}))
    cls = rt.remote(Pinger)
    warm = [cls.remote() for _ in range(2)]
    rt.get([a.ping.remote() for a in warm])
    for a in warm:
        rt.kill(a)
    t0 = time.perf_counter()
    actors = [cls.remote() for _ in range(n)]
    rt.get([a.ping.remote() for a in actors])
    print(f"{label} actor_creations_per_s {n / (time.perf_counter() - t0):.4g}", flush=True)
    for a in actors:
        rt.kill(a)
    before = sample().pss_mib
    actors = [cls.remote() for _ in range(n)]
    rt.get([a.ping.remote() for a in actors])
    print(f"{label} pss_per_idle_actor_mib {(sample().pss_mib - before) / n:.4g}", flush=True)
    rt.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", help="run only this one (kastor, kastor_nofork or ray), in this process")
    ap.add_argument("--ray-python", help="interpreter with ray installed, to compare against")
    ap.add_argument("--quick", action="store_true", help="small counts (smoke test)")
    args = ap.parse_args()
    n = 4 if args.quick else 20
    if args.backend:
        module, env = BACKENDS.get(args.backend, (args.backend, {}))
        os.environ.update(env)
        run_backend(args.backend, module, n)
        return
    results = {}
    for label in BACKENDS:
        results[label] = parse(run_subprocess(sys.executable, label, args.quick, __file__), label)
    if args.ray_python:
        results["ray"] = parse(run_subprocess(args.ray_python, "ray", args.quick, __file__), "ray")
    labels = list(results)
    print(f"\n# {'figure':<26}" + "".join(f" {label:>14}" for label in labels) + "   kastor/ray (speedup)")
    for fig in FIGURES:
        values = [results[label].get(fig, float("nan")) for label in labels]
        line = f"# {fig:<26}" + "".join(f" {v:>14.4g}" for v in values)
        if "ray" in results:
            k, r = results["kastor"].get(fig, float("nan")), results["ray"].get(fig, float("nan"))
            speed = (r / k if fig.startswith("pss") else k / r) if k and r else float("nan")
            line += f"   {speed:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
