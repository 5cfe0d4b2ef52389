"""A submitted call on the owner's side, from `.remote()` until its results are stored.

Shared by normal tasks and actor calls: both wait for their top-level argument refs, then
travel on an Execute stream, and finish by storing results (or an error) under their ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from kastor.runtime import exceptions, task_events
from kastor.runtime.memory_store import settling
from kastor.runtime.object_ref import ObjectRef
from kastor.runtime.owned_values import OwnedValues
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.serialization import error_value


class PendingCall:
    __slots__ = ("spec", "return_ids", "deps", "resolved", "retries_left", "retry_exceptions", "cancelled",
                 "key", "required", "stream", "force_cancel", "finished", "placement", "on_done", "pins",
                 "lane")

    def __init__(self, spec: pb.TaskSpec, return_ids: list[bytes], deps: list[ObjectRef],
                 retries_left: int, retry_exceptions: bool | tuple = False,
                 key: tuple = (), required: dict | None = None, placement: pb.Placement | None = None):
        self.spec = spec
        self.return_ids = return_ids
        self.deps = deps          # held until the call finishes, so their values stay stored
        self.resolved = not deps
        self.finished = False
        self.retries_left = retries_left
        self.retry_exceptions = retry_exceptions
        self.cancelled = False
        self.force_cancel = False
        self.key = key
        self.required = required or {}
        self.placement = placement  # a task's scheduling_strategy, when not DEFAULT
        self.on_done: Callable[[], None] | None = None  # e.g. a handle counting its pending calls
        self.stream = None
        self.pins: list[ObjectRef] = []  # refs nested in the arguments, held until the call's results are back
        # The actor's lane (fast_lane.FastLane) that counts this call as one on the loop's path:
        # its `loop_done` goes up when the call finishes. A slot, not a closure wrapping
        # `on_done`: every pipelined call paid for one (bench/README.md, "Pipelined calls").
        self.lane = None

    @property
    def ready(self) -> bool:
        return self.resolved

    def take_retry(self) -> bool:
        if self.retries_left == 0:
            return False
        if self.retries_left > 0:
            self.retries_left -= 1
        self.spec.attempt += 1
        return True


async def resolve_deps(owned: OwnedValues, call: PendingCall) -> None:
    """Waits for the call's top-level argument refs and attaches their stored values."""
    loop = asyncio.get_running_loop()
    futures = []
    for ref in call.deps:
        fut = loop.create_future()
        owned.value_when_ready(ref, settling(fut))
        futures.append(fut)
    call.spec.ref_args.extend(await asyncio.gather(*futures))
    call.resolved = True


def store_result(owned: OwnedValues, call: PendingCall, result: pb.TaskResult) -> None:
    store_results(owned, ((call, result),))


def store_results(owned: OwnedValues, finished: Iterable[tuple[PendingCall, pb.TaskResult]]) -> None:
    """`store_result` for the calls of one results frame: their values go into the store in
    one batch, which takes the store's lock and wakes its waiters once, not once per call, and
    their task events are recorded under one lock (bench/README.md, "Pipelined calls")."""
    items: list[tuple[bytes, pb.Value]] = []
    ended: list[tuple[bytes, bool]] = []
    for call, result in finished:
        if result.status == pb.TASK_OK:
            values = list(result.returns)
        elif result.status == pb.TASK_CANCELLED:
            values = [error_value(exceptions.TaskCancelledError(call.spec.task_id.hex()))] * len(call.return_ids)
        else:
            values = [result.error] * len(call.return_ids)
        items.extend(_settle(owned, call, values, ended))
    task_events.finished_many(ended)
    owned.objects.store_returns(items)


def store_plain(owned: OwnedValues, call: PendingCall, value: pb.Value) -> None:
    """`store_result` for a call with one return whose value is plain (inline, no refs, no
    error) and no `on_done`: a lane call's result read by its caller's get. Its ref stays
    gettable, and served to borrowers, as any owned value (ObjectTable.store_plain_return)."""
    call.finished = True
    task_events.finished(call.spec, False)
    call.deps = []
    call.pins = []
    args = call.spec.args
    if args.location.path:
        owned.free_value(args)
    owned.objects.store_plain_return(call.return_ids[0], value)


def fail(owned: OwnedValues, call: PendingCall, exc: BaseException) -> None:
    store_values(owned, call, [error_value(exc)] * len(call.return_ids))


def store_values(owned: OwnedValues, call: PendingCall, values: list[pb.Value]) -> None:
    owned.objects.store_returns(_settle(owned, call, values))


def _settle(owned: OwnedValues, call: PendingCall, values: list[pb.Value],
            ended: list[tuple[bytes, bool]] | None = None) -> zip:
    """Everything finishing a call takes but the storing: its (return id, value) pairs to store.
    Its task event goes to `ended` when given (the caller records a batch), else is recorded."""
    call.finished = True
    failed = any(v.is_error for v in values)
    if ended is None:
        task_events.finished(call.spec, failed)
    else:
        ended.append((call.spec.task_id, failed))
    lane = call.lane
    if lane is not None:  # on the loop only: the one writer of loop_done
        call.lane = None
        lane.loop_done += 1
    if call.on_done is not None:
        call.on_done()
        call.on_done = None
    call.deps = []  # the argument refs may go now
    call.pins = []  # the worker registered its borrows of the nested ones before it replied
    args = call.spec.args
    if args.location.path:  # a large argument lived in the store for this call only
        owned.free_value(args)
    return zip(call.return_ids, values, strict=True)
