"""Actors: `@kastor.remote class C`, `C.remote(...)` returns an ActorHandle.

A handle is small and picklable: it names the actor and its methods, and the process
holding it resolves where the actor lives on first use. Like Ray, a non-detached actor is
killed once every strong handle to it is gone, in every process that holds one (passed in a
call's arguments or result, a put() value, another actor's state: runtime/actor_handles.py),
and its owner's job ending ends it too.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass, field
from typing import Any

from kastor import options as opts
from kastor import signature
from kastor.dag import ClassMethodNode, ClassNode
from kastor.exceptions import PendingCallsLimitExceeded
from kastor.object_ref_generator import STREAMING, returned, yields
from kastor.runtime import actor_handles, context, submission
from kastor.runtime.actor_builtins import BUILTIN_METHODS, ActorExit, request_exit  # noqa: F401  (re-exported)
from kastor.runtime.object_ref import ObjectRef
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.session import current_core

_ACTOR_DEFAULTS = {"max_restarts": 0, "max_task_retries": 0}
# What `actor.method.options(...)` accepts (Ray's ActorMethod.options, less what Kastor lacks).
METHOD_OPTIONS = ("concurrency_group", "max_task_retries", "name", "num_returns")


def exit_actor() -> None:
    """Ends the current actor for good (Ray's exit_actor): no restart, and the calls after it fail.

    The exit is requested before the exception is raised, so code that catches it (SystemExit)
    still ends the actor, as in Ray. The exit is graceful: the actor's `__ray_shutdown__`, then
    its atexit handlers, run before the process leaves (`kastor.kill` runs neither)."""
    request_exit("exit_actor() was called")


def method(*, num_returns: int | str | None = None, concurrency_group: str | None = None, **_: Any):
    """Per-method options, as `@kastor.method(num_returns=2)` on an actor method."""
    opts.validate({"num_returns": num_returns}, for_actor=False)

    def decorate(fn):
        if num_returns is not None:
            fn.__kastor_num_returns__ = num_returns
        if concurrency_group is not None:
            fn.__kastor_concurrency_group__ = concurrency_group
        return fn

    return decorate


def _method_table(cls: type) -> tuple[list[pb.MethodMeta], bool]:
    methods = []
    is_async = False
    for name, member in inspect.getmembers(cls, predicate=callable):
        if name.startswith("__") and name not in ("__call__",):
            continue
        fn = inspect.unwrap(member)
        coroutine = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        is_async = is_async or coroutine
        num_returns = getattr(fn, "__kastor_num_returns__", STREAMING if yields(fn) else 1)
        generator = num_returns == STREAMING
        sig = signature.of_method(cls, name, member)
        methods.append(pb.MethodMeta(name=name, num_returns=1 if generator else num_returns, is_async=coroutine,
                                     is_generator=generator,
                                     concurrency_group=getattr(fn, "__kastor_concurrency_group__", ""),
                                     params=signature.to_params(sig), has_signature=sig is not None))
    methods.extend(pb.MethodMeta(name=name, num_returns=1) for name in BUILTIN_METHODS)
    return methods, is_async


class ActorClassInheritanceException(TypeError):
    """Raised by a class statement that inherits from an actor class, as Ray's
    `ray.actor.ActorClassInheritanceException`: inherit from the plain class instead."""


@dataclass(frozen=True)
class ActorClassMetadata:
    """`Cls.__ray_metadata__`, as Ray's: above all `modified_class`, a plain (local) subclass of
    the decorated class, which unit tests instantiate to run an actor's code without a cluster."""

    modified_class: type
    class_name: str
    is_async: bool
    method_num_returns: dict[str, int | str] = field(default_factory=dict)
    method_concurrency_groups: dict[str, str] = field(default_factory=dict)
    concurrency_groups: dict[str, int] = field(default_factory=dict)


def _metadata(cls: type, methods: list[pb.MethodMeta], is_async: bool, options: dict[str, Any]) -> ActorClassMetadata:
    modified = type(cls.__name__, (cls,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
                                           "__doc__": cls.__doc__})
    user = [m for m in methods if m.name not in BUILTIN_METHODS]
    return ActorClassMetadata(
        modified_class=modified, class_name=cls.__name__, is_async=is_async,
        method_num_returns={m.name: STREAMING if m.is_generator else m.num_returns for m in user},
        method_concurrency_groups={m.name: m.concurrency_group for m in user if m.concurrency_group},
        concurrency_groups=dict(options.get("concurrency_groups") or {}))


class ActorClass:
    """A class decorated with `@kastor.remote`: `.remote(...)` creates an actor and returns its handle."""

    def __init__(self, cls: type, options: dict[str, Any]):
        self._cls = cls
        self._options = {**_ACTOR_DEFAULTS, **opts.validate(options, for_actor=True)}
        self._methods, self._is_async = _method_table(cls)
        self._init_signature = signature.of_callable(cls)  # the constructor's, without self
        self._ids: dict[int, str] = {}
        self.__ray_metadata__ = _metadata(cls, self._methods, self._is_async, self._options)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__
        self.__module__ = cls.__module__

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actors cannot be instantiated directly. Instead of '{self.__name__}()', "
                        f"use '{self.__name__}.remote()'.")

    def __getattr__(self, name: str) -> Any:
        """Class attributes, static methods and class methods of the decorated class, as in Ray,
        where the actor class derives from it: `Counter.LIMIT`, `Counter.helper()` inside a method."""
        cls = self.__dict__.get("_cls")
        if cls is None or name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(cls, name)
        except AttributeError:
            raise AttributeError(f"actor class '{cls.__name__}' has no attribute '{name}'") from None

    def __dir__(self) -> list[str]:
        return sorted({*dir(self._cls), "bind", "options", "remote"})

    def __mro_entries__(self, bases: tuple) -> tuple:
        raise ActorClassInheritanceException(
            f"Inheriting from actor classes is not currently supported (the base {self.__name__} is one). "
            f"Inherit from the plain class instead, and decorate the subclass with @kastor.remote.")

    def remote(self, *args, **kwargs) -> ActorHandle:
        return self._submit(args, kwargs, self._options)

    def _remote(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> ActorHandle:
        """Ray's lower-level form: `Cls._remote(args=[...], kwargs={...}, name=..., ...)`."""
        merged = {**self._options, **opts.validate(options, for_actor=True)} if options else self._options
        return self._submit(tuple(args or ()), dict(kwargs or {}), merged)

    def options(self, **options: Any) -> _BoundActorClass:
        return _BoundActorClass(self, {**self._options, **opts.validate(options, for_actor=True)})

    def bind(self, *args: Any, **kwargs: Any) -> ClassNode:
        """This actor's creation, recorded for a graph (`kastor.dag`): `.execute()` creates it."""
        signature.check(self._init_signature, args, kwargs, self.__name__)
        return ClassNode(lambda a, kw: self._submit(a, kw, self._options), args, kwargs)

    def _submit(self, args: tuple, kwargs: dict, options: dict[str, Any]) -> ActorHandle:
        signature.check(self._init_signature, args, kwargs, self.__name__)
        core = current_core(auto_init=True)
        key = id(core)
        class_id = self._ids.get(key)
        if class_id is None:
            class_id = self._ids[key] = core.register_code(self._cls, "actor class")
        created = submission.create_actor(core, class_id, self.__name__, self._methods, self._is_async, args, kwargs,
                                          options, opts.actor_scheduling(options, self.__name__))
        # As in Ray, a name does not keep a non-detached actor alive: its strong handles do (see
        # runtime/actor_handles.py). A detached actor's handles, or those of an existing actor that
        # get_if_exists gave back (another process owns it), are weak.
        strong = options.get("lifetime") != "detached" and not created.existed
        token = actor_handles.own(core, created.actor_id) if strong else None
        if created.info is not None:
            return ActorHandle._from_info(created.info, token)
        return ActorHandle(created.actor_id, self.__name__, self._methods, options["max_task_retries"],
                           token=token, max_pending_calls=created.max_pending_calls)


class _BoundActorClass:
    def __init__(self, actor_class: ActorClass, options: dict[str, Any]):
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args, **kwargs) -> ActorHandle:
        return self._actor_class._submit(args, kwargs, self._options)

    def bind(self, *args: Any, **kwargs: Any) -> ClassNode:
        return ClassNode(lambda a, kw: self._actor_class._submit(a, kw, self._options), args, kwargs)


class ActorHandle:
    """A reference to an actor; attribute access gives its methods.

    A strong handle holds its actor's token (an ObjectRef its owner counts, see
    runtime/actor_handles.py); a weak one (`token=None`) keeps nothing alive."""

    def __init__(self, actor_id: bytes, class_name: str, methods: list[pb.MethodMeta],
                 max_task_retries: int = 0, token: ObjectRef | None = None, max_pending_calls: int = -1):
        self._actor_id = actor_id
        self._token = token
        self._class_name = class_name
        self._method_meta = {m.name: m for m in methods}
        self._max_task_retries = max_task_retries
        self._max_pending_calls = max_pending_calls if max_pending_calls > 0 else -1
        self._pending_calls = 0
        self._pending_lock = threading.Lock()
        self._methods_cache: dict[str, tuple[int | str, str, inspect.Signature | None]] = {}

    @classmethod
    def _from_info(cls, info: pb.ActorInfo, token: ObjectRef | None = None) -> ActorHandle:
        spec = info.spec
        return cls(spec.actor_id, spec.class_name, list(spec.methods), spec.max_task_retries, token,
                   spec.max_pending_calls)

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("_"):
            meta = self.__dict__.get("_method_meta", {}).get(name)
            if meta is None:
                raise AttributeError(name)
        cached = self._methods_cache.get(name)
        if cached is None:
            meta = self._method_meta.get(name)
            if meta is None:
                raise AttributeError(f"'{self._class_name}' actor has no method '{name}'. Its methods are: "
                                     f"{', '.join(sorted(self._method_meta)) or '(none)'}.")
            cached = self._methods_cache[name] = (
                STREAMING if meta.is_generator else meta.num_returns, meta.concurrency_group,
                signature.from_params(meta.params) if meta.has_signature else None)
        # A new method object each time, not a cached one: a handle that held its methods, which
        # hold it, would be a cycle, freed only by a garbage collection, and its actor kept alive
        # until then (a worker may not collect for a long time).
        return ActorMethod(self, name, *cached)

    def __dir__(self) -> list[str]:
        return sorted({*self._method_meta, "__init__"})  # as Ray's handles list their constructor

    def __repr__(self) -> str:
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __reduce__(self):
        # The token, pickled along, makes the receiver a holder (or escapes): see actor_handles.
        return _rebuild_handle, (self._actor_id, self._class_name,
                                 [m.SerializeToString() for m in self._method_meta.values()],
                                 self._max_task_retries, self._max_pending_calls,
                                 actor_handles.for_pickle(context.core, self._token))

    def _take_pending_slot(self, label: str):
        """Counts a call against max_pending_calls; returns what gives the slot back when it ends."""
        with self._pending_lock:
            if self._pending_calls >= self._max_pending_calls:
                raise PendingCallsLimitExceeded(
                    f"{label}: this handle already has {self._pending_calls} calls pending, the actor's "
                    f"max_pending_calls. Wait for some results (kastor.wait) before sending more.")
            self._pending_calls += 1

        def give_back() -> None:
            with self._pending_lock:
                self._pending_calls -= 1
        return give_back

    @property
    def _kastor_actor_id(self) -> bytes:
        return self._actor_id


def handle_from_info(info: pb.ActorInfo) -> ActorHandle:
    """A handle to the actor the head describes (get_actor): weak, as Ray's lookups are, except in
    the process that owns the actor, where it counts as the creator's own handles do."""
    core = context.core
    token = actor_handles.owner_token(core, info.spec.actor_id) if core is not None else None
    return ActorHandle._from_info(info, token)


def actor_id_of(handle: ActorHandle) -> bytes:
    """The id of the actor a handle names (for the runtime: users read `handle._actor_id`, as in Ray)."""
    return handle._actor_id


def undecorated(actor_class: ActorClass) -> type:
    """The plain class behind `@kastor.remote class C`."""
    return actor_class._cls


def _rebuild_handle(actor_id: bytes, class_name: str, methods: list[bytes], max_task_retries: int,
                    max_pending_calls: int = -1, token: ObjectRef | None = None) -> ActorHandle:
    return ActorHandle(actor_id, class_name, [pb.MethodMeta.FromString(m) for m in methods], max_task_retries,
                       token=token, max_pending_calls=max_pending_calls)


class ActorMethod:
    def __init__(self, handle: ActorHandle, name: str, num_returns: int | str, concurrency_group: str = "",
                 sig: inspect.Signature | None = None):
        self._handle = handle
        self._name = name
        self._signature = sig
        self._num_returns = num_returns
        self._concurrency_group = concurrency_group

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actor methods cannot be called directly. Instead of running "
                        f"'object.{self._name}()', try 'object.{self._name}.remote()'.")

    def remote(self, *args, **kwargs) -> Any:
        return self._submit(args, kwargs, self._num_returns, None, self._concurrency_group)

    def _remote(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> Any:
        """Ray's lower-level form: `handle.m._remote(args=[...], kwargs={...}, num_returns=2, ...)`."""
        bound = self.options(**options) if options else None
        if bound is None:
            return self.remote(*(args or ()), **(kwargs or {}))
        return bound.remote(*(args or ()), **(kwargs or {}))

    def bind(self, *args: Any, **kwargs: Any) -> ClassMethodNode:
        """This call, recorded for a graph (`kastor.dag`): `.execute()` makes it."""
        signature.check(self._signature, args, kwargs, f"{self._handle._class_name}.{self._name}")
        return ClassMethodNode(self._handle, self, args, kwargs)

    def options(self, **options: Any) -> _BoundMethod:
        """This method with per-call options, as Ray's `ActorMethod.options`: `num_returns`, `name`,
        `concurrency_group`, and `max_task_retries` (overrides the actor's for these calls)."""
        unknown = set(options) - set(METHOD_OPTIONS)
        if unknown:
            raise ValueError(f"Invalid option(s) {sorted(unknown)} for an actor method; valid ones are: "
                             f"{', '.join(METHOD_OPTIONS)}.")
        opts.validate({k: v for k, v in options.items() if k in ("num_returns", "name")}, for_actor=False)
        if "max_task_retries" in options:
            opts.validate({"max_task_retries": options["max_task_retries"]}, for_actor=True)
        if not isinstance(options.get("concurrency_group", ""), str):
            raise TypeError(f"The 'concurrency_group' option must be a group's name, "
                            f"got {type(options['concurrency_group']).__name__}.")
        return _BoundMethod(self, options)

    def _submit(self, args: tuple, kwargs: dict, num_returns: int | str, name: str | None,
                concurrency_group: str, max_task_retries: int | None = None) -> Any:
        handle = self._handle
        signature.check(self._signature, args, kwargs, f"{handle._class_name}.{self._name}")
        core = current_core(auto_init=False)
        label = name or f"{handle._class_name}.{self._name}"
        give_back = handle._take_pending_slot(label) if handle._max_pending_calls > 0 else None
        try:
            refs, generator = submission.submit_actor_call(
                core, handle._actor_id, self._name, label, args, kwargs, num_returns=num_returns,
                concurrency_group=concurrency_group,
                max_task_retries=handle._max_task_retries if max_task_retries is None else max_task_retries,
                on_done=give_back, holds=handle._token)
        except BaseException:
            if give_back is not None:
                give_back()
            raise
        return returned(refs, generator)


class _BoundMethod:
    def __init__(self, method: ActorMethod, options: dict[str, Any]):
        self._method = method
        self._options = options

    def remote(self, *args, **kwargs) -> Any:
        method = self._method
        options = self._options
        return method._submit(args, kwargs, options.get("num_returns", method._num_returns), options.get("name"),
                              options.get("concurrency_group", method._concurrency_group),
                              options.get("max_task_retries"))
