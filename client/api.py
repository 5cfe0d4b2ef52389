"""The module-level API: init, get, wait, put, kill, cancel, get_actor, shutdown, ..."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kastor import exceptions
from kastor.actor import ActorClass, ActorHandle, actor_id_of, handle_from_info
from kastor.object_ref import ObjectRef
from kastor.object_ref_generator import ObjectRefGenerator
from kastor.remote_function import RemoteFunction
from kastor.runtime import context, submission
from kastor.session import ClusterInfo, init, is_initialized, shutdown
from kastor.session import current_core as _core

log = logging.getLogger("kastor")


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
    """Stores a copy of the value in the cluster; returns its ref.

    A store with no room raises ObjectStoreFullError. Through the client port (kastor://) a
    large value is kept on the notebook and uploaded the first time the cluster needs it
    (docs/notebooks.md): that error then comes from the submission that passes the ref on."""
    return _core(auto_init=True).put(value)


def kill(actor: ActorHandle, *, no_restart: bool = True, keep_state: bool = False) -> None:
    """Kills the actor's process at once; with no_restart=False it restarts per max_restarts.

    As Ray's, it returns once the head has marked the actor DEAD, while its node stops the
    worker: this process's later calls fail with ActorDiedError from then on (docs/semantics.md).

    An actor with durable state (`state=kastor.state.Checkpoint(...)`) killed for good also loses
    its checkpoint, unless `keep_state=True`: then a new actor of the same name resumes from it."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() only applies to actor handles, got {type(actor).__name__}; "
                        f"for tasks use kastor.cancel().")
    submission.kill_actor(_core(), actor_id_of(actor), no_restart, "killed by kastor.kill()",
                          delete_state=no_restart and not keep_state)


def cancel(object_ref: ObjectRef | ObjectRefGenerator, *, force: bool = False, recursive: bool = True) -> None:
    """Cancels the task behind the ref (or generator): its `get` raises TaskCancelledError."""
    if isinstance(object_ref, ObjectRefGenerator):
        object_ref = object_ref.completed()
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef or ObjectRefGenerator, got {type(object_ref).__name__}.")
    submission.cancel(_core(), object_ref.task_id(), object_ref.owner_address, force, recursive)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of a live named actor; ValueError if there is none by that name."""
    if not isinstance(name, str) or not name:
        raise ValueError("get_actor() needs a non-empty actor name.")
    core = _core()
    ns = namespace if namespace is not None else core.current_namespace()
    info = submission.lookup_actor(core, name, ns)
    if info is None:
        raise ValueError(f"Failed to look up actor with name '{name}' in namespace '{ns}': no live actor has that "
                         f"name there. It may have died, or it lives in another namespace (pass namespace=...).")
    return handle_from_info(info)


def get_runtime_context():
    """Who and where the calling code is: job, node, worker, task and actor ids, names and namespace."""
    from kastor.runtime_context import RuntimeContext
    return RuntimeContext(_core())


def get_gpu_ids() -> list[int]:
    """The GPUs assigned to the calling task or actor (its `CUDA_VISIBLE_DEVICES`); [] in a driver."""
    task = context.current_task.get()
    return list(task.gpu_ids) if task else []


def nodes() -> list[dict[str, Any]]:
    """The head's node table, one dict per node in Ray's shape (`NodeID`, `Alive`, `Resources`,
    `Labels`, ...)."""
    return [{"NodeID": n.node_id, "Alive": n.alive, "NodeManagerAddress": n.ip, "Address": n.address,
             "Resources": dict(n.total), "Labels": dict(n.labels)} for n in submission.list_nodes(_core())]


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
    out: dict[str, float] = {}
    for n in submission.list_nodes(_core()):
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
