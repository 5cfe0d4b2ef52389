"""The submission API between the public package and the runtime.

`kastor.remote_function`, `kastor.actor` and `kastor.api` describe what the user asked for
(a function's id, arguments, validated options); this module turns that into task and actor
specs, hands them to the core's submitters, and returns the refs. The public package builds
no protobuf specs and no PendingCalls, and reads no submitter's state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from kastor.runtime import cancel as cancelling
from kastor.runtime import checkpoint, runtime_env
from kastor.runtime.ids import new_actor_id, new_task_id, return_id
from kastor.runtime.object_ref import ObjectRef
from kastor.runtime.pending import PendingCall, resolve_deps
from kastor.runtime.protocol import kastor_pb2 as pb

if TYPE_CHECKING:
    from kastor.runtime.core import CoreWorker

STREAMING = "streaming"


@dataclass(frozen=True)
class Scheduling:
    """Where new work runs and what it needs, worked out by the public package from the user's
    options (`kastor.options.scheduling`): plain data and wire messages, so the runtime needs
    none of the public option types (strategies, PlacementGroup handles, runtime_env checks).

    `required` is what placing it takes (a placement group's bundle resources when it runs in
    one, see runtime/placement.py); `held` what an actor holds while alive, and for a task what
    it asked for (its CPUs size its thread pools).
    """

    required: dict[str, float]
    held: dict[str, float]
    placement: pb.Placement | None = None
    group: pb.PlacementGroupRef | None = None
    env_vars: dict[str, str] = field(default_factory=dict)


# Specs already built, by every field a call sets but its task id and (unless it has none) its
# arguments: copying a prebuilt TaskSpec costs upb about a third of building one from a dozen
# keyword arguments, and a loop of `.remote()` calls repeats the same fields every time.
_TEMPLATES: dict[tuple, pb.TaskSpec] = {}
_TEMPLATES_MAX = 4096  # many distinct (actor, method, parent task) keys: start over rather than grow


def _from_template(key: tuple, build: Callable[[], pb.TaskSpec]) -> pb.TaskSpec:
    """A new spec holding the fields of `build()`'s, which is built once per `key`. The caller
    sets the task id (and the arguments); the cached template itself is never handed out."""
    template = _TEMPLATES.get(key)
    if template is None:
        if len(_TEMPLATES) >= _TEMPLATES_MAX:
            _TEMPLATES.clear()
        template = _TEMPLATES[key] = build()
    spec = pb.TaskSpec()
    spec.CopyFrom(template)
    return spec


def max_calls(options: dict[str, Any]) -> int:
    """As in Ray: no limit, except that a GPU task's worker exits after one call (freeing GPU memory)."""
    if options.get("max_calls") is not None:
        return options["max_calls"]
    return 1 if (options.get("num_gpus") or 0) > 0 else 0


def _returns(owner: str, task_id: bytes, num_returns: int) -> tuple[list[bytes], list[ObjectRef]]:
    if num_returns == 1:  # most calls: no comprehensions
        oid = return_id(task_id, 0)
        return [oid], [ObjectRef(oid, owner)]
    return_ids = [return_id(task_id, i) for i in range(num_returns)]
    return return_ids, [ObjectRef(oid, owner) for oid in return_ids]


def submit_task(core: CoreWorker, function_id: str, name: str, args: tuple, kwargs: dict,
                options: dict[str, Any], where: Scheduling) -> tuple[list[ObjectRef], bool]:
    """Submits a call of a registered function; returns its refs and whether it is a generator.

    `options` are the validated task options (num_returns, max_retries, retry_exceptions,
    runtime_env, max_calls), `where` what they mean for placing it."""
    pins: list[ObjectRef] = []
    no_args = not args and not kwargs  # then the template holds the (constant) packed arguments
    value, deps = (None, []) if no_args else core.pack_args(args, kwargs, f"task {name}", pins)
    task_id = new_task_id()
    generator = options["num_returns"] == STREAMING
    num_returns = 1 if generator else options["num_returns"]
    stream_items = generator and core.transport.reachable
    job_id, parent, owner, namespace = core.current_job_id(), core.current_task_id(), core.address, \
        core.current_namespace()
    inherited, own_env = core.current_env_vars(), where.env_vars
    env_key = (tuple(inherited.items()), tuple(own_env.items())) if inherited or own_env else ()
    renv = runtime_env.for_call(core, options.get("runtime_env"))
    calls = max_calls(options)

    def build() -> pb.TaskSpec:
        return pb.TaskSpec(job_id=job_id, function_id=function_id,
                           args=core.pack_args((), {}, name)[0] if no_args else None,
                           num_returns=num_returns, name=name, parent_task_id=parent, owner_address=owner,
                           namespace=namespace, generator=generator, stream_items=stream_items, max_calls=calls,
                           env_vars={**inherited, **own_env}, runtime_env=renv)
    if where.group is None:  # a placement group's message is no cache key; such tasks are built each time
        spec = _from_template(("task", function_id, name, num_returns, generator, stream_items, calls, job_id,
                               parent, owner, namespace, env_key, renv, no_args), build)
    else:
        spec = build()
    spec.task_id = task_id
    if not no_args:
        spec.args.CopyFrom(value)
    return_ids, refs = _returns(owner, task_id, num_returns)
    spec.num_cpus = where.held.get("CPU", 0)
    if where.group is not None:  # it draws on its bundle's resources instead of the node's
        spec.placement_group.CopyFrom(where.group)
    retry = options["retry_exceptions"]
    required, placement = where.required, where.placement
    call = PendingCall(spec, return_ids, deps, options["max_retries"],
                       tuple(retry) if isinstance(retry, (list, tuple)) else retry,
                       key=(function_id, tuple(sorted(required.items())),
                            placement.SerializeToString(deterministic=True) if placement else b"",
                            spec.runtime_env, spec.max_calls),  # max_calls last: the task submitter reads key[-1]
                       required=required, placement=placement)
    call.pins = pins
    core.post(lambda: core.tasks.submit(call))
    return refs, generator


def submit_actor_call(core: CoreWorker, actor_id: bytes, method: str, label: str, args: tuple, kwargs: dict, *,
                      num_returns: int | str, concurrency_group: str, max_task_retries: int,
                      on_done: Callable[[], None] | None = None,
                      holds: ObjectRef | None = None) -> tuple[list[ObjectRef], bool]:
    """Submits a call of an actor's method; `on_done` runs (on the core's loop) once it finished.
    `holds`: the calling handle's token (runtime/actor_handles.py), kept until the call is done,
    so that a holder dropping its handle right after a call does not kill the actor under it."""
    pins: list[ObjectRef] = []
    no_args = not args and not kwargs  # then the template holds the (constant) packed arguments
    value, deps = (None, []) if no_args else core.pack_args(args, kwargs, label, pins)
    if holds is not None:
        pins.append(holds)
    task_id = new_task_id()
    generator = num_returns == STREAMING
    count = 1 if generator else int(num_returns)
    stream_items = generator and core.transport.reachable
    job_id, parent, owner, namespace = core.current_job_id(), core.current_task_id(), core.address, \
        core.current_namespace()
    spec = _from_template(
        ("actor", actor_id, method, label, count, generator, stream_items, concurrency_group, job_id, parent,
         owner, namespace, no_args),
        lambda: pb.TaskSpec(job_id=job_id, method=method, args=core.pack_args((), {}, label)[0] if no_args else None,
                            num_returns=count,
                            name=label, actor_id=actor_id, parent_task_id=parent, owner_address=owner,
                            namespace=namespace, generator=generator, stream_items=stream_items,
                            concurrency_group=concurrency_group))
    spec.task_id = task_id
    if not no_args:
        spec.args.CopyFrom(value)
    return_ids, refs = _returns(owner, task_id, count)
    call = PendingCall(spec, return_ids, deps, max_task_retries)
    call.on_done = on_done
    call.pins = pins
    if not core.actors.send_from_thread(call, _may_block(core)):  # see runtime/fast_lane.py
        core.post(lambda: core.actors.submit(call))
    return refs, generator


def _may_block(core: CoreWorker) -> bool:
    """Whether this thread may send on a lane (and block reading it in get): not the core's
    loop, and no event loop of the user's either (there the ref is awaited, not read by a get)."""
    if core.on_loop_thread():
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


@dataclass(frozen=True)
class CreatedActor:
    """What create_actor tells the handle it makes: the head's record for a named actor (which
    may be an existing one: `existed`), or just the new id for an unnamed one."""

    actor_id: bytes
    max_pending_calls: int
    info: pb.ActorInfo | None = None
    existed: bool = False


def create_actor(core: CoreWorker, class_id: str, class_name: str, methods: list[pb.MethodMeta], is_async: bool,
                 args: tuple, kwargs: dict, options: dict[str, Any], where: Scheduling) -> CreatedActor:
    """Creates an actor of a registered class. A named one is created before this returns (so
    a taken name fails here); an unnamed one in the background, its calls waiting for it.

    `options` are the validated actor options (name, namespace, lifetime, restarts, concurrency,
    state, runtime_env...), `where` what they mean for placing it."""
    pins: list[ObjectRef] = []
    value, deps = core.pack_args(args, kwargs, f"the constructor of {class_name}", pins)
    name = options.get("name") or ""
    job_id = core.current_job_id()
    spec = pb.ActorSpec(
        actor_id=new_actor_id(job_id), job_id=job_id, class_id=class_id, class_name=class_name,
        args=value, name=name, namespace=options.get("namespace") or core.current_namespace(),
        job_namespace=core.current_namespace(), detached=options.get("lifetime") == "detached",
        max_restarts=options["max_restarts"], max_task_retries=options["max_task_retries"],
        max_concurrency=options.get("max_concurrency") or (1000 if is_async else 1),
        is_async=is_async, required=where.required, held=where.held, methods=methods,
        owner_worker_id=core.worker_id if core.engine is not None else b"", owner_address=core.address,
        env_vars={**core.current_env_vars(), **where.env_vars},
        concurrency_groups=options.get("concurrency_groups") or {},
        max_pending_calls=options.get("max_pending_calls") or -1, state=_packed_state(options.get("state")),
        runtime_env=runtime_env.for_call(core, options.get("runtime_env")))
    if where.placement is not None:
        spec.placement.CopyFrom(where.placement)
    if where.group is not None:
        spec.placement_group.CopyFrom(where.group)
    if spec.state:
        checkpoint.created(core, spec, options.get("state"))  # its checkpoint goes when its job ends
    if name:
        reply = core.run(_create_named(core, spec, deps, bool(options.get("get_if_exists"))))
        if pins and not reply.existed:
            core.post(lambda: core.loop.create_task(_hold_constructor_pins(core, spec, pins)))
        return CreatedActor(reply.info.spec.actor_id, reply.info.spec.max_pending_calls, reply.info, reply.existed)
    core.post(lambda: _create_async(core, spec, deps, pins))
    return CreatedActor(spec.actor_id, spec.max_pending_calls)


async def _hold_constructor_pins(core: CoreWorker, spec: pb.ActorSpec, pins: list[ObjectRef]) -> None:
    """Keeps the refs nested in an actor's constructor arguments until its constructor ran (its
    worker registers its borrows before it says it started), or, for an actor that may restart
    and run its constructor again, until it is dead (see runtime/borrowing.py)."""
    after = 0
    while True:
        info = await core.actors.actor_info(spec.actor_id, after)
        if info is None or info.state == pb.DEAD or (info.state == pb.ALIVE and spec.max_restarts == 0):
            pins.clear()
            return
        after = info.version


async def _attach_deps(core: CoreWorker, spec: pb.ActorSpec, deps: list[ObjectRef]) -> None:
    if deps:
        holder = PendingCall(pb.TaskSpec(), [], deps, 0)
        await resolve_deps(core, holder)
        spec.ref_args.extend(holder.spec.ref_args)


async def _create_named(core: CoreWorker, spec: pb.ActorSpec, deps: list[ObjectRef],
                        get_if_exists: bool) -> pb.CreateActorReply:
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


def _create_async(core: CoreWorker, spec: pb.ActorSpec, deps: list[ObjectRef], pins: list[ObjectRef]) -> None:
    created = core.actors.expect_creation(spec.actor_id)

    async def create() -> None:
        try:
            await _attach_deps(core, spec, deps)
            reply = await core.head_rpc("CreateActor", pb.CreateActorRequest(spec=spec))
            created.set_result(reply.info)
            _warn_if_infeasible(reply)
        except Exception as e:
            created.set_exception(e)
            return
        if pins:
            await _hold_constructor_pins(core, spec, pins)

    asyncio.get_running_loop().create_task(create())


def _packed_state(policy: Any) -> bytes:
    """The durable-state policy (`state=kastor.state.Checkpoint(...)`) as the spec carries it."""
    return b"" if policy is None else checkpoint.pack_policy(policy)


def kill_actor(core: CoreWorker, actor_id: bytes, no_restart: bool, reason: str, delete_state: bool = False) -> None:
    """Kills an actor; `delete_state` also deletes its durable-state checkpoint (see kastor.state)."""
    reply = core.run(core.actors.kill(actor_id, no_restart, reason))
    # The head said whether it has durable state: a stateless actor's kill asks nothing more
    # (a GetActor per kill was a third of kastor.kill's time, issue 16).
    if delete_state and (reply is None or not reply.known or reply.has_state):
        checkpoint.delete_for(core, actor_id)


def cancel(core: CoreWorker, task_id: bytes, owner: str, force: bool, recursive: bool) -> None:
    """Cancels the task behind a ref, here or through its owner (see runtime/cancel.py)."""
    core.run(cancelling.cancel(core, task_id, owner, force, recursive))


def lookup_actor(core: CoreWorker, name: str, namespace: str) -> pb.ActorInfo | None:
    """The head's record of the live actor by that name, or None."""
    reply = core.head_call("GetActor", pb.GetActorRequest(name=name, namespace=namespace))
    if not reply.found or reply.info.state == pb.DEAD:
        return None
    return reply.info


def list_nodes(core: CoreWorker) -> list[pb.NodeInfo]:
    return list(core.head_call("ListNodes", pb.ListRequest()).nodes)


def request_resources(core: CoreWorker, shapes: list[dict[str, float]]) -> None:
    """Replaces the cluster's standing request_resources() with `shapes` (see kastor.autoscaler)."""
    counts: dict[tuple, int] = {}
    for shape in shapes:
        key = tuple(sorted((k, v) for k, v in shape.items() if v))
        counts[key] = counts.get(key, 0) + 1
    core.head_call("RequestResources", pb.ResourceRequest(bundles=[
        pb.ResourceDemand(shape=dict(key), kind="request", count=n) for key, n in counts.items()]))
