"""A worker process: runs leased tasks, or becomes one actor for the rest of its life.

User code runs on the main thread (tasks and default actors, one call at a time, in
arrival order), on a thread pool (`max_concurrency > 1`), or on an asyncio loop of its own
(actors with `async def` methods). The core's loop thread only moves bytes, so a method
that blocks, even in `kastor.get`, never stalls the I/O of the process.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import inspect
import logging
import os
import queue
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from kastor.runtime import args as argpack
from kastor.runtime import (
    checkpoint,
    config,
    context,
    exceptions,
    launcher,
    logging_setup,
    omp,
    placement_context,
    receive_deadline,
    retry,
    serialization,
    settings,
    worker_registration,
)
from kastor.runtime.actor_builtins import BUILTIN_METHODS, ActorExit
from kastor.runtime.core import CoreWorker, error_value
from kastor.runtime.generated import GeneratedItems
from kastor.runtime.ids import return_id
from kastor.runtime.lane_host import LaneCall, LaneHost, ServedLane
from kastor.runtime.loop_inbox import LoopInbox
from kastor.runtime.placement import own_cpus
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.worker_lease import WorkerLease
from kastor.runtime.worker_logs import LogShipper

log = logging.getLogger("kastor.worker")


class _Outbox:
    """Results waiting to go back on one Execute stream; flushed in batches."""

    def __init__(self, incarnation: Callable[[], int]) -> None:
        self.incarnation = incarnation  # every result says which instance of the actor made it
        self.results: list[pb.TaskResult] = []
        self.expected = 0
        self.delivered = 0
        self.reader_done = False
        self.event = asyncio.Event()

    def add(self, result: pb.TaskResult) -> None:
        result.incarnation = self.incarnation()
        self.results.append(result)
        self.delivered += 1
        self.event.set()

    @property
    def drained(self) -> bool:
        return self.reader_done and self.delivered >= self.expected

    async def next_batch(self) -> list[pb.TaskResult] | None:
        while not self.results:
            if self.drained:
                return None
            self.event.clear()
            await self.event.wait()
        batch, self.results = self.results, []
        return batch


@dataclass(frozen=True)
class _Run:
    """A call for the main thread."""

    spec: pb.TaskSpec
    outbox: _Outbox


@dataclass(frozen=True)
class _Construct:
    """Becoming an actor: its constructor runs on the main thread, the reply goes to `reply`
    (a future of the core's loop)."""

    spec: pb.ActorSpec
    gpu_ids: list[int]
    reply: asyncio.Future
    actor_class: pb.FunctionEntry | None = None  # its pickled class, if StartActor carried it


@dataclass(frozen=True)
class _AdoptLane:
    """A caller's lane the data server handed over: the main thread serves it (lane_host.py)."""

    lane: ServedLane


class Engine:
    def __init__(self, core: CoreWorker, lease: WorkerLease):
        self.core = core
        self.lease = lease  # checked before every call: fencing (see worker_lease)
        self.incarnation = 0  # the actor's num_restarts when this instance started
        self.pid = os.getpid()
        self.main_queue: queue.SimpleQueue[_Run | _Construct | _AdoptLane | None] = queue.SimpleQueue()
        self._lanes: LaneHost | None = None  # a serial actor's lanes, once one was handed over
        # Where a call runs, chosen once: the main thread, until this worker becomes a threaded
        # actor (its thread pools) or an async one (its event loops). See _choose_runner.
        self._runner: Callable[[pb.TaskSpec, _Outbox], None] = self._run_on_main
        self.actor_spec: pb.ActorSpec | None = None
        self._runs_actor: pb.ActorSpec | None = None  # from the constructor on (actor_spec: once it finished)
        self.restarted = False
        self.instance: Any = None
        self.durable: checkpoint.NoState | checkpoint.Durable = checkpoint.NO_STATE  # state=Checkpoint(...)
        self.pool: ThreadPoolExecutor | None = None
        self.actor_loop: asyncio.AbstractEventLoop | None = None  # an async actor's default group's loop
        # Async actors, as in Ray: each concurrency group ("" the default) has an event loop on a
        # thread of its own, and a limit, so a group whose calls block does not stall the others.
        self.group_loops: dict[str, asyncio.AbstractEventLoop] = {}
        self.group_limits: dict[str, asyncio.Semaphore] = {}
        self.group_inboxes: dict[str, LoopInbox] = {}  # calls handed to each group's loop
        self.group_pools: dict[str, ThreadPoolExecutor] = {}  # threaded actors: one per concurrency group
        self.async_tasks: dict[bytes, tuple[asyncio.AbstractEventLoop, asyncio.Task]] = {}
        self._exit_lock = threading.Lock()
        self.cancelled: set[bytes] = set()
        self.current_main_task: bytes | None = None
        self._interrupt_target: bytes | None = None
        self._blocked_wanted = False
        self._blocked_sent = False
        self._blocked_sending = False
        self._exiting = False
        self.retiring = False  # a task's max_calls was reached: exit when this lease ends
        self._main_ident = threading.main_thread().ident
        self._outboxes: set[_Outbox] = set()  # streams open, or closed with calls still running
        self._last_active = time.monotonic()

    # ---- streams (on the core loop) ----

    async def serve_stream(self, request_iterator, context_):
        outbox = _Outbox(lambda: self.incarnation)
        loop = asyncio.get_running_loop()
        self._outboxes.add(outbox)
        self._last_active = time.monotonic()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    for spec in request.tasks:
                        outbox.expected += 1
                        self.dispatch(spec, outbox)
            finally:
                outbox.reader_done = True
                outbox.event.set()

        reader = loop.create_task(read())
        ended = False  # the owner half-closed and every result went out
        try:
            while True:
                batch = await outbox.next_batch()
                if batch is None:
                    ended = True
                    break
                yield pb.ExecuteReply(results=batch)
        finally:
            reader.cancel()
            if self.actor_spec is None:
                if not ended and outbox.delivered < outbox.expected:
                    self._owner_gone(outbox)
                loop.create_task(self._release_lease_when_drained(outbox))
            else:
                self._outboxes.discard(outbox)

    def _owner_gone(self, outbox: _Outbox) -> None:
        """The lease's stream broke with calls still running: nobody will read their results
        (the owner died, shut down, or retries them elsewhere). As a raylet does for a dead
        owner's leased worker, this worker exits, and its node takes the lease back."""
        log.warning("the owner of this worker's lease went away with %d call(s) running; exiting so that the "
                    "node reclaims the lease", outbox.expected - outbox.delivered)
        self.exit(1)

    def lease_state(self) -> pb.LeaseStateReply:
        """What this worker is doing for its lease (see NodeAgent.reconcile_leases_forever)."""
        outboxes = list(self._outboxes)
        running = sum(o.expected - o.delivered for o in outboxes)
        streams = sum(1 for o in outboxes if not o.reader_done)
        busy = bool(outboxes)
        return pb.LeaseStateReply(streams=streams, running=running,
                                  idle_s=0.0 if busy else time.monotonic() - self._last_active)

    async def _release_lease_when_drained(self, outbox: _Outbox) -> None:
        while outbox.delivered < outbox.expected:
            outbox.event.clear()
            await outbox.event.wait()
        self._outboxes.discard(outbox)
        self._last_active = time.monotonic()
        if self.retiring:  # a function's max_calls is used up: leave, and the node starts a fresh worker
            log.info("worker retiring after reaching a function's max_calls")
            self.exit(0)
        if self._outboxes:
            return  # another stream of this lease is still open; its end hands the lease back
        try:  # the node also reconciles, so a last failure only delays the return
            await retry.call_async(lambda: self.core.node_stub().WorkerIdle(
                pb.WorkerIdleRequest(worker_id=self.core.worker_id), metadata=self.core.metadata, timeout=10),
                retry.RetryPolicy(attempts=4, initial_s=0.2, max_s=0.8, retry_on=(grpc.aio.AioRpcError,)))
        except grpc.aio.AioRpcError as e:
            log.warning("could not hand this worker's lease back to its node (%s); the node will take it "
                        "back when it next reconciles", e.code().name)

    def dispatch(self, spec: pb.TaskSpec, outbox: _Outbox) -> None:
        turned_away = self._turned_away(spec)
        if turned_away is not None:
            outbox.add(turned_away)
        else:
            self._runner(spec, outbox)

    def _turned_away(self, spec: pb.TaskSpec) -> pb.TaskResult | None:
        """The result of a call that is not even queued: its actor is exiting, or it names a
        concurrency group the actor does not have."""
        if self._exiting:
            return pb.TaskResult(task_id=spec.task_id, status=pb.TASK_ACTOR_EXITED)
        if spec.concurrency_group and not self._knows_group(spec.concurrency_group):
            return self._failed(spec, ValueError(
                f"{spec.name} asks for concurrency group {spec.concurrency_group!r}, which the actor does not "
                f"define; its groups are: {', '.join(sorted(self.actor_spec.concurrency_groups)) or '(none)'}. "
                f"Pass concurrency_groups={{...}} when creating the actor."))
        return None

    # ---- lanes: a serial actor's main thread reads and answers them (lane_host.py) ----

    def takes_lanes(self) -> bool:
        """On the core loop: whether the main thread serves callers' lanes itself (a constructed
        serial actor, not exiting, KASTOR_LANE_EXECUTION on); else the loop serves them."""
        spec = self.actor_spec
        return bool(settings.LANE_EXECUTION.get() and spec is not None and not self._exiting
                    and not spec.is_async and spec.max_concurrency <= 1 and not spec.concurrency_groups
                    and self._runner == self._run_on_main)

    def adopt_lane(self, sock: socket.socket, received: bytes = b"") -> None:
        """On the core loop: a plain-TCP lane whose token the data server checked and accepted
        (after `takes_lanes`), and the bytes it read past the token; the socket is the main
        thread's from now on."""
        outbox = _Outbox(lambda: self.incarnation)
        outbox.reader_done = True  # no stream reader: the main thread counts the lane's calls itself
        self._outboxes.add(outbox)
        self._last_active = time.monotonic()
        loop = self.core.loop

        def closed() -> None:  # on the main thread; the outboxes are the loop's
            try:
                loop.call_soon_threadsafe(self._outboxes.discard, outbox)
            except RuntimeError:  # the loop is closed: the process is ending
                pass
        self._to_main(_AdoptLane(ServedLane(sock, outbox, closed, bytearray(received))))

    def lane_stats(self) -> dict[str, int]:
        """Lanes taken over and open, calls answered on them by the main thread, and calls
        waiting in `main_queue` (from the loop's path), lane results that waited for the
        owners to acknowledge the borrows their calls' arguments made, and the main thread's
        waits for a lane's next call that spun and that found it spinning (tests and diagnostics)."""
        lanes = self._lanes
        queued = self.main_queue.qsize()
        if lanes is None:
            return {"adopted": 0, "open": 0, "calls": 0, "flush_waits": 0, "queued": queued, "spins": 0,
                    "spin_hits": 0}
        return {"adopted": lanes.adopted, "open": lanes.open_lanes(), "calls": lanes.calls,
                "flush_waits": lanes.flush_waits, "queued": queued, "spins": lanes.spin.spins,
                "spin_hits": lanes.spin.hits}

    def _to_main(self, item: _Run | _Construct | _AdoptLane | None) -> None:
        self.main_queue.put(item)
        lanes = self._lanes
        if lanes is not None:
            lanes.wake()  # the main thread may be waiting on its lanes, not on the queue

    def _next_for_main(self) -> _Run | _Construct | _AdoptLane | LaneCall | None:
        """The main thread's next work: from `main_queue`, or, while lanes are open, a call read
        from one of them (LaneHost.next_item says in which order)."""
        lanes = self._lanes
        if lanes is None or not lanes.active:
            return self.main_queue.get()
        return lanes.next_item(self.main_queue)

    def _serve_lane_call(self, call: LaneCall) -> None:
        """Runs a lane's call on this (main) thread and writes its result on the lane, keeping
        the loop path's rules: refused when exiting or cancelled, fenced by the lease check, the
        durable checkpoint before the result, and the borrows its arguments made acknowledged
        by their owners before the result goes (see _post)."""
        spec = call.spec
        result = self._turned_away(spec)
        if result is None:
            result = self.durable.after_call(self.execute(spec), self.instance, self._checkpoint_failed)
            if not self.core.borrows.settled():
                self._lanes.flush_waits += 1  # type: ignore[union-attr]
                flushed = threading.Event()
                self.core.post(lambda: self.core.borrows.after_flush(flushed.set))
                flushed.wait()
        result.incarnation = self.incarnation
        self._lanes.answer(call, result)  # type: ignore[union-attr]
        self._last_active = time.monotonic()

    # ---- runners: one per mode ----

    def _choose_runner(self) -> None:
        """Once the actor is constructed: an async actor runs calls on its groups' event loops,
        a threaded one (max_concurrency > 1, or concurrency groups) on its groups' thread pools."""
        if self.actor_loop is not None:
            self._runner = self._run_on_actor_loop
        elif self.pool is not None or self.group_pools:
            self._runner = self._run_on_pool

    def _run_on_main(self, spec: pb.TaskSpec, outbox: _Outbox) -> None:
        self._to_main(_Run(spec, outbox))

    def _run_on_pool(self, spec: pb.TaskSpec, outbox: _Outbox) -> None:
        pool = self.group_pools[spec.concurrency_group] if spec.concurrency_group else self.pool
        if pool is None:  # a call of the default group of an actor whose only pools are its groups'
            self._run_on_main(spec, outbox)
        else:
            pool.submit(self._run_and_post, spec, outbox)

    def _run_on_actor_loop(self, spec: pb.TaskSpec, outbox: _Outbox) -> None:
        # One wake-up of the group's loop per burst of calls, not one per call (loop_inbox.py).
        self.group_inboxes[spec.concurrency_group].post(lambda: self._start_async(spec, outbox))

    def _knows_group(self, name: str) -> bool:
        return self.actor_spec is not None and name in self.actor_spec.concurrency_groups

    def _post(self, outbox: _Outbox, result: pb.TaskResult) -> None:
        result = self.durable.after_call(result, self.instance, self._checkpoint_failed)  # durable before sent
        # Sent once the owners acknowledged the borrows this call's arguments made here: until
        # the result is back, the caller's pins keep those objects (see runtime/borrowing.py).
        self.core.post(lambda: self.core.borrows.after_flush(lambda: outbox.add(result)))

    def _checkpoint_failed(self, result: pb.TaskResult, error: BaseException) -> pb.TaskResult:
        """The call ran, but the actor's state could not be checkpointed (kastor.state): it fails."""
        for i, value in enumerate(result.returns):
            self.core.free_value(value)
            self.core.pins.release(return_id(result.task_id, i))
        return pb.TaskResult(task_id=result.task_id, status=pb.TASK_APP_ERROR, attempt=result.attempt,
                             error=self._error_value(f"the checkpoint of {self.actor_spec.class_name}", error))

    def _run_and_post(self, spec: pb.TaskSpec, outbox: _Outbox) -> None:
        self._post(outbox, self.execute(spec))

    # ---- becoming an actor ----

    async def start_actor(self, request: pb.StartActorRequest) -> pb.StartActorReply:
        self.restarted = request.num_restarts > 0
        self.incarnation = request.num_restarts
        fut = asyncio.get_running_loop().create_future()
        shipped = request.actor_class if request.HasField("actor_class") else None
        self._to_main(_Construct(request.spec, list(request.gpu_ids), fut, shipped))
        reply = await fut
        # Started only once the owners acknowledged the borrows the constructor's arguments made:
        # the creator keeps those refs until then (see runtime/borrowing.py).
        flushed = asyncio.get_running_loop().create_future()
        self.core.borrows.after_flush(lambda: flushed.done() or flushed.set_result(None))
        await flushed
        return reply

    def running_actor(self) -> pb.ActorSpec | None:
        """The actor this process runs, from the start of its constructor on (what
        `get_runtime_context().current_actor` names, in `__init__` too, as in Ray)."""
        return self._runs_actor

    def _construct(self, spec: pb.ActorSpec, gpu_ids: list[int],
                   actor_class: pb.FunctionEntry | None = None) -> pb.StartActorReply:
        if gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_ids))
        # this process is the actor's alone from now on
        self._runs_actor = spec
        self.core.become_actor(spec.actor_id)
        os.environ.update({**omp.variables(own_cpus(spec.held), spec.env_vars), **spec.env_vars})
        task_context = context.TaskContext(
            spec.job_id, b"", spec.actor_id, tuple(gpu_ids), spec.job_namespace, spec.class_name,
            tuple(spec.env_vars.items()))
        token = context.current_task.set(task_context)
        placement_context.enter_actor(spec.placement_group)
        instance = None
        try:
            cls = self.core.load_code(spec.class_id, actor_class)
            args, kwargs = self.load_args(spec.args, list(spec.ref_args), spec.actor_id)
            self.durable = checkpoint.attach(spec, self.exit)  # restores from its checkpoint, if it has one
            if spec.is_async:
                self._start_actor_loops(spec.max_concurrency or 1000, dict(spec.concurrency_groups))
                instance = self.durable.restore_or(
                    cls, lambda: self._construct_on_loop(cls, args, kwargs, task_context), self.actor_loop)
            else:
                instance = self.durable.restore_or(cls, lambda: cls(*args, **kwargs))
            with self._exit_lock:
                if self._exiting:  # it called exit_actor() and caught the SystemExit, or a task of it did
                    raise ActorExit(0)
                self.instance = instance
                self.actor_spec = spec  # from here on, request_exit() reports the exit itself
        except ActorExit:  # exit_actor() in the constructor: a graceful exit, before the actor ever served
            self.instance = instance  # its __ray_shutdown__ runs if the constructor finished
            self.run_shutdown_hooks()  # before replying: the node ends this process once it hears
            message = f"exit_actor() was called in the constructor of {spec.class_name}"
            return pb.StartActorReply(started=False, message=message, error=error_value(exceptions.ActorDiedError(
                f"The actor {spec.class_name} ({spec.actor_id.hex()}) exited: {message}.", spec.actor_id.hex())))
        except BaseException as e:  # the constructor's failure is the actor's death cause
            return pb.StartActorReply(started=False, error=self._error_value(f"{spec.class_name}.__init__", e),
                                      message=f"{type(e).__name__}: {e}")
        finally:
            context.current_task.reset(token)
        if not spec.is_async:
            if spec.max_concurrency > 1:
                self.pool = ThreadPoolExecutor(spec.max_concurrency, thread_name_prefix="kastor-actor")
            self.group_pools = {name: ThreadPoolExecutor(limit, thread_name_prefix=f"kastor-{name}")
                                for name, limit in spec.concurrency_groups.items()}
        self._choose_runner()
        # The data port goes into the actor's record, so that its callers need not ask for it.
        return pb.StartActorReply(started=True, pid=self.pid, address=self.core.address,
                                  worker_id=self.core.worker_id, data_port=self.core.data_port())

    def _construct_on_loop(self, cls: type, args: tuple, kwargs: dict, task_context: context.TaskContext) -> Any:
        """An async actor's constructor runs on its default loop, as in Ray: it may create asyncio
        tasks, and `asyncio.get_event_loop()` there is the loop its default-group methods run on."""
        async def make() -> tuple[Any, BaseException | None]:
            context.current_task.set(task_context)
            try:
                return cls(*args, **kwargs), None
            except BaseException as e:  # returned, not raised: a SystemExit would stop the loop
                return None, e

        instance, error = asyncio.run_coroutine_threadsafe(make(), self.actor_loop).result()
        if error is not None:
            raise error
        return instance

    def _start_actor_loops(self, concurrency: int, groups: dict[str, int]) -> None:
        for name, limit in {"": concurrency, **groups}.items():
            self.group_loops[name], self.group_limits[name] = self._start_loop(name, limit)
            self.group_inboxes[name] = LoopInbox(self.group_loops[name])
        self.actor_loop = self.group_loops[""]

    @staticmethod
    def _start_loop(name: str, limit: int) -> tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            ready.set()
            while True:
                try:
                    loop.run_forever()
                    return
                except ActorExit:  # exit_actor() in a task nobody awaits: the engine is already exiting
                    continue
                except BaseException:  # KeyboardInterrupt and the like, from a task: the loop serves on
                    log.exception("an asyncio task of the actor raised out of its event loop")

        threading.Thread(target=run, name=f"kastor-actor-loop-{name or 'default'}", daemon=True).start()
        ready.wait()
        return loop, asyncio.Semaphore(limit)

    # ---- running calls ----

    def main_loop(self) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)
        while True:
            item = self._next_for_main()
            if item is None:
                return
            if isinstance(item, LaneCall):
                self._serve_lane_call(item)
            elif isinstance(item, _Construct):
                reply = self._construct(item.spec, item.gpu_ids, item.actor_class)
                self.core.loop.call_soon_threadsafe(item.reply.set_result, reply)
            elif isinstance(item, _AdoptLane):
                if self._lanes is None:
                    self._lanes = LaneHost(receive_deadline.receive_timeout_s())
                self._lanes.adopt(item.lane)
            else:
                self._post(item.outbox, self.execute(item.spec))

    def _label(self, spec: pb.TaskSpec) -> str:
        """How the driver prefixes this call's output: the actor's class, or the task's function
        (without the `outer.<locals>.` of one defined inside another function)."""
        if self.actor_spec is not None:
            return self.actor_spec.class_name
        return spec.name.rsplit(".<locals>.", 1)[-1]

    def _env_vars(self, spec: pb.TaskSpec) -> tuple[tuple[str, str], ...]:
        """The runtime_env variables this call runs with: its own (a task), or its actor's."""
        env = self.actor_spec.env_vars if self.actor_spec is not None else spec.env_vars
        return tuple(env.items()) if env else ()

    def output_owner(self) -> tuple[bytes, str] | None:
        """Whose job hears lines printed outside any call: an actor's own threads belong to it."""
        spec = self.actor_spec
        return (spec.job_id, spec.class_name) if spec is not None else None

    def _on_sigint(self, signum, frame) -> None:
        target = self._interrupt_target
        if target is not None and target == self.current_main_task:
            self._interrupt_target = None
            raise KeyboardInterrupt

    def _refused(self, spec: pb.TaskSpec) -> pb.TaskResult | None:
        """The result of a call that must not start: cancelled while queued, or its actor exiting."""
        if spec.task_id in self.cancelled:
            self.cancelled.discard(spec.task_id)
            return pb.TaskResult(task_id=spec.task_id, status=pb.TASK_CANCELLED)
        if self._exiting:
            return pb.TaskResult(task_id=spec.task_id, status=pb.TASK_ACTOR_EXITED)
        return None

    def _task_context(self, spec: pb.TaskSpec) -> context.TaskContext:
        # Built for every call, so the common case is kept cheap: no tuple of an empty map or list.
        return context.TaskContext(spec.job_id, spec.task_id, spec.actor_id,
                                   tuple(spec.gpu_ids) if spec.gpu_ids else (), spec.namespace,
                                   self._label(spec), self._env_vars(spec), spec.name)

    def _invoke(self, spec: pb.TaskSpec) -> Any:
        """Loads the call's code and arguments and calls it (a coroutine or generator is returned as is)."""
        fn = self._callable(spec)
        args, kwargs = self.load_args(spec.args, list(spec.ref_args), spec.task_id)
        return fn(*args, **kwargs)

    def _raised(self, spec: pb.TaskSpec, error: BaseException) -> pb.TaskResult:
        """The result of a call that raised: an exit_actor() (even one caught and followed by
        another error) ends the actor; anything else is the call's error, and we serve on."""
        if isinstance(error, ActorExit) or self._exiting:
            return pb.TaskResult(task_id=spec.task_id, status=pb.TASK_ACTOR_EXITED)
        return self._failed(spec, error)

    def _returned(self, spec: pb.TaskSpec, value: Any) -> pb.TaskResult:
        if self._exiting and spec.actor_id:  # exit_actor() was called, and caught: the actor ends all the same
            return pb.TaskResult(task_id=spec.task_id, status=pb.TASK_ACTOR_EXITED)
        return self._returns(spec, value)

    def execute(self, spec: pb.TaskSpec) -> pb.TaskResult:
        """Runs one call to completion on the current thread (the main one, or a pool's)."""
        refused = self._refused(spec)
        if refused is not None:
            return refused
        self.lease.check()
        on_main = threading.get_ident() == self._main_ident
        token = context.current_task.set(self._task_context(spec))
        placement_context.enter_task(spec.placement_group)  # reset by the next task this thread runs
        if on_main:
            self.current_main_task = spec.task_id
        if self.actor_spec is None:  # an actor's worker keeps the value its creation set
            omp.apply_for_task(spec.num_cpus, spec.env_vars)
        restore_env = _set_environ(spec.env_vars)
        try:
            if spec.gpu_ids:
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpu_ids))
            value = self._invoke(spec)
            if spec.generator:
                value = self._generated(spec, value)
        except KeyboardInterrupt as e:  # cancel() interrupting the main thread
            if on_main:
                self.current_main_task = None
            return self._failed(spec, e, cancelled=True)
        except BaseException as e:  # user code may raise anything
            return self._raised(spec, e)
        finally:
            if on_main:
                self.current_main_task = None
            context.current_task.reset(token)
            restore_env()
            self._count_call(spec)
        return self._returned(spec, value)

    def _count_call(self, spec: pb.TaskSpec) -> None:
        if spec.max_calls and not spec.actor_id:
            # It leaves when this lease ends even with calls left: the owner of its next lease would
            # count max_calls afresh (a lingering lease handed back after one call, then granted
            # again, ran a max_calls=2 function three times).
            self.retiring = True

    def _start_async(self, spec: pb.TaskSpec, outbox: _Outbox) -> None:
        loop = asyncio.get_running_loop()
        self.async_tasks[spec.task_id] = (loop, loop.create_task(self._run_async(spec, outbox)))

    async def _run_async(self, spec: pb.TaskSpec, outbox: _Outbox) -> None:
        try:
            async with self.group_limits[spec.concurrency_group]:
                result = await self._execute_async(spec)
        except asyncio.CancelledError:
            result = pb.TaskResult(task_id=spec.task_id, status=pb.TASK_CANCELLED)
        finally:
            self.async_tasks.pop(spec.task_id, None)
        self._post(outbox, result)

    async def _execute_async(self, spec: pb.TaskSpec) -> pb.TaskResult:
        """Runs one call of an async actor on its group's event loop (the context is the asyncio task's)."""
        refused = self._refused(spec)
        if refused is not None:
            return refused
        self.lease.check()
        context.current_task.set(self._task_context(spec))
        try:
            value = self._invoke(spec)
            if inspect.iscoroutine(value):  # not asyncio.iscoroutine: that takes plain generators too
                value = await value
            if spec.generator:
                value = await self._generated_async(spec, value)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            return self._raised(spec, e)
        return self._returned(spec, value)

    def _generated(self, spec: pb.TaskSpec, items: Any) -> GeneratedItems:
        """Runs a generator to its end, reporting each item to the caller as it comes (or
        collecting them, for a caller behind the client port). An error the generator raises
        becomes the item after the last one."""
        collected: list[pb.Value] = []
        count = 0
        try:
            for item in items:
                self._emit(spec, count, self._item_value(spec, count, item), collected)
                count += 1
        except Exception as e:
            self._emit(spec, count, self._error_value(spec.name, e), collected)
            count += 1
        return self._items(spec, count, collected)

    async def _generated_async(self, spec: pb.TaskSpec, items: Any) -> GeneratedItems:
        if not hasattr(items, "__aiter__"):
            return self._generated(spec, items)  # a sync generator method runs on the actor's loop, as sync methods do
        collected: list[pb.Value] = []
        count = 0
        try:
            async for item in items:
                await self._emit_async(spec, count, self._item_value(spec, count, item), collected)
                count += 1
        except Exception as e:
            await self._emit_async(spec, count, self._error_value(spec.name, e), collected)
            count += 1
        return self._items(spec, count, collected)

    def _emit(self, spec: pb.TaskSpec, index: int, value: pb.Value, collected: list[pb.Value]) -> None:
        if spec.stream_items:  # waits for the caller's ack: a slow consumer slows the generator
            self.core.run(self._report_item(spec, index, value))
        else:
            collected.append(value)

    async def _emit_async(self, spec: pb.TaskSpec, index: int, value: pb.Value, collected: list[pb.Value]) -> None:
        if spec.stream_items:
            await asyncio.wrap_future(self.core.spawn(self._report_item(spec, index, value)))
        else:
            collected.append(value)

    async def _report_item(self, spec: pb.TaskSpec, index: int, value: pb.Value) -> None:
        await self.core.worker_stub(spec.owner_address).ReportGeneratorItem(
            pb.GeneratorItem(task_id=spec.task_id, index=index, value=value), metadata=self.core.metadata, timeout=60)

    @staticmethod
    def _items(spec: pb.TaskSpec, count: int, collected: list[pb.Value]) -> GeneratedItems:
        if spec.stream_items:
            return GeneratedItems(count)
        return GeneratedItems(count, [v.SerializeToString() for v in collected])

    def _item_value(self, spec: pb.TaskSpec, index: int, item: Any) -> pb.Value:
        # Item k becomes the caller's object return_id(task, k + 1); index 0 is the call's own return.
        return self.core.make_value(item, f"item {index} yielded by {spec.name}", return_id(spec.task_id, index + 1),
                                    pin=True, owner=spec.owner_address)

    def _callable(self, spec: pb.TaskSpec):
        if spec.method:
            if self.instance is None:
                raise exceptions.KastorSystemError("this worker hosts no actor")
            builtin = BUILTIN_METHODS.get(spec.method)
            if builtin is not None:
                return functools.partial(builtin, self.instance)
            try:
                return getattr(self.instance, spec.method)
            except AttributeError:
                raise AttributeError(
                    f"'{type(self.instance).__name__}' actor has no method '{spec.method}'") from None
        return self.core.load_code(spec.function_id)

    def load_args(self, packed: pb.Value, ref_args: list[pb.Value], task_id: bytes) -> tuple[tuple, dict]:
        args, kwargs = self.core.decode(task_id, packed)
        values = [self.core.decode(task_id, v) for v in ref_args]  # raises a failed dependency's error
        return argpack.fill_slots(args, kwargs, values)

    def _returns(self, spec: pb.TaskSpec, value: Any) -> pb.TaskResult:
        n = spec.num_returns
        if n == 1:
            values = [value]
        elif n == 0:
            values = []
        else:
            try:
                values = list(value)
            except TypeError:
                values = None
            if values is None or len(values) != n:
                err = ValueError(f"{spec.name} has num_returns={n} but returned {type(value).__name__} "
                                 f"{'of length ' + str(len(values)) if values is not None else ''}; return a "
                                 f"sequence of exactly {n} values.")
                return self._failed(spec, err)
        packed: list[pb.Value] = []
        try:
            for i, v in enumerate(values):
                packed.append(self.core.make_value(v, f"the return value of {spec.name}", return_id(spec.task_id, i),
                                                   pin=True, owner=spec.owner_address))
        except (serialization.SerializationError, exceptions.ObjectStoreFullError) as e:
            for i, stored in enumerate(packed):  # the returns stored before this one would never be freed
                self.core.free_value(stored)
                self.core.pins.release(return_id(spec.task_id, i))
            return self._failed(spec, e)  # the caller's get raises it (a TaskError that is also this error)
        return pb.TaskResult(task_id=spec.task_id, status=pb.TASK_OK, returns=packed, attempt=spec.attempt)

    def _failed(self, spec: pb.TaskSpec, error: BaseException, cancelled: bool = False) -> pb.TaskResult:
        if cancelled:
            return pb.TaskResult(task_id=spec.task_id, status=pb.TASK_CANCELLED)
        return pb.TaskResult(task_id=spec.task_id, status=pb.TASK_APP_ERROR,
                             error=self._error_value(spec.name, error), attempt=spec.attempt)

    def _error_value(self, name: str, error: BaseException) -> pb.Value:
        tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        cause: BaseException | None = error
        if isinstance(error, exceptions.TaskError):
            cause = error.cause
        err = exceptions.TaskError(name, tb, cause, self.pid, self.core.ip)
        try:
            return error_value(err)
        except serialization.SerializationError:
            return error_value(exceptions.TaskError(name, tb, None, self.pid, self.core.ip))

    # ---- cancellation, blocking, exit ----

    def cancel(self, task_id: bytes, force: bool, recursive: bool) -> None:
        if recursive:
            for child in self.core.tasks.children_of(task_id):
                self.core.tasks.cancel(child, force, recursive)
        if task_id == self.current_main_task:
            if force:
                os._exit(1)
            self._interrupt_target = task_id
            signal.pthread_kill(self._main_ident, signal.SIGINT)
        elif (running := self.async_tasks.get(task_id)) is not None:
            loop, task = running
            loop.call_soon_threadsafe(task.cancel)
        else:
            self.cancelled.add(task_id)

    def notify_blocked(self, blocked: bool, waiting_on: list[bytes] = ()) -> None:
        """A leased task blocked in get/wait lends its CPU back, so nested tasks can run.

        As in Ray, a get of values that are ready (here: that their owners have ready) is not
        blocked: the CPU is lent only once the owners have answered and a value is still
        missing. Lending it at once made a node start a worker per task that reads refs.
        """
        if self.actor_spec is not None:
            return
        self._blocked_wanted = blocked
        if not blocked:
            self.core.post(self._send_blocked_state)
            return
        store = self.core.store

        def if_still_waiting() -> None:
            if not all(store.contains(oid) for oid in waiting_on):
                self._send_blocked_state()

        self.core.post(lambda: self.core.after_probes(if_still_waiting))

    def _send_blocked_state(self) -> None:
        if self._blocked_sending or self._blocked_wanted == self._blocked_sent:
            return
        self._blocked_sending = True

        async def send() -> None:
            try:
                while self._blocked_wanted != self._blocked_sent:
                    want = self._blocked_wanted
                    await self.core.node_stub().NotifyBlocked(
                        pb.BlockedRequest(worker_id=self.core.worker_id, blocked=want),
                        metadata=self.core.metadata, timeout=30)
                    self._blocked_sent = want
            except grpc.aio.AioRpcError:
                pass
            finally:
                self._blocked_sending = False

        self.core.loop.create_task(send())

    def request_exit(self, cause: str) -> None:
        """exit_actor() or __ray_terminate__ (Ray's graceful exit): from now on no call runs and
        each one queued is answered ACTOR_EXITED; the head hears the exit was on purpose (so no
        restart), then `__ray_shutdown__` and the atexit handlers run, and the process leaves.

        Safe to call more than once and from any thread; the first cause wins."""
        with self._exit_lock:
            if self._exiting:
                return
            self._exiting = True
            spec = self.actor_spec
        if spec is None:
            return  # in the constructor: _construct runs the hooks and answers the start request

        async def leave() -> None:
            try:
                await self.core.head_rpc("ReportWorkerDeath", pb.WorkerDeath(
                    node_id=self.core.node_id, worker_id=self.core.worker_id, actor_id=spec.actor_id,
                    intentional=True, cause=cause), timeout=10)
            except (grpc.aio.AioRpcError, ConnectionError):
                pass
            await asyncio.to_thread(self.run_shutdown_hooks)
            await asyncio.sleep(0.2)  # let the outboxes flush the last results
            self.exit(0)

        self.core.post(lambda: self.core.loop.create_task(leave()))

    def exit_if_idle(self) -> str:
        """Exits soon if this worker is idle and nobody needs it; else says why not (as Ray's
        Exit does: a worker that owns objects or actors others may still use stays)."""
        if self.actor_spec is not None:
            return "it runs an actor"
        if self._outboxes or self._exiting:
            return "it is running calls"
        if self.core.serves_objects():
            return "it owns objects that may still be used"
        if self.core.actors.owns_actors():
            return "it owns actors"
        self._exiting = True
        self.core.loop.call_later(0.05, self.exit, 0)
        return ""

    def run_shutdown_hooks(self) -> None:
        """The actor's `__ray_shutdown__`, then its atexit handlers, within the graceful-shutdown
        timeout (KASTOR_ACTOR_GRACEFUL_SHUTDOWN_TIMEOUT_S, Ray's actor_graceful_shutdown_timeout_ms):
        cleanup code that hangs cannot keep a dead actor's process, and its resources, alive."""
        done = threading.Event()

        def run() -> None:
            try:
                hook = getattr(self.instance, "__ray_shutdown__", None) if self.instance is not None else None
                if callable(hook):
                    try:
                        result = hook()
                        if inspect.iscoroutine(result):
                            asyncio.run(result)
                    except BaseException:  # user cleanup code; the actor exits regardless
                        log.exception("the actor's __ray_shutdown__ raised; exiting anyway")
                atexit._run_exitfuncs()  # prints each handler's error itself, and goes on
            finally:
                done.set()

        threading.Thread(target=run, name="kastor-actor-shutdown", daemon=True).start()
        timeout = config.actor_graceful_shutdown_timeout_s()
        if not done.wait(timeout):
            log.warning("the actor's __ray_shutdown__ and atexit handlers did not finish within %ss "
                        "(KASTOR_ACTOR_GRACEFUL_SHUTDOWN_TIMEOUT_S); exiting without them", timeout)

    def exit(self, code: int) -> None:
        logging.shutdown()
        os._exit(code)


def _set_environ(variables) -> Callable[[], None]:
    """Sets a task's runtime_env variables in this (reused) worker; returns how to undo it.

    Tasks run one at a time per worker, so the process environment is theirs meanwhile.
    """
    if not variables:
        return lambda: None
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)

    def restore() -> None:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return restore


# Registering with the node agent. RegisterWorker is idempotent, so an agent that is slow to
# answer (a loaded machine) is asked again with backoff until it would give up on this worker
# anyway (it kills one that has not registered within KASTOR_STARTUP_TIMEOUT_S).
REGISTER_ATTEMPT_S = 10.0
REGISTER_RETRY = retry.RetryPolicy(deadline_s=config.STARTUP_TIMEOUT_S, initial_s=0.1, max_s=2.0, jitter=0.2,
                                   retry_on=(grpc.RpcError,),
                                   retry_codes=(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED))


def register(core: CoreWorker) -> int | None:
    """Registers this worker with its node agent; returns the socket pair it registered on, if
    any (worker_registration). A worker that cannot register exits with a message naming the
    agent, instead of dying on an unhandled error."""
    pair = worker_registration.announce(core.worker_id, core.address, core.data_port())
    if pair is not None:
        return pair  # on the pair its agent gave it: no channel to open, no call for the agent to serve
    request = pb.RegisterWorkerRequest(worker_id=core.worker_id, address=core.address, pid=os.getpid(),
                                       data_port=core.data_port())

    def attempt() -> None:
        core.node_call("RegisterWorker", request, timeout=REGISTER_ATTEMPT_S)

    def on_retry(error: BaseException, attempt_no: int, delay: float) -> None:
        log.warning("could not register with the node agent at %s yet (%s); asking again in %.1fs",
                    core.node_address, error.code().name if isinstance(error, grpc.RpcError) else error, delay)

    try:
        retry.call(attempt, REGISTER_RETRY, on_retry=on_retry)
    except grpc.RpcError as e:
        log.error("worker %s could not register with its node agent at %s within %.0fs (KASTOR_STARTUP_TIMEOUT_S): "
                  "%s; exiting (the agent starts another if it still needs one)", core.worker_id.hex()[:8],
                  core.node_address, config.STARTUP_TIMEOUT_S, e.details() if hasattr(e, "details") else e)
        logging.shutdown()
        os._exit(1)
    return None


def main() -> None:
    logging_setup.configure("worker")
    core = CoreWorker(
        head_address=settings.HEAD_ADDRESS.require(), token=settings.TOKEN.require(),
        node_address=settings.NODE_ADDRESS.require(), node_id=settings.NODE_ID.require(),
        store_dir=settings.STORE_DIR.require(), ip=settings.NODE_IP.get(),
        worker_id=bytes.fromhex(settings.WORKER_ID.require()), is_driver=False)
    context.core = core
    core.post(lambda: launcher.watch_parent(core.loop, lambda: os._exit(0)))  # the node agent holds our stdin
    lease = WorkerLease(core, settings.NODE_LEASE_FILE.require())
    engine = Engine(core, lease)
    core.engine = engine
    LogShipper(core, engine.output_owner).install()
    pair = register(core)
    # The agent sends StartActor and Exit on the pair (gRPC's serve the others). Held here for
    # the process's life: the loop keeps only a weak reference to a task, which a collection ends.
    serving_pair = core.spawn(worker_registration.serve(pair, engine.start_actor, engine.exit_if_idle)) \
        if pair is not None else None
    lease.start()  # no call runs without the node's lease, and none comes before registration
    log.info("worker %s serving on %s (host %s)", core.worker_id.hex()[:8], core.address, socket.gethostname())
    engine.main_loop()
    del serving_pair


if __name__ == "__main__":
    main()
