"""Remote functions: `@kastor.remote def f(...)`, then `f.remote(...)` returns ObjectRefs."""

from __future__ import annotations

import functools
from typing import Any

from kastor import options as opts
from kastor import signature
from kastor.object_ref import ObjectRef
from kastor.object_ref_generator import STREAMING, returned, yields
from kastor.runtime.protocol import kastor_pb2 as pb

_DEFAULTS = {"num_returns": 1, "max_retries": 3, "retry_exceptions": False}


class RemoteFunction:
    def __init__(self, function: Any, options: dict[str, Any]):
        self._function = function
        defaults = {**_DEFAULTS, "num_returns": STREAMING} if yields(function) else _DEFAULTS
        self._options = {**defaults, **opts.validate(options, for_actor=False)}
        self._name = getattr(function, "__qualname__", getattr(function, "__name__", "function"))
        self._signature = signature.of_callable(function)
        self._ids: dict[int, str] = {}
        functools.update_wrapper(self, function)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Remote functions cannot be called directly. Instead of running "
                        f"'{self._name}()', try '{self._name}.remote()'.")

    def remote(self, *args, **kwargs) -> Any:
        return self._submit(args, kwargs, self._options)

    def _remote(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        """Ray's lower-level form: `f._remote(args=[...], kwargs={...}, num_returns=2, ...)`."""
        merged = {**self._options, **opts.validate(options, for_actor=False)} if options else self._options
        return self._submit(tuple(args or ()), dict(kwargs or {}), merged)

    def options(self, **options: Any) -> _BoundFunction:
        merged = {**self._options, **opts.validate(options, for_actor=False)}
        return _BoundFunction(self, merged)

    def _function_id(self, core) -> str:
        key = id(core)
        fid = self._ids.get(key)
        if fid is None:
            fid = self._ids[key] = core.register_code(self._function, "remote function")
        return fid

    def _submit(self, args: tuple, kwargs: dict, options: dict[str, Any]) -> Any:
        from kastor.api import _core
        from kastor.runtime import placement_context
        from kastor.runtime.core import new_task_id, return_id
        from kastor.runtime.pending import PendingCall
        from kastor.util.placement_group import bundles_of, demand, resolve
        from kastor.util.scheduling_strategies import placement

        signature.check(self._signature, args, kwargs, self._name)
        core = _core(auto_init=True)
        fid = self._function_id(core)
        name = options.get("name") or self._name
        value, deps = core.pack_args(args, kwargs, f"task {name}")
        task_id = new_task_id()
        generator = options["num_returns"] == STREAMING
        num_returns = 1 if generator else options["num_returns"]
        spec = pb.TaskSpec(task_id=task_id, job_id=core.current_job_id(), function_id=fid, args=value,
                           num_returns=num_returns, name=name, parent_task_id=core.current_task_id(),
                           owner_address=core.address, namespace=core.current_namespace(), generator=generator,
                           stream_items=generator and not core.gateway, max_calls=_max_calls(options),
                           env_vars={**core.current_env_vars(), **opts.env_vars(options.get("runtime_env"))})
        return_ids = [return_id(task_id, i) for i in range(num_returns)]
        refs = [ObjectRef(oid, core.address) for oid in return_ids]
        required = opts.task_resources(options)
        spec.num_cpus = required.get("CPU", 0)
        group = resolve(options, placement_context.current())
        if group is not None:  # it draws on its bundle's resources instead of the node's
            spec.placement_group.CopyFrom(group)
            required = demand(required, group, f"task {name}", bundles_of(options))
        retry = options["retry_exceptions"]
        where = placement(options.get("scheduling_strategy"))
        call = PendingCall(spec, return_ids, deps, options["max_retries"],
                           tuple(retry) if isinstance(retry, (list, tuple)) else retry,
                           key=(fid, tuple(sorted(required.items())), where.SerializeToString() if where else b"",
                                spec.max_calls),
                           required=required, placement=where)
        core.post(lambda: core.tasks.submit(call))
        return returned(refs, generator)


def _max_calls(options: dict[str, Any]) -> int:
    """As in Ray: no limit, except that a GPU task's worker exits after one call (freeing GPU memory)."""
    if options.get("max_calls") is not None:
        return options["max_calls"]
    return 1 if (options.get("num_gpus") or 0) > 0 else 0


class _BoundFunction:
    """`f.options(...)`: the same function with other options, ready for `.remote()`."""

    def __init__(self, function: RemoteFunction, options: dict[str, Any]):
        self._fn = function
        self._options = options

    def remote(self, *args, **kwargs) -> Any:
        return self._fn._submit(args, kwargs, self._options)
