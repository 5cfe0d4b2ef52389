"""The module-level API: init, get, wait, put, kill, cancel, get_actor, shutdown, ..."""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kastor import exceptions
from kastor import options as opts
from kastor.actor import ActorClass, ActorHandle
from kastor.object_ref import ObjectRef
from kastor.object_ref_generator import ObjectRefGenerator
from kastor.remote_function import RemoteFunction
from kastor.runtime import auth, context, settings
from kastor.runtime.protocol import kastor_pb2 as pb

log = logging.getLogger("kastor")

# Ray keywords that have no meaning on Kastor (or not yet); accepted so Ray programs run.
_IGNORED_INIT_KWARGS = {
    "include_dashboard", "dashboard_host", "dashboard_port", "object_store_memory",
    "_system_config", "configure_logging", "logging_format", "logging_config", "local_mode", "_temp_dir",
    "storage", "_node_ip_address", "labels", "_plasma_directory", "_memory",
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
         log_to_driver: bool = True, runtime_env: dict[str, Any] | None = None, **kwargs: Any) -> ClusterInfo:
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
            _local_cluster = LocalCluster(num_cpus=num_cpus, num_gpus=num_gpus, memory=memory, resources=resources)
            try:
                driver.connect(_local_cluster.head_address, _local_cluster.token, namespace,
                               node_address=_local_cluster.node_address, log_to_driver=log_to_driver)
            except BaseException:
                _local_cluster.stop()
                _local_cluster = None
                raise
        else:
            if any(v is not None for v in (num_cpus, num_gpus, resources, memory)):
                raise ValueError("num_cpus/num_gpus/resources/memory describe a new local cluster; when joining "
                                 "one at an address, give them to `kastor start` on its nodes instead.")
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


def _core(auto_init: bool = False):
    core = context.core
    if core is None:
        if not auto_init:
            raise RuntimeError("Kastor is not initialized: call kastor.init() first.")
        init()
        core = context.core
    return core


def remote(*args: Any, **options: Any):
    """Makes a function a remote function, or a class an actor class (with or without options)."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args or not options:  # Ray refuses `@ray.remote()` too: it is almost always a forgotten option
        raise TypeError("The @kastor.remote decorator must be used either bare ('@kastor.remote') or with "
                        "keyword options only ('@kastor.remote(num_cpus=1)').")
    return lambda target: _make_remote(target, options)


def _make_remote(target: Any, options: dict[str, Any]):
    if isinstance(target, type):
        return ActorClass(target, options)
    if callable(target):
        return RemoteFunction(target, options)
    raise TypeError(f"@kastor.remote applies to functions and classes, not {type(target).__name__}.")


def _as_ref_list(object_refs: Any, api: str) -> tuple[list[ObjectRef], bool]:
    if isinstance(object_refs, ObjectRef):
        return [object_refs], True
    if isinstance(object_refs, (list, tuple)) and all(isinstance(r, ObjectRef) for r in object_refs):
        return list(object_refs), False
    raise TypeError(f"{api}() expects an ObjectRef or a list of ObjectRefs, got {type(object_refs).__name__}"
                    + (" containing non-ObjectRef items" if isinstance(object_refs, (list, tuple)) else "") + ".")


def get(object_refs: ObjectRef | Sequence[ObjectRef], *, timeout: float | None = None) -> Any:
    """The values of the refs, blocking until ready; raises the remote error if any failed."""
    refs, single = _as_ref_list(object_refs, "get")
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
    values = _core().get(refs, timeout)
    return values[0] if single else values


def wait(object_refs: Sequence[ObjectRef], *, num_returns: int = 1, timeout: float | None = None,
         fetch_local: bool = True) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Splits refs into (ready, not ready), both in input order, once num_returns are ready."""
    if isinstance(object_refs, ObjectRef):
        raise TypeError("wait() expects a list of ObjectRefs, not a single ObjectRef.")
    refs, _ = _as_ref_list(object_refs, "wait")
    if len(set(refs)) != len(refs):
        raise ValueError("wait() requires a list of unique ObjectRefs.")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns < 1:
        raise ValueError(f"num_returns must be a positive integer, got {num_returns!r}.")
    if num_returns > len(refs):
        raise ValueError(f"num_returns ({num_returns}) cannot exceed the number of refs ({len(refs)}).")
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
    return _core().wait(refs, num_returns, timeout, fetch_local)


def put(value: Any, *, _owner: Any = None) -> ObjectRef:
    """Stores a copy of the value in the cluster; returns its ref."""
    return _core(auto_init=True).put(value)


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kills the actor's process at once; with no_restart=False it restarts per max_restarts."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() only applies to actor handles, got {type(actor).__name__}; "
                        f"for tasks use kastor.cancel().")
    core = _core()
    core.run(core.actors.kill(actor._actor_id, no_restart, "killed by kastor.kill()"))


def cancel(object_ref: ObjectRef | ObjectRefGenerator, *, force: bool = False, recursive: bool = True) -> None:
    """Cancels the task behind the ref (or generator): its `get` raises TaskCancelledError."""
    if isinstance(object_ref, ObjectRefGenerator):
        object_ref = object_ref.completed()
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef or ObjectRefGenerator, got {type(object_ref).__name__}.")
    from kastor.runtime import cancel as cancelling
    core = _core()
    core.run(cancelling.cancel(core, object_ref.task_id(), object_ref.owner_address, force, recursive))


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of a live named actor; ValueError if there is none by that name."""
    if not isinstance(name, str) or not name:
        raise ValueError("get_actor() needs a non-empty actor name.")
    core = _core()
    ns = namespace if namespace is not None else core.current_namespace()
    reply = core.head_call("GetActor", pb.GetActorRequest(name=name, namespace=ns))
    if not reply.found or reply.info.state == pb.DEAD:
        raise ValueError(f"Failed to look up actor with name '{name}' in namespace '{ns}': no live actor has that "
                         f"name there. It may have died, or it lives in another namespace (pass namespace=...).")
    return ActorHandle._from_info(reply.info)


def get_runtime_context():
    """Who and where the calling code is: job, node, worker, task and actor ids, names and namespace."""
    from kastor.runtime_context import RuntimeContext
    return RuntimeContext(_core())


def get_gpu_ids() -> list[int]:
    """The GPUs assigned to the calling task or actor (its `CUDA_VISIBLE_DEVICES`); [] in a driver."""
    task = context.current_task.get()
    return list(task.gpu_ids) if task else []


def nodes() -> list[dict[str, Any]]:
    """The head's node table, one dict per node in Ray's shape (`NodeID`, `Alive`, `Resources`, ...)."""
    core = _core()
    reply = core.head_call("ListNodes", pb.ListRequest())
    return [{"NodeID": n.node_id, "Alive": n.alive, "NodeManagerAddress": n.ip, "Address": n.address,
             "Resources": dict(n.total)} for n in reply.nodes]


def cluster_resources() -> dict[str, float]:
    """The total resources of the alive nodes, summed (as `ray.cluster_resources()`)."""
    return _sum_resources("Resources")


def timeline(filename: str | None = None) -> list[dict[str, Any]] | None:
    """Ray's Chrome-trace timeline (open it in chrome://tracing or Perfetto), of the tasks and
    actor calls this process submitted: one event per call that reached a worker, from when it
    was sent to it until its result came back (runtime/task_events.py). Ray's covers the whole
    cluster; Kastor keeps no cluster-wide task table. With `filename`, writes the JSON there."""
    import json

    from kastor.runtime import task_events
    events = task_events.chrome_trace()
    if filename is None:
        return events
    with open(filename, "w") as f:
        json.dump(events, f)
    return None


def available_resources() -> dict[str, float]:
    """The resources free right now, summed over the alive nodes (as `ray.available_resources()`)."""
    core = _core()
    reply = core.head_call("ListNodes", pb.ListRequest())
    out: dict[str, float] = {}
    for n in reply.nodes:
        if n.alive:
            for k, v in n.available.items():
                out[k] = out.get(k, 0.0) + v
    return out


def _sum_resources(key: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in nodes():
        if n["Alive"]:
            for k, v in n[key].items():
                out[k] = out.get(k, 0.0) + v
    return out


__all__ = [
    "init", "shutdown", "is_initialized", "remote", "get", "wait", "put", "kill", "cancel", "get_actor",
    "get_runtime_context", "get_gpu_ids", "nodes", "cluster_resources", "available_resources", "ClusterInfo",
    "exceptions",
]
