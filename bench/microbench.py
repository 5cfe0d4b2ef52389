"""Ray-core microbenchmark, runnable against any Ray-core-compatible module.

    python bench/microbench.py                         # kastor (+ Ray in a subprocess if importable)
    python bench/microbench.py --ray-python /opt/rayvenv/bin/python   # kastor vs Ray from another venv
    python bench/microbench.py --backend ray           # Ray only
    python bench/microbench.py --quick                 # small counts, for smoke tests
    python bench/microbench.py --only actor_creations_per_s   # just these figures (comma-separated)
    python bench/microbench.py --ray-python ... --rounds 4      # 4 pairs, then medians and per-round ratios

Every figure is printed as one greppable line ``<backend> <figure> <value>`` (``nan`` plus a
``# error`` comment when that figure failed). Each is measured after a warm-up, as wall time over
a bounded number of iterations (and at most a few seconds). Why each figure exists:

- ``init_s``: seconds for ``init()`` to return with no arguments (an embedded local cluster).
  It is paid by every script, test and notebook, so it dominates short programs.
- ``sync_actor_calls_per_s``: ``get(a.f.remote())`` in a loop on one actor: the full round trip
  (submit, schedule on the actor, execute, return, fetch), i.e. the per-call latency floor.
- ``async_actor_calls_per_s``: 5,000 calls in flight on one actor, then one ``get``: throughput
  of the actor's submission and return pipeline when latency is hidden by pipelining (a plain,
  serial actor: despite the name, the calls are pipelined, not ``async def``).
- ``async_def_actor_calls_per_s``: the same against an actor whose method is ``async def`` (its
  calls run concurrently on the actor's event loop, up to ``max_concurrency`` 1,000).
- ``sync_tasks_per_s``: ``get(f.remote())`` in a loop: stateless-task round trip, which adds
  worker leasing/scheduling on top of what the actor path pays.
- ``batched_tasks_per_s``: 1,000 tasks submitted then fetched: scheduler throughput when every
  worker is kept busy.
- ``put_get_small_per_s``: ``get(put(1))``: fixed overhead of the object store for tiny objects.
- ``put_get_100MiB_GiB_per_s``: ``put`` then ``get`` of a 100 MiB numpy array, in GiB per
  second (one put+get counts as 100 MiB): bulk-data bandwidth of serialization and the store.
  Ray's ``get`` of a numpy array is a zero-copy view, so this is mostly the cost of ``put``.
- ``pass_by_ref_100MiB_GiB_per_s``: one ``put`` of 100 MiB, then the ref passed repeatedly to
  an actor method returning ``arr.nbytes``: how cheaply a worker can read a large object that
  already sits in the store (ideally no copy at all).
- ``actor_creations_per_s``: create N default actors and ``get`` a ping from each: cost of
  bringing up actor processes, which bounds how fast a job can fan out.
- ``pss_per_idle_actor_mib``: the PSS of the driver's whole process tree (``bench/proctree.py``:
  shared pages counted once) after 10 more idle actors answered a ping, minus before, per actor.
  Lower is better: the comparison prints ray/kastor as its speedup.
- ``durable_actor_calls_per_s`` (Kastor only, needs ``redis-server``): the sync round trip of
  ``counter.inc.remote()`` on an actor with ``state=kastor.state.Checkpoint(every="call")`` on a
  Redis store (a redis-server this run starts, ``appendonly yes``, ``appendfsync everysec``), and
  ``durable_cost_x``: the same loop on the same class without state, divided by it (how many
  times a plain call a durable one costs; the aim is at most 2x). ``durable_fsync_cost_x`` is the
  same with ``appendfsync always`` (no loss even if Redis is killed): each call then waits for an
  fsync, so it measures the disk more than Kastor.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

MIB = 1 << 20
BIG_MIB = 100
BIG_GIB = BIG_MIB / 1024
FIGURES = [
    "init_s",
    "sync_actor_calls_per_s",
    "async_actor_calls_per_s",
    "async_def_actor_calls_per_s",
    "sync_tasks_per_s",
    "batched_tasks_per_s",
    "put_get_small_per_s",
    "put_get_100MiB_GiB_per_s",
    "pass_by_ref_100MiB_GiB_per_s",
    "actor_creations_per_s",
    "pss_per_idle_actor_mib",
]
DURABLE_FIGURES = {"durable_actor_calls_per_s", "durable_cost_x", "durable_fsync_cost_x"}  # Kastor only
LOWER_IS_BETTER = {"init_s", "pss_per_idle_actor_mib"}
LINE_RE = re.compile(r"^(\w+)\s+(\w+)\s+(\S+)")


def noop() -> int:
    return 0


class Counter:
    """A small state: what a durable actor saves after every call."""

    def __init__(self) -> None:
        self.n = 0
        self.owner = "bench"

    def inc(self) -> int:
        self.n += 1
        return self.n


class Worker:
    def f(self) -> int:
        return 0

    def ping(self) -> str:
        return "pong"

    def nbytes(self, arr: np.ndarray) -> int:
        return int(arr.nbytes) + int(arr[-1])


class AsyncWorker:
    """An async actor (`async def` methods: its calls run on its event loop, up to 1,000 at once)."""

    async def f(self) -> int:
        return 0


def emit(backend: str, name: str, value: float, note: str = "") -> None:
    text = "nan" if value != value else (f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}")
    print(f"{backend:<7} {name:<30} {text}" + (f"  # {note}" if note else ""), flush=True)


def rate(step: Callable[[], float], rounds: int, budget: float, warmup: int = 1) -> float:
    """Warm up, then run ``step`` (returns units done) up to ``rounds`` times or ``budget`` seconds."""
    for _ in range(warmup):
        step()
    units, done, t0 = 0.0, 0, time.perf_counter()
    while True:
        units += step()
        done += 1
        elapsed = time.perf_counter() - t0
        if done >= rounds or elapsed >= budget:
            return units / elapsed


def run_backend(name: str, quick: bool, only: frozenset[str] = frozenset()) -> None:
    """Every figure for backend module `name`, or only those named in `only` (init_s always)."""
    rt: ModuleType = importlib.import_module(name)
    version = getattr(rt, "__version__", "?")
    print(
        f"# backend={name} version={version} python={platform.python_version()} nproc={os.cpu_count()}"
        f" date={time.strftime('%Y-%m-%dT%H:%M:%S%z')} quick={quick}",
        flush=True,
    )

    def q(full: int, small: int) -> int:
        return small if quick else full

    budget = 1.0 if quick else 3.0

    def figure(fig: str, fn: Callable[[], float]) -> None:
        if only and fig not in only:
            return
        try:
            emit(name, fig, fn())
        except Exception as exc:  # record failures honestly, keep going
            emit(name, fig, float("nan"), f"error: {type(exc).__name__}: {str(exc)[:200]!r}")

    init_kwargs: dict[str, Any] = {"include_dashboard": False} if name == "ray" else {}
    t0 = time.perf_counter()
    try:
        rt.init(**init_kwargs)
    except Exception as exc:
        emit(name, "init_s", float("nan"), f"error: {type(exc).__name__}: {str(exc)[:200]!r}")
        return
    emit(name, "init_s", time.perf_counter() - t0)

    f = rt.remote(noop)
    actor_cls = rt.remote(Worker)
    holder: dict[str, Any] = {}

    def actor() -> Any:
        if "a" not in holder:
            holder["a"] = actor_cls.remote()
            rt.get(holder["a"].ping.remote())
        return holder["a"]

    def sync_actor() -> float:
        a = actor()
        return rate(lambda: rt.get(a.f.remote()) + 1, q(20_000, 500), budget, warmup=100)

    def async_actor() -> float:
        a, n = actor(), q(5_000, 500)
        return rate(lambda: len(rt.get([a.f.remote() for _ in range(n)])), q(5, 1), budget)

    def async_def_actor() -> float:
        a, n = rt.remote(AsyncWorker).remote(), q(5_000, 500)
        rt.get(a.f.remote())
        try:
            return rate(lambda: len(rt.get([a.f.remote() for _ in range(n)])), q(5, 1), budget)
        finally:
            rt.kill(a)

    def sync_tasks() -> float:
        return rate(lambda: rt.get(f.remote()) + 1, q(10_000, 200), budget, warmup=50)

    def batched_tasks() -> float:
        n = q(1_000, 200)
        return rate(lambda: len(rt.get([f.remote() for _ in range(n)])), q(10, 1), budget)

    def put_get_small() -> float:
        return rate(lambda: rt.get(rt.put(1)), q(20_000, 500), budget, warmup=100)

    big = np.ones(BIG_MIB * MIB, dtype=np.uint8)

    def put_get_big() -> float:
        def step() -> float:
            out = rt.get(rt.put(big))
            assert out.nbytes == big.nbytes
            return BIG_GIB

        return rate(step, q(20, 2), budget)

    def pass_by_ref() -> float:
        a, ref = actor(), rt.put(big)
        want = big.nbytes + 1
        return rate(lambda: BIG_GIB * (rt.get(a.nbytes.remote(ref)) == want), q(50, 3), budget, warmup=2)

    def actor_creations() -> float:
        def step(n: int) -> float:
            actors = [actor_cls.remote() for _ in range(n)]
            rt.get([x.ping.remote() for x in actors])
            for x in actors:
                rt.kill(x)
            return n

        step(2)  # warm-up
        n, t0 = q(10, 3), time.perf_counter()
        step(n)
        return n / (time.perf_counter() - t0)

    figure("sync_actor_calls_per_s", sync_actor)
    figure("async_actor_calls_per_s", async_actor)
    figure("async_def_actor_calls_per_s", async_def_actor)
    figure("sync_tasks_per_s", sync_tasks)
    figure("batched_tasks_per_s", batched_tasks)
    figure("put_get_small_per_s", put_get_small)
    figure("put_get_100MiB_GiB_per_s", put_get_big)
    figure("pass_by_ref_100MiB_GiB_per_s", pass_by_ref)
    def pss_per_idle_actor() -> float:
        from proctree import sample

        n = q(10, 3)
        before = sample().pss_mib
        actors = [actor_cls.remote() for _ in range(n)]
        rt.get([x.ping.remote() for x in actors])
        per_actor = (sample().pss_mib - before) / n
        for x in actors:
            rt.kill(x)
        return per_actor

    figure("actor_creations_per_s", actor_creations)
    figure("pss_per_idle_actor_mib", pss_per_idle_actor)
    after_shutdown: list[Callable[[], None]] = []
    if name == "kastor" and (not only or only & DURABLE_FIGURES):
        durable_calls(rt, q(5_000, 300), budget, after_shutdown)
    if "a" in holder:
        rt.kill(holder.pop("a"))
    rt.shutdown()
    for stop in after_shutdown:
        stop()


def durable_calls(rt: ModuleType, rounds: int, budget: float, after_shutdown: list[Callable[[], None]]) -> None:
    """``durable_actor_calls_per_s``, ``durable_cost_x`` and ``durable_fsync_cost_x``: a checkpoint
    per call on Redis, against the same actor without state, measured back to back in this run.
    Each Redis server it starts is stopped by a callable it appends to `after_shutdown`, which the
    caller runs after `shutdown()`: `kill` deletes a durable actor's checkpoint after it returns,
    and `shutdown` deletes the job's, so Redis must outlive both."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        emit("kastor", "durable_actor_calls_per_s", float("nan"), "redis-server is not installed")
        return
    for fsync, figure in (("everysec", "durable_cost_x"), ("always", "durable_fsync_cost_x")):
        try:
            plain, durable = _durable_vs_plain(rt, binary, fsync, rounds, budget, after_shutdown)
        except Exception as exc:
            emit("kastor", figure, float("nan"), f"error: {type(exc).__name__}: {str(exc)[:200]!r}")
            continue
        if fsync == "everysec":
            emit("kastor", "durable_actor_calls_per_s", durable)
        emit("kastor", figure, plain / durable, f"appendfsync {fsync}: {durable:.0f} durable vs {plain:.0f} plain "
                                                f"calls/s; aim <= 2")


def _durable_vs_plain(rt: ModuleType, binary: str, fsync: str, rounds: int, budget: float,
                      after_shutdown: list[Callable[[], None]]) -> tuple[float, float]:
    import shutil
    import socket
    import tempfile

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = tempfile.mkdtemp(prefix="kastor-bench-redis-")
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", data, "--save", "",
                               "--appendonly", "yes", "--appendfsync", fsync],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def stop() -> None:
        server.terminate()
        server.wait(10)
        shutil.rmtree(data, ignore_errors=True)

    after_shutdown.append(stop)
    from kastor.state import Checkpoint, RedisStore
    plain = rt.remote(Counter).remote()
    durable = rt.remote(state=Checkpoint(store=RedisStore(f"127.0.0.1:{port}"), every="call"))(Counter).remote()
    # Interleaved slices, so that a change in the machine's load weighs on both alike.
    slices = 6
    rates: dict[str, list[float]] = {"plain": [], "durable": []}
    for i in range(slices):
        for label, a in (("plain", plain), ("durable", durable)):
            rates[label].append(rate(lambda a=a: rt.get(a.inc.remote()) * 0 + 1, max(1, rounds // slices),
                                     budget / slices, warmup=100 if i == 0 else 10))
    rt.kill(plain)
    rt.kill(durable)
    return sorted(rates["plain"])[slices // 2], sorted(rates["durable"])[slices // 2]  # medians


def parse(lines: list[str], backend: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in lines:
        m = LINE_RE.match(line)
        if m and m.group(1) == backend:
            out[m.group(2)] = float(m.group(3))
    return out


def run_subprocess(python: str, backend: str, quick: bool, script: str = __file__,
                   extra: list[str] | None = None) -> list[str]:
    """Runs `script --backend <backend>` under `python`, echoing and returning its lines."""
    cmd = [python, os.path.abspath(script), "--backend", backend] + (["--quick"] if quick else []) + (extra or [])
    lines: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    if proc.returncode:
        print(f"# {backend} subprocess exited with {proc.returncode}", flush=True)
    return lines


def side_by_side(kastor: dict[str, float], ray: dict[str, float]) -> None:
    """Both backends' figures in two columns (for benchmarks whose figures are not rates only)."""
    print(f"\n# {'figure':<38} {'kastor':>12} {'ray':>12}")
    for fig, value in kastor.items():
        print(f"# {fig:<38} {value:>12.4g} {ray.get(fig, float('nan')):>12.4g}")


def compare(a: dict[str, float], b: dict[str, float]) -> None:
    print("\n# comparison (speedup = kastor/ray for rates, ray/kastor for init_s and memory; aim >= 2x)")
    print(f"# {'figure':<30} {'kastor':>12} {'ray':>12} {'kastor/ray':>11} {'speedup':>8}")
    for fig in [f for f in FIGURES if f in a or f in b]:  # (--only measures some)
        k, r = a.get(fig, float("nan")), b.get(fig, float("nan"))
        ratio = k / r if r else float("nan")
        speed = 1 / ratio if fig in LOWER_IS_BETTER and ratio else ratio
        print(f"# {fig:<30} {k:>12.4g} {r:>12.4g} {ratio:>11.3f} {speed:>7.2f}x")


def summarize(rounds: list[tuple[dict[str, float], dict[str, float]]]) -> None:
    """Several rounds' figures: the median of each side, the ratio of those medians, and each
    round's own ratio. Ray's rate on a shared machine moves 2x between minutes, so one round's
    ratio says little; the medians of rounds run back to back say more."""
    print(f"\n# summary of {len(rounds)} rounds (speedup as above: ratio of the medians; then each round's)")
    print(f"# {'figure':<30} {'kastor':>12} {'ray':>12} {'speedup':>8}   per round")
    for fig in [f for f in FIGURES if any(f in k or f in r for k, r in rounds)]:
        ks = [k[fig] for k, _ in rounds if fig in k]
        rs = [r[fig] for _, r in rounds if fig in r]
        if not ks or not rs:
            continue
        k, r = statistics.median(ks), statistics.median(rs)
        each = [(a / b if fig not in LOWER_IS_BETTER else b / a) for a, b in zip(ks, rs, strict=False) if a and b]
        speed = (k / r if fig not in LOWER_IS_BETTER else r / k) if k and r else float("nan")
        print(f"# {fig:<30} {k:>12.4g} {r:>12.4g} {speed:>7.2f}x   " + ", ".join(f"{x:.2f}" for x in each))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", help="benchmark only this module (kastor or ray), in this process")
    ap.add_argument("--ray-python", help="interpreter with ray installed, to compare against")
    ap.add_argument("--no-ray", action="store_true", help="do not run the Ray comparison")
    ap.add_argument("--quick", action="store_true", help="tiny iteration counts (smoke test)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with Ray: this many Kastor/Ray pairs back to back (the order swapped every other "
                         "round), then a summary of medians and of each round's ratio")
    ap.add_argument("--only", default="", help="comma-separated figures to measure (default: all; init_s always), "
                                               "e.g. actor_creations_per_s")
    args = ap.parse_args()
    only = frozenset(f for f in args.only.split(",") if f)
    unknown = only - set(FIGURES) - DURABLE_FIGURES
    if unknown:
        ap.error(f"--only: unknown figure(s) {', '.join(sorted(unknown))}; known: {', '.join(FIGURES)}")
    if args.backend or args.no_ray:
        run_backend(args.backend or "kastor", args.quick, only)
        return
    extra = ["--only", args.only] if only else []
    ray_python = args.ray_python
    if ray_python is None:
        probe = subprocess.run([sys.executable, "-c", "import ray"], capture_output=True)
        ray_python = sys.executable if probe.returncode == 0 else None
    # Each backend runs in its own process so neither's leftovers skew the other.
    if ray_python is None:
        run_subprocess(sys.executable, "kastor", args.quick, extra=extra)
        return
    rounds = []
    for i in range(max(1, args.rounds)):
        order = [("kastor", sys.executable), ("ray", ray_python)]
        lines = {name: run_subprocess(python, name, args.quick, extra=extra)
                 for name, python in (order if i % 2 == 0 else order[::-1])}
        kastor, ray = parse(lines["kastor"], "kastor"), parse(lines["ray"], "ray")
        if any(v == v for v in kastor.values()) and any(v == v for v in ray.values()):
            compare(kastor, ray)
            rounds.append((kastor, ray))
    if len(rounds) > 1:
        summarize(rounds)


if __name__ == "__main__":
    main()
