"""Lazy call graphs: `f.bind(...)`, `Cls.bind(...)`, `handle.method.bind(...)` (Ray's `ray.dag`).

`bind` records a call instead of making it; arguments may be other bound calls, so a
program describes a graph and runs it with `dag.execute(...)`, which submits each call once
(a shared node is one task or one actor per execution) and returns the root's ObjectRef(s).
`InputNode()` stands for what `execute` is given: the whole argument when there is exactly
one, `inp[i]` for a positional one and `inp.name` / `inp["name"]` for a keyword one.

What Ray's compiled graphs add on top (`experimental_compile`, channels) is not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ClassMethodNode", "ClassNode", "DAGNode", "FunctionNode", "InputAttributeNode", "InputNode"]


class DAGNode:
    """A call not made yet; `execute()` makes it and the calls it depends on."""

    def __init__(self, args: tuple, kwargs: dict[str, Any]):
        self._bound_args = args
        self._bound_kwargs = kwargs

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the graph ending at this node with the InputNode's value taken from `args`/`kwargs`."""
        return _Execution(args, kwargs).value(self)

    def _run(self, execution: _Execution, args: tuple, kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(f"'{type(self).__name__}' has no attribute '{name}': bind() records a call; run it "
                             f"with .execute()")


class FunctionNode(DAGNode):
    """`f.bind(...)`: a task."""

    def __init__(self, submit: Callable[[tuple, dict], Any], args: tuple, kwargs: dict[str, Any]):
        super().__init__(args, kwargs)
        self._submit = submit

    def _run(self, execution: _Execution, args: tuple, kwargs: dict[str, Any]) -> Any:
        return self._submit(args, kwargs)


class ClassNode(DAGNode):
    """`Cls.bind(...)`: an actor, created once per execution; `node.method.bind(...)` calls it."""

    def __init__(self, create: Callable[[tuple, dict], Any], args: tuple, kwargs: dict[str, Any]):
        super().__init__(args, kwargs)
        self._create = create

    def _run(self, execution: _Execution, args: tuple, kwargs: dict[str, Any]) -> Any:
        return self._create(args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _UnboundClassMethod(self, name)


class _UnboundClassMethod:
    def __init__(self, actor: ClassNode, name: str):
        self._actor = actor
        self._name = name

    def bind(self, *args: Any, **kwargs: Any) -> ClassMethodNode:
        return ClassMethodNode(self._actor, self._name, args, kwargs)


class ClassMethodNode(DAGNode):
    """`actor_node.method.bind(...)` or `handle.method.bind(...)`: an actor call."""

    def __init__(self, actor: ClassNode | Any, method: str | Any, args: tuple, kwargs: dict[str, Any]):
        super().__init__(args, kwargs)
        self._actor = actor  # a ClassNode, or a live handle's method (an ActorMethod)
        self._method = method

    def _run(self, execution: _Execution, args: tuple, kwargs: dict[str, Any]) -> Any:
        if isinstance(self._actor, ClassNode):
            handle = execution.value(self._actor)
            return getattr(handle, self._method).remote(*args, **kwargs)
        return self._method.remote(*args, **kwargs)


class InputNode(DAGNode):
    """What `execute(...)` is given. `with InputNode() as inp:` as in Ray, or plain `InputNode()`."""

    def __init__(self) -> None:
        super().__init__((), {})

    def __enter__(self) -> InputNode:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getitem__(self, key: int | str) -> InputAttributeNode:
        return InputAttributeNode(self, key)

    def __getattr__(self, name: str) -> InputAttributeNode:
        if name.startswith("_"):
            raise AttributeError(name)
        return InputAttributeNode(self, name)

    def _run(self, execution: _Execution, args: tuple, kwargs: dict[str, Any]) -> Any:
        if len(execution.args) == 1 and not execution.kwargs:
            return execution.args[0]
        raise ValueError(f"InputNode used whole, but execute() was given {len(execution.args)} positional and "
                         f"{len(execution.kwargs)} keyword arguments: pass exactly one, or use inp[i] / inp.name")


class InputAttributeNode(DAGNode):
    """`inp[i]`, `inp.name`, `inp["name"]`: one of execute()'s arguments."""

    def __init__(self, source: InputNode, key: int | str):
        super().__init__((), {})
        self._source = source
        self._key = key

    def _run(self, execution: _Execution, args: tuple, kwargs: dict[str, Any]) -> Any:
        key = self._key
        if isinstance(key, int):
            if key < len(execution.args):
                return execution.args[key]
            raise IndexError(f"inp[{key}]: execute() was given {len(execution.args)} positional argument(s)")
        if key in execution.kwargs:
            return execution.kwargs[key]
        if len(execution.args) == 1 and not execution.kwargs:  # one value: a dict or an object
            whole = execution.args[0]
            return whole[key] if isinstance(whole, dict) else getattr(whole, key)
        raise KeyError(f"inp.{key}: execute() was given no keyword argument {key!r}")


class _Execution:
    """One `execute()`: each node's result, computed once (a shared node is one call)."""

    def __init__(self, args: tuple, kwargs: dict[str, Any]):
        self.args = args
        self.kwargs = kwargs
        self._done: dict[int, Any] = {}

    def value(self, node: DAGNode) -> Any:
        key = id(node)
        if key not in self._done:
            args = tuple(self._resolve(a) for a in node._bound_args)
            kwargs = {k: self._resolve(v) for k, v in node._bound_kwargs.items()}
            self._done[key] = node._run(self, args, kwargs)
        return self._done[key]

    def _resolve(self, value: Any) -> Any:
        """Bound calls among the arguments (also inside lists, tuples and dicts) become their refs."""
        if isinstance(value, DAGNode):
            return self.value(value)
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
            return type(value)(*(self._resolve(v) for v in value))
        if isinstance(value, list | tuple):
            return type(value)(self._resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: self._resolve(v) for k, v in value.items()}
        return value
