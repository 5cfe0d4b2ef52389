"""Scaling curves (issue 16): throughput, latency, memory and creation time as the load grows,
Kastor and Ray measured in one run, written as a markdown table and a PNG plot.

    python bench/curves.py --ray /opt/rayvenv/bin/python        # Kastor, then Ray, then table + plot
    python bench/curves.py --no-ray --quick                      # tiny sizes, Kastor only (a smoke test)
    python bench/curves.py --max-actors 200 --max-named 3000     # scale the tops down for a small machine

A single figure (`microbench.py`) says how fast one caller is; these say where the runtime bends
when there are more callers, actors, node agents or names. Each backend runs in its own process
(``--backend``), and every point is printed as one line ``CURVE {json}``. The curves:

- ``callers_threads`` / ``callers_procs``: N callers (threads in the driver, or separate driver
  processes) each make synchronous calls ``get(a.f.remote())`` on an actor of their own for
  ``--seconds``: total calls/s and the p50/p99 of one call's latency.
- ``actors``: the actor population grows in steps (1 ... ``--max-actors``). At each step the new
  actors are created at once and each answers a ping (``create_per_s``, against the actors already
  alive), then ``--actor-callers`` threads call every actor in turn (each call goes to a different
  actor) for ``--seconds``: calls/s, p50/p99, the tree's PSS per actor and the head's RSS/PSS. The
  top is also capped by memory: a step is skipped when its actors, at the PSS per actor measured
  so far, would take more than half of MemAvailable.
- ``nodes``: 1 ... ``--max-nodes`` node agents on this one machine (Kastor: extra
  ``kastor.runtime.node_agent`` processes, as tests/gcs_cluster.py starts them; Ray:
  ``ray.cluster_utils.Cluster``), each with 2 logical CPUs and a resource of its own. Measured:
  1,000 no-op tasks spread over the nodes round robin then ``get`` (``tasks_per_s``), and 8 caller
  threads on 8 actors spread over the nodes (``calls_per_s``).
- ``named``: 1 ... ``--max-named`` named actors, then the head's RSS and PSS (Kastor's head
  process; Ray's ``gcs_server``, where Ray keeps actor names) and the p50/p99 of
  ``get_actor(name)`` on random names. Ten thousand live actors do not fit one machine, so these
  actors ask for a resource no node has: each is a full record (spec, name, state PENDING) in the
  head, and ``get_actor`` returns its handle, but no process is started.

The load average is recorded before and after each backend: on a shared machine the rates say
as much about the neighbours as about the runtime, the shapes of the curves less so.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from proctree import descendants, sample

HERE = os.path.dirname(os.path.abspath(__file__))
NAMESPACE = "bench-curves"
MIB = 1 << 20


class Echo:
    """The actor every curve calls: a no-op method, so the runtime's path is all that is timed."""

    def f(self) -> int:
        return 0

    def ping(self) -> int:
        return os.getpid()


def noop() -> int:
    return 0


# ---------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """The x values of each curve and the time spent on each point."""

    callers: list[int]
    proc_callers: list[int]
    actors: list[int]
    nodes: list[int]
    named: list[int]
    seconds: float
    actor_callers: int
    curve_budget_s: float

    @staticmethod
    def from_args(args: argparse.Namespace) -> Sizes:
        if args.quick:
            return Sizes([1, 2], [1, 2], [1, 3], [1, 2], [1, 10, 100], 0.3, 2, 60.0)

        def upto(steps: list[int], top: int) -> list[int]:
            return [s for s in steps if s < top] + [top]

        return Sizes(upto([1, 2, 4, 8, 16, 32], args.max_callers), upto([1, 2, 4, 8, 16, 32], args.max_proc_callers),
                     upto([1, 2, 5, 10, 20, 50, 100, 200, 500, 1000], args.max_actors),
                     upto([1, 2, 4, 8], args.max_nodes), upto([1, 10, 100, 1000, 3000, 10000], args.max_named),
                     args.seconds, args.actor_callers, args.curve_budget)


# ---------------------------------------------------------------- measuring


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


@dataclass
class CallStats:
    """Calls made by some callers over one window: the rate and the latency percentiles."""

    calls: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def point(self) -> dict[str, float]:
        lat = sorted(self.latencies)
        return {"calls_per_s": self.calls / self.seconds if self.seconds else float("nan"),
                "p50_ms": percentile(lat, 0.50) * 1e3, "p99_ms": percentile(lat, 0.99) * 1e3}


def call_loop(rt: ModuleType, actors: list[Any], seconds: float, start: threading.Barrier | None = None,
              ) -> tuple[int, float, list[float]]:
    """Synchronous calls for `seconds`, each on the next actor of `actors` in turn."""
    for a in actors:  # warm: every connection open before the window
        rt.get(a.f.remote())
    if start is not None:
        start.wait()
    lat: list[float] = []
    n, i, t0 = 0, 0, time.perf_counter()
    end = t0 + seconds
    while True:
        c0 = time.perf_counter()
        if c0 >= end:
            break
        rt.get(actors[i].f.remote())
        lat.append(time.perf_counter() - c0)
        n += 1
        i = (i + 1) % len(actors)
    return n, time.perf_counter() - t0, lat


def threaded_calls(rt: ModuleType, groups: list[list[Any]], seconds: float) -> CallStats:
    """One thread per group of actors, all released at once; their calls summed."""
    barrier = threading.Barrier(len(groups))
    results: list[tuple[int, float, list[float]]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(group: list[Any]) -> None:
        try:
            out = call_loop(rt, group, seconds, barrier)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller of threaded_calls
            barrier.abort()
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(out)

    threads = [threading.Thread(target=run, args=(g,), daemon=True) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    stats = CallStats()
    for n, _secs, lat in results:
        stats.calls += n
        stats.latencies.extend(lat)
    # The callers ran side by side over the same window: the rate is their sum.
    stats.seconds = max(secs for _, secs, _ in results)
    return stats


def head_memory(backend: str, head_pid: int | None) -> dict[str, float]:
    """RSS and PSS (MiB) of the process that holds the cluster's actor table."""
    pid = head_pid
    if backend == "ray":
        pid = next((p for p in descendants(os.getpid()) if _comm(p) == "gcs_server"), None)
    if pid is None:
        return {"head_rss_mib": float("nan"), "head_pss_mib": float("nan")}
    out = {"head_rss_mib": float("nan"), "head_pss_mib": float("nan")}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key = {"Rss:": "head_rss_mib", "Pss:": "head_pss_mib"}.get(line.split(":")[0] + ":")
                if key:
                    out[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def mem_available_mib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def emit(backend: str, curve: str, x: int, **values: Any) -> None:
    print("CURVE " + json.dumps({"backend": backend, "curve": curve, "x": x, **values}), flush=True)


def note(backend: str, text: str) -> None:
    print("NOTE " + json.dumps({"backend": backend, "text": text}), flush=True)


# ---------------------------------------------------------------- clusters


class Cluster:
    """A cluster on this machine whose head process is known and which can grow node agents."""

    backend: str
    address: str
    head_pid: int | None

    def add_node(self, index: int) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class KastorCluster(Cluster):
    """A head and node agents started as tests/gcs_cluster.py does, this process the driver."""

    backend = "kastor"

    def __init__(self, rt: ModuleType) -> None:
        from kastor.runtime import auth, launcher

        self._launcher = launcher
        self.tmp = tempfile.mkdtemp(prefix="kastor-curves-")
        token = auth.generate_token()
        self.env = dict(os.environ, KASTOR_TOKEN=token, KASTOR_SESSION_ROOT=os.path.join(self.tmp, "sessions"))
        self.env.pop("KASTOR_ADDRESS", None)
        os.makedirs(os.path.join(self.tmp, "logs"))
        port = launcher.free_port()
        self.address = f"127.0.0.1:{port}"
        self.head = launcher.Child("kastor.runtime.head", ["--port", str(port)], self.env, self._log("head"))
        self.head.wait_ready()
        self.head_pid = self.head.proc.pid
        self.nodes: list[Any] = []
        self.add_node(0)
        os.environ["KASTOR_TOKEN"] = token  # what the driver and the caller processes join with
        rt.init(address=self.address, namespace=NAMESPACE)

    def _log(self, name: str) -> str:
        return os.path.join(self.tmp, "logs", f"{name}.log")

    def add_node(self, index: int) -> None:
        session = os.path.join(self.tmp, f"session-n{index}")
        os.makedirs(os.path.join(session, "logs"))
        args = ["--address", self.address, "--node-id", f"n{index}", "--num-cpus", "2",
                "--session-dir", session, "--resources", json.dumps({f"bn{index}": 1000})]
        child = self._launcher.Child("kastor.runtime.node_agent", args, self.env, self._log(f"n{index}"))
        child.wait_ready()
        self.nodes.append(child)

    def stop(self) -> None:
        for child in [*self.nodes, self.head]:
            child.stop()


class RayCluster(Cluster):
    """`ray.cluster_utils.Cluster`: a head node plus extra raylets, this process the driver."""

    backend = "ray"
    head_pid = None  # found by name (gcs_server) when read

    def __init__(self, rt: ModuleType) -> None:
        from ray.cluster_utils import Cluster as RayUtilsCluster

        self.rt = rt
        self.cluster = RayUtilsCluster(initialize_head=True, head_node_args={
            "num_cpus": 2, "resources": {"bn0": 1000}, "include_dashboard": False})
        rt.init(address=self.cluster.address, namespace=NAMESPACE)
        self.address = self.cluster.address

    def add_node(self, index: int) -> None:
        self.cluster.add_node(num_cpus=2, resources={f"bn{index}": 1000})
        self.cluster.wait_for_nodes()

    def stop(self) -> None:
        self.rt.shutdown()
        self.cluster.shutdown()


@contextmanager
def cluster(backend: str, rt: ModuleType) -> Iterator[Cluster]:
    c: Cluster = KastorCluster(rt) if backend == "kastor" else RayCluster(rt)
    try:
        yield c
    finally:
        if backend == "kastor":
            rt.shutdown()
        c.stop()


# ---------------------------------------------------------------- curves


def curve_callers_threads(rt: ModuleType, c: Cluster, sizes: Sizes) -> None:
    cls = rt.remote(Echo)
    actors = [cls.remote() for _ in range(max(sizes.callers))]
    rt.get([a.ping.remote() for a in actors])
    for n in sizes.callers:
        emit(c.backend, "callers_threads", n, **threaded_calls(rt, [[a] for a in actors[:n]], sizes.seconds).point())
    for a in actors:
        rt.kill(a)


def curve_callers_procs(rt: ModuleType, c: Cluster, sizes: Sizes) -> None:
    cls = rt.remote(Echo)
    top = max(sizes.proc_callers)
    actors = [cls.options(name=f"caller-{i}").remote() for i in range(top)]
    rt.get([a.ping.remote() for a in actors])
    for n in sizes.proc_callers:
        emit(c.backend, "callers_procs", n, **process_calls(c, n, sizes.seconds).point())
    for a in actors:
        rt.kill(a)


def process_calls(c: Cluster, n: int, seconds: float) -> CallStats:
    """`n` driver processes (``--caller``), each on actor ``caller-<i>``, released together."""
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--caller", c.backend, c.address,
                               f"caller-{i}", str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for i in range(n)]
    try:
        for p in procs:  # each says READY once it joined and warmed its connection
            line = p.stdout.readline()
            if line.strip() != "READY":
                raise RuntimeError(f"a caller process did not get ready (said {line!r}, exit {p.poll()})")
        for p in procs:
            p.stdin.write("GO\n")
            p.stdin.flush()
        stats = CallStats()
        for p in procs:
            out = json.loads(p.stdout.readline())
            stats.calls += out["n"]
            stats.seconds = max(stats.seconds, out["seconds"])
            stats.latencies.extend(v / 1e6 for v in out["lat_us"])
        return stats
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(60)


def caller_main(backend: str, address: str, name: str, seconds: float) -> None:
    """One caller process: join, find the named actor, warm up, wait for GO, call for `seconds`."""
    rt = importlib.import_module(backend)
    rt.init(address=address, namespace=NAMESPACE)
    a = rt.get_actor(name)
    for _ in range(20):
        rt.get(a.f.remote())
    print("READY", flush=True)
    sys.stdin.readline()
    n, secs, lat = call_loop(rt, [a], seconds)
    print(json.dumps({"n": n, "seconds": secs, "lat_us": [round(v * 1e6) for v in lat]}), flush=True)
    rt.shutdown()


def curve_actors(rt: ModuleType, c: Cluster, sizes: Sizes) -> None:
    cls = rt.remote(Echo)
    base = sample().pss_mib
    live: list[Any] = []
    t_start = time.monotonic()
    for target in sizes.actors:
        new = target - len(live)
        if live:
            per_actor = (sample().pss_mib - base) / len(live)
            need, have = new * per_actor, mem_available_mib()
            if need > have / 2:
                note(c.backend, f"actors: stopped before {target}: {new} more at {per_actor:.1f} MiB each need "
                                f"{need:.0f} MiB, more than half of MemAvailable ({have:.0f} MiB)")
                break
        if time.monotonic() - t_start > sizes.curve_budget_s:
            note(c.backend, f"actors: stopped before {target}: the curve's budget of {sizes.curve_budget_s:.0f} s "
                            f"is spent (--curve-budget)")
            break
        t0 = time.perf_counter()
        batch = [cls.remote() for _ in range(new)]
        rt.get([a.ping.remote() for a in batch], timeout=300)
        create_per_s = new / (time.perf_counter() - t0)
        alive_before = len(live)
        live.extend(batch)
        callers = min(sizes.actor_callers, len(live))
        groups = [live[i::callers] for i in range(callers)]
        stats = threaded_calls(rt, groups, sizes.seconds)
        emit(c.backend, "actors", target, **stats.point(), create_per_s=create_per_s, alive_before=alive_before,
             pss_per_actor_mib=(sample().pss_mib - base) / len(live), **head_memory(c.backend, c.head_pid))
    for a in live:
        rt.kill(a)


def curve_nodes(rt: ModuleType, c: Cluster, sizes: Sizes) -> None:
    task = rt.remote(noop)
    cls = rt.remote(Echo)
    have = 1
    for k in sizes.nodes:
        while have < k:
            c.add_node(have)
            have += 1
        wait_for_nodes(rt, k)
        # 8 actors, actor i on node i % k, and 8 threads on them
        actors = [cls.options(num_cpus=0, resources={f"bn{i % k}": 1}).remote() for i in range(8)]
        rt.get([a.ping.remote() for a in actors], timeout=600)
        stats = threaded_calls(rt, [[a] for a in actors], sizes.seconds)
        shapes = [task.options(resources={f"bn{i % k}": 1}) for i in range(k)]

        def batch(shapes: list[Any] = shapes) -> int:
            return len(rt.get([shapes[i % len(shapes)].remote() for i in range(1000)], timeout=600))

        batch()  # warm: leases on every node
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < sizes.seconds:
            n += batch()
        tasks_per_s = n / (time.perf_counter() - t0)
        emit(c.backend, "nodes", k, calls_per_s=stats.point()["calls_per_s"], p50_ms=stats.point()["p50_ms"],
             p99_ms=stats.point()["p99_ms"], tasks_per_s=tasks_per_s)
        for a in actors:
            rt.kill(a)


def wait_for_nodes(rt: ModuleType, k: int, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while sum(1 for n in rt.nodes() if n.get("Alive")) < k:
        if time.monotonic() > end:
            alive = sum(1 for n in rt.nodes() if n.get("Alive"))
            raise RuntimeError(f"only {alive} of {k} node agents joined within {timeout} s")
        time.sleep(0.2)  # polling the node table: a benchmark waiting for its own setup


def curve_named(rt: ModuleType, c: Cluster, sizes: Sizes) -> None:
    cls = rt.remote(Echo)
    names: list[str] = []
    handles: list[Any] = []  # held: a named actor whose last handle is dropped is collected (as in Ray)
    before = head_memory(c.backend, c.head_pid)
    emit(c.backend, "named", 0, **before)
    t_start = time.monotonic()
    for target in sizes.named:
        if time.monotonic() - t_start > sizes.curve_budget_s:
            note(c.backend, f"named: stopped before {target}: the curve's budget of {sizes.curve_budget_s:.0f} s "
                            f"is spent (--curve-budget)")
            break
        t0, before_n = time.perf_counter(), len(names)
        while len(names) < target:
            name = f"named-{len(names)}"
            handles.append(cls.options(name=name, resources={"bench_no_node_has_this": 1}).remote())
            names.append(name)
        lookups = min(200, 20 * len(names))
        wait_for_name(rt, names[-1])
        register_per_s = (target - before_n) / max(time.perf_counter() - t0, 1e-9)
        lat = []
        for _ in range(lookups):
            name = random.choice(names)
            g0 = time.perf_counter()
            rt.get_actor(name)
            lat.append(time.perf_counter() - g0)
        lat.sort()
        emit(c.backend, "named", target, get_actor_p50_ms=percentile(lat, 0.5) * 1e3,
             get_actor_p99_ms=percentile(lat, 0.99) * 1e3, register_per_s=register_per_s,
             **head_memory(c.backend, c.head_pid))


def wait_for_name(rt: ModuleType, name: str, timeout: float = 600.0) -> None:
    """Until `name` resolves: a creation may reach the head after `.remote()` returns (Kastor), so
    the registration rate counts until the newest name is found."""
    end = time.monotonic() + timeout
    while True:
        try:
            rt.get_actor(name)
            return
        except ValueError:
            if time.monotonic() > end:
                raise
            time.sleep(0.01)  # polling the head for its own setup


CURVES: dict[str, Callable[[ModuleType, Cluster, Sizes], None]] = {
    "callers_threads": curve_callers_threads,
    "callers_procs": curve_callers_procs,
    "actors": curve_actors,
    "nodes": curve_nodes,
    "named": curve_named,  # last: its pending actors stay in the head
}


def run_backend(backend: str, sizes: Sizes, curves: list[str]) -> None:
    rt = importlib.import_module(backend)
    print(f"NOTE {json.dumps({'backend': backend, 'text': f'version {rt.__version__}, loadavg {loadavg()} at start'})}",
          flush=True)
    with cluster(backend, rt) as c:
        for name in curves:
            t0 = time.monotonic()
            try:
                CURVES[name](rt, c, sizes)
            except Exception as exc:  # record where it broke and go on with the next curve
                note(backend, f"{name}: failed: {type(exc).__name__}: {str(exc)[:300]}")
            note(backend, f"{name}: {time.monotonic() - t0:.0f} s, loadavg {loadavg()} after")


# ---------------------------------------------------------------- report


def parse_lines(lines: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    points, notes = [], []
    for line in lines:
        if line.startswith("CURVE "):
            points.append(json.loads(line[6:]))
        elif line.startswith("NOTE "):
            notes.append(json.loads(line[5:]))
    return points, notes


def run_child(python: str, backend: str, argv: list[str]) -> list[str]:
    """`--backend <backend>` under `python` (outside the repo root, so `operator/` shadows nothing)."""
    cmd = [python, os.path.abspath(__file__), "--backend", backend, *argv]
    lines: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir()) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    if proc.returncode:
        lines.append("NOTE " + json.dumps({"backend": backend, "text": f"exited with code {proc.returncode}"}))
    return lines


METRIC_ORDER = ["calls_per_s", "p50_ms", "p99_ms", "tasks_per_s", "create_per_s", "alive_before",
                "pss_per_actor_mib", "register_per_s", "get_actor_p50_ms", "get_actor_p99_ms",
                "head_rss_mib", "head_pss_mib"]
RATIO = {"calls_per_s", "tasks_per_s", "create_per_s"}  # kastor/ray printed beside these
X_LABEL = {"callers_threads": "caller threads", "callers_procs": "caller processes", "actors": "actors alive",
           "nodes": "node agents", "named": "named actors"}


def fmt(v: Any) -> str:
    if v is None or v != v:
        return "–"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def markdown(points: list[dict[str, Any]], notes: list[dict[str, str]], header: list[str]) -> str:
    backends = [b for b in ("kastor", "ray") if any(p["backend"] == b for p in points)]
    out = [*header, ""]
    for curve in CURVES:
        rows = [p for p in points if p["curve"] == curve]
        if not rows:
            continue
        metrics = [m for m in METRIC_ORDER if any(m in p for p in rows)]
        cols = []
        for m in metrics:
            cols += [(m, b) for b in backends]
            if m in RATIO and len(backends) == 2:
                cols.append((m, "ratio"))
        out += [f"### {curve} (x: {X_LABEL[curve]})", "",
                "| x | " + " | ".join(f"{m} {b if b != 'ratio' else 'kastor/ray'}" for m, b in cols) + " |",
                "| ---: | " + " | ".join("---:" for _ in cols) + " |"]
        by = {(p["backend"], p["x"]): p for p in rows}
        for x in sorted({p["x"] for p in rows}):
            cells = []
            for m, b in cols:
                if b == "ratio":
                    k, r = by.get(("kastor", x), {}).get(m), by.get(("ray", x), {}).get(m)
                    cells.append(f"{k / r:.2f}x" if k and r and k == k and r == r else "–")
                else:
                    cells.append(fmt(by.get((b, x), {}).get(m)))
            out.append(f"| {x:,} | " + " | ".join(cells) + " |")
        out.append("")
    if notes:
        out += ["### Notes", ""] + [f"- {n['backend']}: {n['text']}" for n in notes] + [""]
    return "\n".join(out)


PLOTS = [  # (curve, metric, axis title)
    ("callers_threads", "calls_per_s", "sync calls/s vs caller threads"),
    ("callers_procs", "calls_per_s", "sync calls/s vs caller processes"),
    ("callers_threads", "p99_ms", "p50 (dashed) / p99 ms vs caller threads"),
    ("actors", "calls_per_s", "sync calls/s vs actors alive"),
    ("actors", "create_per_s", "creations/s vs actors alive"),
    ("nodes", "tasks_per_s", "tasks/s (solid), calls/s (dashed) vs node agents"),
    ("named", "head_pss_mib", "head PSS MiB vs named actors"),
    ("named", "get_actor_p50_ms", "get_actor p50 (solid) / p99 (dashed) ms"),
]
SECOND = {("callers_threads", "p99_ms"): "p50_ms", ("nodes", "tasks_per_s"): "calls_per_s",
          ("named", "get_actor_p50_ms"): "get_actor_p99_ms"}


def plot(points: list[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(20, 9))
    colors = {"kastor": "tab:blue", "ray": "tab:orange"}
    for ax, (curve, metric, label) in zip(axes.flat, PLOTS, strict=True):
        for backend, color in colors.items():
            rows = sorted((p for p in points if p["curve"] == curve and p["backend"] == backend
                           and p["x"] > 0 and metric in p), key=lambda p: p["x"])
            if not rows:
                continue
            ax.plot([p["x"] for p in rows], [p[metric] for p in rows], "o-", color=color, label=backend)
            other = SECOND.get((curve, metric))
            if other:
                ax.plot([p["x"] for p in rows], [p.get(other, float("nan")) for p in rows], "s--", color=color)
        ax.set_xscale("log")
        if curve == "named" or metric.endswith("_ms"):
            ax.set_yscale("log")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ray", metavar="PYTHON", help="an interpreter with ray installed: Ray is measured too")
    ap.add_argument("--no-ray", action="store_true", help="Kastor only")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and 0.4 s per point (a smoke test)")
    ap.add_argument("--curves", default=",".join(CURVES), help=f"comma-separated subset of {','.join(CURVES)}")
    ap.add_argument("--max-callers", type=int, default=32, help="top of the caller-threads curve")
    ap.add_argument("--max-proc-callers", type=int, default=32, help="top of the caller-processes curve")
    ap.add_argument("--max-actors", type=int, default=1000, help="top of the actors curve (memory caps it too)")
    ap.add_argument("--max-nodes", type=int, default=8, help="top of the node-agents curve")
    ap.add_argument("--max-named", type=int, default=10_000, help="top of the named-actors curve")
    ap.add_argument("--actor-callers", type=int, default=4, help="caller threads in the actors curve")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each throughput window")
    ap.add_argument("--curve-budget", type=float, default=600.0,
                    help="seconds after which the actors and named curves stop growing")
    ap.add_argument("--out", default=HERE, help="directory for results-curves-DATE.md and .png")
    ap.add_argument("--report", metavar="LOG", help="write the table and plot from the saved output of a run")
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--caller", nargs=4, metavar=("BACKEND", "ADDRESS", "NAME", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.caller:
        backend, address, name, seconds = args.caller
        caller_main(backend, address, name, float(seconds))
        return
    sizes = Sizes.from_args(args)
    curves = [c for c in args.curves.split(",") if c]
    unknown = set(curves) - set(CURVES)
    if unknown:
        ap.error(f"unknown curve(s) {sorted(unknown)}; choose from {','.join(CURVES)}")
    if args.backend:
        run_backend(args.backend, sizes, curves)
        return
    if args.report:
        with open(args.report) as f:
            lines = f.readlines()
        start = next((json.loads(line[5:])["text"] for line in lines if line.startswith("NOTE ")), "")
        write_report(lines, args, [f"load averages in the notes below; {start}"])
        return
    if not args.no_ray and not args.ray:
        ap.error("pass --ray /path/to/python (an interpreter with ray installed) or --no-ray")
    passthrough = ["--curves", ",".join(curves), "--max-callers", str(args.max_callers),
                   "--max-proc-callers", str(args.max_proc_callers), "--max-actors", str(args.max_actors),
                   "--max-nodes", str(args.max_nodes), "--max-named", str(args.max_named),
                   "--actor-callers", str(args.actor_callers), "--seconds", str(args.seconds),
                   "--curve-budget", str(args.curve_budget)] + (["--quick"] if args.quick else [])
    loads = [f"load average (1, 5, 15 min) at start: {loadavg()}"]
    lines = run_child(sys.executable, "kastor", passthrough)
    loads.append(f"after Kastor: {loadavg()}")
    if args.ray:
        lines += run_child(args.ray, "ray", passthrough)
        loads.append(f"after Ray: {loadavg()}")
    write_report(lines, args, loads)


def write_report(lines: list[str], args: argparse.Namespace, loads: list[str]) -> None:
    points, notes = parse_lines(lines)
    date = time.strftime("%Y-%m-%d")
    stem = os.path.join(args.out, f"results-curves-{date}{'-quick' if args.quick else ''}")
    header = [f"# Scaling curves, {time.strftime('%Y-%m-%d %H:%M %Z')}", "",
              f"`python bench/curves.py {' '.join(sys.argv[1:])}` on {os.cpu_count()} cores, "
              f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (1 << 30):.0f} GiB; "
              f"{'; '.join(loads)}. The machine is shared with other sessions' tests: "
              f"rates depend on their load, memory does not. Plot: `{os.path.basename(stem)}.png`."]
    text = markdown(points, notes, header)
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)  # --out may name a directory not made yet
    with open(stem + ".md", "w") as f:
        f.write(text)
    print("\n" + text)
    try:
        plot(points, stem + ".png", f"Kastor vs Ray scaling curves, {date} ({os.cpu_count()} cores, shared)")
        print(f"# wrote {stem}.md and {stem}.png")
    except ImportError:
        print(f"# wrote {stem}.md; no plot: matplotlib is missing (pip install -e '.[bench]')")

if __name__ == "__main__":
    main()
