"""Actors: `@kastor.remote class C`, `C.remote(...)` returns an ActorHandle.

A handle is small and picklable: it names the actor and its methods, and the process
holding it resolves where the actor lives on first use. Like Ray, an unnamed, non-detached
actor is killed once every handle to it is gone, and its owner's job ending ends it too.
"""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Any

import grpc
from kastor import options as opts
from kastor import signature
from kastor.exceptions import PendingCallsLimitExceeded
from kastor.object_ref import ObjectRef
from kastor.object_ref_generator import STREAMING, returned, yields
from kastor.runtime import context
from kastor.runtime.protocol import kastor_pb2 as pb

_ACTOR_DEFAULTS = {"max_restarts": 0, "max_task_retries": 0}


class ActorExit(SystemExit):
    """Raised by exit_actor(); the worker ends the actor on purpose, with no restart."""


def exit_actor() -> None:
    """Ends the current actor for good (Ray's exit_actor): no restart, and the calls after it fail.

    The exit is requested before the exception is raised, so code that catches it (SystemExit)
    still ends the actor, as in Ray. The exit is graceful: the actor's `__ray_shutdown__`, then
    its atexit handlers, run before the process leaves (`kastor.kill` runs neither)."""
    _request_exit("exit_actor() was called")


def _terminate() -> None:
    """`actor.__ray_terminate__.remote()`: the graceful exit, after the calls queued before it."""
    _request_exit("__ray_terminate__ was called")


def _request_exit(cause: str) -> None:
    task = context.current_task.get()
    core = context.core
    if task is None or not task.actor_id or core is None or core.engine is None:
        raise TypeError("exit_actor API is called on a non-actor worker: exit_actor() ends the actor it runs in, "
                        "so call it inside an actor's constructor or method (to end an actor from outside, "
                        "use kastor.kill(actor) or actor.__ray_terminate__.remote()).")
    core.engine.request_exit(cause)
    raise ActorExit(0)


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


def _ready() -> bool:
    return True


# Every actor answers these, as Ray's do: `get(a.__ray_ready__.remote())` waits until it is
# constructed, and `a.__ray_terminate__.remote()` ends it after the calls queued before.
BUILTIN_METHODS = {"__ray_ready__": _ready, "__ray_terminate__": _terminate}


class ActorClass:
    def __init__(self, cls: type, options: dict[str, Any]):
        self._cls = cls
        self._options = {**_ACTOR_DEFAULTS, **opts.validate(options, for_actor=True)}
        self._methods, self._is_async = _method_table(cls)
        self._init_signature = signature.of_callable(cls)  # the constructor's, without self
        self._ids: dict[int, str] = {}
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
        return sorted({*dir(self._cls), "options", "remote"})

    def __mro_entries__(self, bases: tuple) -> tuple:
        raise TypeError(f"Inheriting from actor classes is not currently supported (the base {self.__name__} is "
                        f"one). Inherit from the plain class instead, and decorate the subclass with @kastor.remote.")

    def remote(self, *args, **kwargs) -> ActorHandle:
        return self._submit(args, kwargs, self._options)

    def _remote(self, args: Any = None, kwargs: dict | None = None, **options: Any) -> ActorHandle:
        """Ray's lower-level form: `Cls._remote(args=[...], kwargs={...}, name=..., ...)`."""
        merged = {**self._options, **opts.validate(options, for_actor=True)} if options else self._options
        return self._submit(tuple(args or ()), dict(kwargs or {}), merged)

    def options(self, **options: Any) -> _BoundActorClass:
        return _BoundActorClass(self, {**self._options, **opts.validate(options, for_actor=True)})

    def _submit(self, args: tuple, kwargs: dict, options: dict[str, Any]) -> ActorHandle:
        from kastor.api import _core
        signature.check(self._init_signature, args, kwargs, self.__name__)
        core = _core(auto_init=True)
        key = id(core)
        class_id = self._ids.get(key)
        if class_id is None:
            class_id = self._ids[key] = core.register_code(self._cls, "actor class")
        required, held = opts.actor_resources(options)
        from kastor.runtime import placement_context
        from kastor.util.placement_group import bundles_of, demand, resolve
        group = resolve(options, placement_context.current())
        if group is not None:  # it draws on its bundle's resources instead of the node's
            # The default actor's 1 CPU to be placed is not asked of a bundle: it runs on what it holds.
            required = held if options.get("num_cpus") is None else required
            bundles = bundles_of(options)
            required, held = demand(required, group, f"actor {self.__name__}", bundles), demand(held, group)
        value, deps = core.pack_args(args, kwargs, f"the constructor of {self.__name__}")
        detached = options.get("lifetime") == "detached"
        name = options.get("name") or ""
        in_worker = core.engine is not None
        from kastor.runtime.core import new_actor_id
        from kastor.util.scheduling_strategies import placement
        job_id = core.current_job_id()
        spec = pb.ActorSpec(
            actor_id=new_actor_id(job_id), job_id=job_id, class_id=class_id, class_name=self.__name__,
            args=value, name=name, namespace=options.get("namespace") or core.current_namespace(),
            job_namespace=core.current_namespace(), detached=detached,
            max_restarts=options["max_restarts"], max_task_retries=options["max_task_retries"],
            max_concurrency=options.get("max_concurrency") or (1000 if self._is_async else 1),
            is_async=self._is_async, required=required, held=held, methods=self._methods,
            owner_worker_id=core.worker_id if in_worker else b"", owner_address=core.address,
            env_vars={**core.current_env_vars(), **opts.env_vars(options.get("runtime_env"))},
            concurrency_groups=options.get("concurrency_groups") or {},
            max_pending_calls=options.get("max_pending_calls") or -1)
        where = placement(options.get("scheduling_strategy"))
        if where is not None:
            spec.placement.CopyFrom(where)
        if group is not None:
            spec.placement_group.CopyFrom(group)
        if name:
            reply = core.run(_create_named(core, spec, deps, bool(options.get("get_if_exists"))))
            # As in Ray, a name does not keep a non-detached actor alive: its creator's handles
            # (and those get_actor() gives back in that process) do. A reused actor is another's.
            return ActorHandle._from_info(reply.info, collectable=not detached and not reply.existed)
        handle = ActorHandle(spec.actor_id, self.__name__, self._methods, options["max_task_retries"],
                             collectable=not detached, max_pending_calls=spec.max_pending_calls)
        core.post(lambda: _create_async(core, spec, deps))
        return handle


class _BoundActorClass:
    def __init__(self, actor_class: ActorClass, options: dict[str, Any]):
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args, **kwargs) -> ActorHandle:
        return self._actor_class._submit(args, kwargs, self._options)


async def _attach_deps(core, spec: pb.ActorSpec, deps: list[ObjectRef]) -> None:
    if deps:
        from kastor.runtime.pending import PendingCall, resolve_deps
        holder = PendingCall(pb.TaskSpec(), [], deps, 0)
        await resolve_deps(core, holder)
        spec.ref_args.extend(holder.spec.ref_args)


async def _create_named(core, spec: pb.ActorSpec, deps: list[ObjectRef], get_if_exists: bool) -> pb.CreateActorReply:
    await _attach_deps(core, spec, deps)
    try:
        reply = await core.head_rpc("CreateActor", pb.CreateActorRequest(spec=spec, get_if_exists=get_if_exists))
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.ALREADY_EXISTS:
            raise ValueError(f"The name {spec.name!r} (namespace={spec.namespace!r}) is already taken by "
                             f"another actor; pick another name, or pass get_if_exists=True to reuse it.") from None
        raise
    _warn_if_infeasible(reply)
    return reply


def _warn_if_infeasible(reply: pb.CreateActorReply) -> None:
    """As Ray does: an actor no node can fit waits, but its creator is told why."""
    info = reply.info
    if info.pending_reason and not reply.existed:
        logging.getLogger("kastor").warning("Warning: the actor %s is infeasible and cannot be scheduled right now: %s",
                                            info.spec.class_name, info.pending_reason)


def _create_async(core, spec: pb.ActorSpec, deps: list[ObjectRef]) -> None:
    import asyncio
    created = core.actors.expect_creation(spec.actor_id)

    async def create() -> None:
        try:
            await _attach_deps(core, spec, deps)
            reply = await core.head_rpc("CreateActor", pb.CreateActorRequest(spec=spec))
            created.set_result(None)
            _warn_if_infeasible(reply)
        except Exception as e:
            created.set_exception(e)

    asyncio.get_running_loop().create_task(create())


class ActorHandle:
    """A reference to an actor; attribute access gives its methods."""

    def __init__(self, actor_id: bytes, class_name: str, methods: list[pb.MethodMeta],
                 max_task_retries: int = 0, collectable: bool = False, max_pending_calls: int = -1):
        self._actor_id = actor_id
        self._class_name = class_name
        self._method_meta = {m.name: m for m in methods}
        self._max_task_retries = max_task_retries
        self._max_pending_calls = max_pending_calls if max_pending_calls > 0 else -1
        self._pending_calls = 0
        self._pending_lock = threading.Lock()
        self._methods_cache: dict[str, ActorMethod] = {}
        core = context.core
        if core is not None:
            core.post(lambda: core.actors.add_handle(actor_id, collectable))

    @classmethod
    def _from_info(cls, info: pb.ActorInfo, collectable: bool = False) -> ActorHandle:
        spec = info.spec
        return cls(spec.actor_id, spec.class_name, list(spec.methods), spec.max_task_retries, collectable,
                   spec.max_pending_calls)

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("_"):
            meta = self.__dict__.get("_method_meta", {}).get(name)
            if meta is None:
                raise AttributeError(name)
        cached = self._methods_cache.get(name)
        if cached is not None:
            return cached
        meta = self._method_meta.get(name)
        if meta is None:
            raise AttributeError(f"'{self._class_name}' actor has no method '{name}'. Its methods are: "
                                 f"{', '.join(sorted(self._method_meta)) or '(none)'}.")
        m = self._methods_cache[name] = ActorMethod(self, name, STREAMING if meta.is_generator else meta.num_returns,
                                                    meta.concurrency_group,
                                                    signature.from_params(meta.params) if meta.has_signature else None)
        return m

    def __dir__(self) -> list[str]:
        return sorted(self._method_meta)

    def __repr__(self) -> str:
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __reduce__(self):
        core = context.core
        if core is not None:
            actor_id = self._actor_id
            core.post(lambda: core.actors.escape(actor_id))
        return _rebuild_handle, (self._actor_id, self._class_name,
                                 [m.SerializeToString() for m in self._method_meta.values()],
                                 self._max_task_retries, self._max_pending_calls)

    def __del__(self):
        core = context.core
        if core is not None:
            actor_id = self._actor_id
            try:
                core.post(lambda: core.actors.drop_handle(actor_id))
            except Exception:
                pass

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


def _rebuild_handle(actor_id: bytes, class_name: str, methods: list[bytes], max_task_retries: int,
                    max_pending_calls: int = -1) -> ActorHandle:
    return ActorHandle(actor_id, class_name, [pb.MethodMeta.FromString(m) for m in methods], max_task_retries,
                       max_pending_calls=max_pending_calls)


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

    def options(self, **options: Any) -> _BoundMethod:
        unknown = set(options) - {"num_returns", "name", "concurrency_group", "max_task_retries"}
        if unknown:
            raise ValueError(f"Invalid option(s) {sorted(unknown)} for an actor method; valid: num_returns, name.")
        opts.validate({k: v for k, v in options.items() if k in ("num_returns", "name")}, for_actor=False)
        if not isinstance(options.get("concurrency_group", ""), str):
            raise TypeError(f"The 'concurrency_group' option must be a group's name, "
                            f"got {type(options['concurrency_group']).__name__}.")
        return _BoundMethod(self, options)

    def _submit(self, args: tuple, kwargs: dict, num_returns: int | str, name: str | None,
                concurrency_group: str) -> Any:
        from kastor.api import _core
        from kastor.runtime.core import new_task_id, return_id
        from kastor.runtime.pending import PendingCall

        handle = self._handle
        signature.check(self._signature, args, kwargs, f"{handle._class_name}.{self._name}")
        core = _core(auto_init=False)
        label = name or f"{handle._class_name}.{self._name}"
        give_back = handle._take_pending_slot(label) if handle._max_pending_calls > 0 else None
        try:
            value, deps = core.pack_args(args, kwargs, label)
        except BaseException:
            if give_back is not None:
                give_back()
            raise
        task_id = new_task_id()
        generator = num_returns == STREAMING
        num_returns = 1 if generator else num_returns
        spec = pb.TaskSpec(task_id=task_id, job_id=core.current_job_id(), method=self._name, args=value,
                           num_returns=num_returns, name=label, actor_id=handle._actor_id,
                           parent_task_id=core.current_task_id(), owner_address=core.address,
                           namespace=core.current_namespace(), generator=generator,
                           stream_items=generator and not core.gateway, concurrency_group=concurrency_group)
        return_ids = [return_id(task_id, i) for i in range(num_returns)]
        refs = [ObjectRef(oid, core.address) for oid in return_ids]
        call = PendingCall(spec, return_ids, deps, handle._max_task_retries)
        call.on_done = give_back
        core.post(lambda: core.actors.submit(call))
        return returned(refs, generator)


class _BoundMethod:
    def __init__(self, method: ActorMethod, options: dict[str, Any]):
        self._method = method
        self._options = options

    def remote(self, *args, **kwargs) -> Any:
        method = self._method
        return method._submit(args, kwargs, self._options.get("num_returns", method._num_returns),
                              self._options.get("name"), self._options.get("concurrency_group",
                                                                           method._concurrency_group))
