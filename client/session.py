"""The process's session with a cluster: init(), shutdown(), and the current core worker.

One place owns connecting and disconnecting (an embedded local cluster, a head's address, a
remote client port, or an ActorCluster found through Kubernetes), so the public modules that
need the core (actor, remote_function, the generators, util) import this module instead of
reaching back into api.py.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kastor import options as opts
from kastor.runtime import auth, context, settings

if TYPE_CHECKING:
    from kastor.runtime.core import CoreWorker

log = logging.getLogger("kastor")

# Ray keywords that have no meaning on Kastor (or not yet); accepted so Ray programs run.
_IGNORED_INIT_KWARGS = {
    "include_dashboard", "dashboard_host", "dashboard_port", "object_store_memory",
    "_system_config", "configure_logging", "logging_format", "logging_config", "local_mode", "_temp_dir",
    "storage", "_node_ip_address", "_plasma_directory", "_memory",
    "_enable_object_reconstruction",
}

_lock = threading.RLock()
_local_cluster = None
_port_forward = None  # a `kubectl port-forward` that init(cluster=...) opened


@dataclass
class ClusterInfo(Mapping):
    """What `init()` returns; usable as a context manager that shuts down on exit, and, as Ray's
    RayContext, as a read-only mapping of its `address_info` (`info["address"]`)."""

    address: str
    namespace: str
    job_id: str
    address_info: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> str:
        return self.address_info[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.address_info)

    def __len__(self) -> int:
        return len(self.address_info)

    def __enter__(self) -> ClusterInfo:
        return self

    def __exit__(self, *exc: object) -> None:
        shutdown()

    def disconnect(self) -> None:
        shutdown()


def init(address: str | None = None, *, num_cpus: float | None = None, num_gpus: float | None = None,
         resources: dict[str, float] | None = None, memory: float | None = None, namespace: str | None = None,
         token: str | None = None, ignore_reinit_error: bool = False, logging_level: int = logging.INFO,
         cluster: str | None = None, k8s_namespace: str | None = None, kube_context: str | None = None,
         log_to_driver: bool = True, runtime_env: dict[str, Any] | None = None,
         labels: dict[str, str] | None = None, **kwargs: Any) -> ClusterInfo:
    """Starts an embedded local cluster, or joins one at `address` (or KASTOR_ADDRESS).

    `address` is the head's `host:port` for a driver inside the cluster network, or
    `kastor://host:port` (the head's client port, 10001 by default) for one outside it, such
    as a notebook: every call then travels through that one port. `cluster="name"` (with
    `k8s_namespace`, `kube_context`) finds an ActorCluster through the Kubernetes API instead:
    its client address and token, and a `kubectl port-forward` when its Service is not
    reachable from here.

    With `log_to_driver` (the default, as in Ray) whatever this job's tasks and actors print
    is printed here too, prefixed `(name pid=N)`. `runtime_env` applies to all of the job's tasks
    and actors (theirs override it field by field, env_vars merged): `env_vars`, `working_dir`
    (a local directory, uploaded; workers start in it), `py_modules` (local packages, .py or
    .whl files, put on workers' sys.path), `excludes`, and `pip`/`uv` (a per-node virtualenv).

    `labels` are the embedded cluster's node labels, which `label_selector=` picks nodes by
    (as Ray's `ray.init(labels=...)`); a cluster's nodes get theirs from `kastor start --labels`.

    Of Ray's `_system_config`, the embedded cluster reads the spilling keys
    (`object_spilling_config` with a `filesystem` directory, `automatic_object_spilling_enabled`;
    see docs/semantics.md, Object spilling); the other keys are ignored.
    """
    global _local_cluster
    job_config = kwargs.pop("job_config", None)
    unknown = set(kwargs) - _IGNORED_INIT_KWARGS
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    if job_config is not None:  # Ray's JobConfig: explicit arguments to init() win over it
        namespace = namespace or job_config.ray_namespace
        runtime_env = runtime_env if runtime_env is not None else job_config.runtime_env
    job_env = opts.env_vars(runtime_env)
    with _lock:
        if context.core is not None:
            if ignore_reinit_error or context.core.engine is not None:
                return _info()
            raise RuntimeError("Maybe you called kastor.init twice by accident? Kastor is already initialized; "
                               "pass ignore_reinit_error=True, or call kastor.shutdown() first.")
        from kastor.runtime import driver
        if cluster is not None:
            if address is not None:
                raise ValueError("Pass either address= or cluster=, not both.")
            _connect_to_actor_cluster(cluster, k8s_namespace, kube_context, token, namespace, log_to_driver)
            return _joined(job_env, runtime_env)
        address = address or settings.ADDRESS.get()
        if address in (None, "", "local"):
            from kastor.runtime.local_cluster import LocalCluster
            if num_cpus is not None and num_cpus < 0:
                raise ValueError(f"num_cpus must be >= 0, got {num_cpus}")
            from kastor.runtime.node_labels import check_node_labels
            from kastor.runtime.spilling import from_ray_system_config
            node_labels = check_node_labels(labels or {}, "init(labels=...)")
            spilling, spill_dir = from_ray_system_config(kwargs.get("_system_config"))
            _local_cluster = LocalCluster(num_cpus=num_cpus, num_gpus=num_gpus, memory=memory, resources=resources,
                                          labels=node_labels, object_spilling=spilling,
                                          object_spilling_directory=spill_dir)
            try:
                driver.connect(_local_cluster.head_address, _local_cluster.token, namespace,
                               node_address=_local_cluster.node_address, log_to_driver=log_to_driver)
            except BaseException:
                _local_cluster.stop()
                _local_cluster = None
                raise
        else:
            if any(v is not None for v in (num_cpus, num_gpus, resources, memory, labels)):
                raise ValueError("num_cpus/num_gpus/resources/memory/labels describe a new local cluster; when "
                                 "joining one at an address, give them to `kastor start` on its nodes instead.")
            _check_scheme(address)
            remote = address.startswith("kastor://")
            address = address.removeprefix("kastor://")
            if address == "auto":
                address, token = _latest_local_session(token)
            token = auth.resolve_token(token)
            if not token:
                raise ValueError(f"No cluster token to join {address}: pass token=..., or set KASTOR_TOKEN "
                                 f"or KASTOR_TOKEN_FILE.")
            if remote:
                driver.connect_remote(address, token, namespace, log_to_driver=log_to_driver)
            else:
                driver.connect(address, token, namespace, log_to_driver=log_to_driver)
        return _joined(job_env, runtime_env)


def _check_scheme(address: str) -> None:
    """Only `host:port` and `kastor://host:port` are addresses; name the fix for anything else."""
    scheme = address.split("://", 1)[0] if "://" in address else None
    if scheme in (None, "kastor"):
        return
    hint = (" Ray Client's ray://host:10001 is Kastor's kastor://host:10001 (the head's client port): "
            f"kastor.init({'kastor://' + address.split('://', 1)[1]!r})." if scheme == "ray" else "")
    raise ValueError(f"Unsupported address {address!r}: use 'host:port' (the head, from inside the cluster "
                     f"network) or 'kastor://host:port' (the head's client port, from anywhere else).{hint}")


def _joined(job_env: dict[str, str], runtime_env: dict[str, Any] | None) -> ClusterInfo:
    """The last step of init(), however the driver connected: the job's runtime_env, its
    working_dir and py_modules packed and uploaded through the head (kastor.runtime.runtime_env)."""
    from kastor.runtime import runtime_env as renv
    context.core.env_vars = job_env
    try:
        context.core.runtime_env = renv.resolve(context.core, {k: v for k, v in (runtime_env or {}).items()
                                                               if k != "env_vars"})
    except BaseException:
        shutdown()
        raise
    atexit.register(shutdown)
    return _info()


def _connect_to_actor_cluster(cluster: str, k8s_namespace: str | None, kube_context: str | None,
                              token: str | None, namespace: str | None, log_to_driver: bool) -> None:
    global _port_forward
    from kastor.runtime import driver, k8s_discovery
    found = k8s_discovery.find(cluster, k8s_namespace, kube_context)
    try:
        driver.connect_remote(found.address, token or found.token, namespace, log_to_driver=log_to_driver)
    except BaseException:
        if found.port_forward is not None:
            found.port_forward.kill()
        raise
    _port_forward = found.port_forward


def _latest_local_session(token: str | None) -> tuple[str, str | None]:
    from kastor.runtime import sessions
    record = sessions.latest()
    if record is None:
        raise ConnectionError("address='auto' found no cluster started with `kastor start` on this machine.")
    return record["address"], token or sessions.read_token(record)


def _info() -> ClusterInfo:
    core = context.core
    return ClusterInfo(address=core.head_address, namespace=core.namespace, job_id=core.job_id.hex(),
                       address_info={"address": core.head_address, "gcs_address": core.head_address,
                                     "node_id": core.node_id, "namespace": core.namespace,
                                     "job_id": core.job_id.hex()})


def is_initialized() -> bool:
    """Whether this process is connected to a cluster (`init` was called and not yet `shutdown`)."""
    return context.core is not None


def shutdown() -> None:
    """Disconnects the driver; an embedded cluster is stopped with it."""
    global _local_cluster, _port_forward
    with _lock:
        core = context.core
        if core is None or core.engine is not None:
            return
        context.core = None
        from kastor.runtime import driver
        driver.disconnect(core)
        if _local_cluster is not None:
            _local_cluster.stop()
            _local_cluster = None
        if _port_forward is not None:
            _port_forward.terminate()
            _port_forward.wait(10)
            _port_forward = None


def current_core(auto_init: bool = False) -> CoreWorker:
    """The process's core worker; with `auto_init`, init() first if there is none (as Ray's
    put and .remote() do), else a RuntimeError naming the fix."""
    core = context.core
    if core is None:
        if not auto_init:
            raise RuntimeError("Kastor is not initialized: call kastor.init() first.")
        init()
        core = context.core
    return core
