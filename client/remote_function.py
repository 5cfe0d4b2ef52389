"""Remote functions: `@kastor.remote def f(...)`, then `f.remote(...)` returns ObjectRefs."""

from __future__ import annotations

import functools
from typing import Any

from kastor import options as opts
from kastor import signature
from kastor.dag import FunctionNode
from kastor.object_ref_generator import STREAMING, returned, yields
from kastor.runtime import submission
from kastor.session import current_core

_DEFAULTS = {"num_returns": 1, "max_retries": 3, "retry_exceptions": False}


class RemoteFunction:
    """A function decorated with `@kastor.remote`: `.remote(...)` runs it as a task and returns its ref(s)."""

    def __init__(self, function: Any, options: dict[str, Any]):
        self._function = function
        defaults = {**_DEFAULTS, "num_returns": STREAMING} if yields(function) else _DEFAULTS
        self._options = {**defaults, **opts.validate(options, for_actor=False)}
        self._name = getattr(function, "__qualname__", getattr(function, "__name__", "function"))
        self._signature = signature.of_callable(function)
        self._ids: dict[int, str] = {}
        self._fixed: list = []  # the Scheduling of self._options, once worked out (see _where)
        functools.update_wrapper(self, function)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Remote functions cannot be called directly. Instead of running "
                        f"'{self._name}()', try '{self._name}.remote()'.")

    def remote(self, *args, **kwargs) -> Any:
        return self._submit(args, kwargs, self._options, self._fixed)

    def _remote(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        """Ray's lower-level form: `f._remote(args=[...], kwargs={...}, num_returns=2, ...)`."""
        merged = {**self._options, **opts.validate(options, for_actor=False)} if options else self._options
        return self._submit(tuple(args or ()), dict(kwargs or {}), merged)

    def options(self, **options: Any) -> _BoundFunction:
        merged = {**self._options, **opts.validate(options, for_actor=False)}
        return _BoundFunction(self, merged)

    def bind(self, *args: Any, **kwargs: Any) -> FunctionNode:
        """This call, recorded for a graph (`kastor.dag`): `.execute()` submits it."""
        signature.check(self._signature, args, kwargs, self._name)
        return FunctionNode(lambda a, kw: self._submit(a, kw, self._options), args, kwargs)

    def _function_id(self, core) -> str:
        key = id(core)
        fid = self._ids.get(key)
        if fid is None:
            fid = self._ids[key] = core.register_code(self._function, "remote function")
        return fid

    def _submit(self, args: tuple, kwargs: dict, options: dict[str, Any], fixed: list | None = None) -> Any:
        signature.check(self._signature, args, kwargs, self._name)
        core = current_core(auto_init=True)
        name = options.get("name") or self._name
        refs, generator = submission.submit_task(core, self._function_id(core), name, args, kwargs, options,
                                                 _where(options, name, fixed))
        return returned(refs, generator)


def _where(options: dict[str, Any], name: str, fixed: list | None) -> submission.Scheduling:
    """opts.task_scheduling, kept in `fixed` (a one-item cache owned by the options' holder) while
    it depends on the options alone. Why: worked out per `.remote()`, it was about a sixth of
    what submitting a task cost the calling thread (bench/README.md, "Tasks")."""
    if fixed is None or not opts.scheduling_is_fixed(options):
        return opts.task_scheduling(options, name)
    if not fixed:
        fixed.append(opts.task_scheduling(options, name))
    return fixed[0]


class _BoundFunction:
    """`f.options(...)`: the same function with other options, ready for `.remote()`."""

    def __init__(self, function: RemoteFunction, options: dict[str, Any]):
        self._fn = function
        self._options = options
        self._fixed: list = []

    def remote(self, *args, **kwargs) -> Any:
        return self._fn._submit(args, kwargs, self._options, self._fixed)

    def bind(self, *args: Any, **kwargs: Any) -> FunctionNode:
        return FunctionNode(lambda a, kw: self._fn._submit(a, kw, self._options), args, kwargs)
