"""CoreWorker: the part of every driver and worker that owns objects and submits work.

Each process runs one, with an asyncio loop on a background thread that holds all gRPC
channels and the process's own server. User threads hand work to the loop through a
coalescing inbox, so a burst of `.remote()` calls wakes the loop once. Calls go straight
from here to the worker that runs them; the head is asked only for placement and names.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import itertools
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import cloudpickle
import grpc
from kastor.runtime import args as argpack
from kastor.runtime import (
    auth,
    borrowing,
    config,
    context,
    core_service,
    driver_store,
    event_loops,
    exceptions,
    owner_fetch,
    pickler,
    rpc,
    serialization,
    settings,
    store_owners,
    store_recycle,
    tls,
    transport,
)
from kastor.runtime.actor_submitter import ActorSubmitter
from kastor.runtime.data_server import DataServer
from kastor.runtime.ids import (
    PUT_INDEX,
    actor_job_id,
    handle_token_id,
    new_actor_id,
    new_put_id,
    new_task_id,
    return_id,
)
from kastor.runtime.lazy_grpc_server import LazyGrpcServer
from kastor.runtime.loop_inbox import LoopInbox
from kastor.runtime.object_ref import ObjectRef
from kastor.runtime.owned_values import OwnedValues
from kastor.runtime.ownership import ObjectTable
from kastor.runtime.peers import Peers
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.rpc import CHANNEL_OPTIONS, ChannelCache, bind_host
from kastor.runtime.serialization import error_value
from kastor.runtime.task_submitter import TaskSubmitter

log = logging.getLogger("kastor.core")

# Kept importable from here for code written against the old layout; new code imports ids and rpc.
__all__ = ["CHANNEL_OPTIONS", "PUT_INDEX", "CoreWorker", "actor_job_id", "bind_host", "error_value",
           "new_actor_id", "new_task_id", "return_id"]

# How long a borrower's first ask waits for an owner's value to be ready (see _fetch_borrowed).
PROBE_S = 0.05


class CoreWorker:
    def __init__(self, *, head_address: str, token: str, node_address: str, node_id: str,
                 store_dir: str, ip: str, job_id: bytes = b"", namespace: str = "",
                 worker_id: bytes | None = None, is_driver: bool = True, gateway: str | None = None,
                 serves_store: bool = False, bind_ip: str | None = None):
        """`serves_store`: this process serves `store_dir` to the cluster itself (a driver with no
        node of its own, see driver_store); `bind_ip`: the address to listen on, when not the
        one bind_host derives from `ip`."""
        self.head_address = head_address
        # Remote client (kastor://, `gateway`: the head's client port) or a process in the cluster.
        self.transport = transport.choose(gateway, serves_own_store=serves_store)
        self._bind_ip = bind_ip
        self.token = token
        self.metadata = auth.metadata(token)
        # Channels, stubs and the head's call; also this process's and its node's addresses (see address).
        # Framed actor calls need a direct route to the worker: a remote client's go through the
        # client port's gRPC relay (see runtime/frames.py).
        self.peers = Peers(ChannelCache(self.transport.connect), self.metadata, head_address, node_address,
                           token=token, framed_calls=self.transport.reachable and settings.FRAMED_CALLS.get())
        self.node_id = node_id
        self.store_dir = store_dir
        # This process's freed store files, reused for its next large puts (store_recycle).
        self.recycle_pool = store_recycle.RecyclePool(
            store_dir, lambda: os.path.join(store_owners.owner_dir(store_dir, self.address), store_recycle.POOL_DIR)
        ) if settings.STORE_RECYCLE.get() else None
        self.ip = ip
        self.job_id = job_id
        self.namespace = namespace
        self.worker_id = worker_id or os.urandom(16)
        self.is_driver = is_driver
        self.borrows = borrowing.Links(self)  # refs owned elsewhere that this process holds
        self.pins = borrowing.Pins()  # refs inside values this worker returned, until their owner holds them
        self.objects = ObjectTable(self.free_value, self.borrows.add, self.borrows.remove,
                                   self._hold_nested, self._release_nested)
        self.store = self.objects.store
        self.engine = None  # set by a worker process: runs the tasks sent to it
        self.output = None  # a driver's OutputPrinter, when its workers' output is shown here (log_to_driver)
        self.env_vars: dict[str, str] = {}  # the job's runtime_env variables (a driver's init(runtime_env=))
        self.runtime_env: dict[str, Any] = {}  # the job's other runtime_env fields, resolved (runtime/runtime_env.py)
        # In an actor's process, the token of its own strong handles (runtime/actor_handles.py):
        # held here without borrowing it, so that an actor never keeps itself alive.
        self._own_handle_token = b""

        self._fetching: set[bytes] = set()
        self._probes = 0  # fetches asking an owner whether a value is ready now (see _fetch_borrowed)
        self._after_probes: list[Callable[[], None]] = []
        self._registered: set[str] = set()
        self._functions: dict[str, Any] = {}
        self._closed = False

        self.loop = event_loops.new_event_loop()
        self._inbox = LoopInbox(self.loop)  # what other threads hand the loop (post)
        self._thread = threading.Thread(target=self._run_loop, name="kastor-core", daemon=True)
        self._thread.start()

        # The submitters get the parts they use, never the core itself (tests/test_layering.py).
        owned = OwnedValues(self.objects, self.decode, self.value_when_ready, self.free_value)
        self.tasks = TaskSubmitter(self.peers, owned)
        self.actors = ActorSubmitter(self.peers, owned)
        self.store.set_missing_hook(self.actors.need)  # a fast call's result, wanted by another waiter
        self.data_server: DataServer | None = None  # a worker's data port (framed actor calls)
        self.run(self._start_server())

    # ---- the loop thread ----

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident  # (current_thread() is a Python call)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._sweep_released)
        self.loop.run_forever()

    def _sweep_released(self) -> None:
        self.objects.drain_released()
        self.loop.call_later(config.REF_SWEEP_INTERVAL_S, self._sweep_released)

    def run(self, coro: Coroutine, timeout: float | None = None) -> Any:
        """Runs a coroutine on the loop and waits for it: for calls off the hot path."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("CoreWorker.run called from the core loop (would deadlock)")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def post(self, fn: Callable[[], None]) -> None:
        """Hands `fn` to the loop; a burst of posts costs one wake-up (loop_inbox.py)."""
        self._inbox.post(fn)

    @property
    def address(self) -> str:
        """This process's owner address: its server's, or the client port's for a remote client."""
        return self.peers.address

    @address.setter
    def address(self, address: str) -> None:
        self.peers.address = address

    @property
    def node_address(self) -> str:
        """The node agent that grants this process's leases (a remote client learns it after connecting)."""
        return self.peers.node_address

    @node_address.setter
    def node_address(self, address: str) -> None:
        self.peers.node_address = address

    def channel(self, address: str) -> grpc.aio.Channel:
        return self.peers.channel(address)

    def head_call(self, method: str, request: Any, timeout: float = 60) -> Any:
        """A blocking unary call to the head, from a user thread (stubs live on the loop)."""
        return self.run(self.head_rpc(method, request, timeout))

    async def head_rpc(self, method: str, request: Any, timeout: float | None = 60) -> Any:
        """A call to the head that waits through a head restart (see head_link)."""
        return await self.peers.head_rpc(method, request, timeout)

    def node_call(self, method: str, request: Any, timeout: float = 60) -> Any:
        async def call() -> Any:
            return await getattr(self.node_stub(), method)(request, metadata=self.metadata, timeout=timeout)
        return self.run(call())

    def head_stub(self) -> pb_grpc.HeadStub:
        return self.peers.head_stub()

    def node_stub(self, address: str | None = None) -> pb_grpc.NodeAgentStub:
        return self.peers.node_stub(address)

    def worker_stub(self, address: str) -> pb_grpc.CoreWorkerStub:
        return self.peers.worker_stub(address)

    def _build_server(self) -> grpc.aio.Server:
        server = rpc.server(self.token)
        core_service.register(server, self, executes=not self.is_driver)
        if self.serves_own_store():
            driver_store.register(server, self.store_dir)
        return server

    async def _start_server(self) -> None:
        host = self._bind_ip or bind_host(self.ip)
        if self.is_driver or not settings.LAZY_GRPC_SERVER.get():
            self._server = self._build_server()
            port = tls.add_port(self._server, f"{host}:0", "worker's call port")
            await self._server.start()
        else:  # most workers never need gRPC, and starting it was a quarter of a creation's CPU
            self._server = LazyGrpcServer(host, self._build_server, "worker's call port")
            port = self._server.port
        self.address = f"{self.ip}:{port}"
        if not self.is_driver:
            self.data_server = DataServer(self.token, lambda: self.engine)
            await self.data_server.start(self._bind_ip or bind_host(self.ip))

    def serves_grpc(self) -> bool:
        """Whether this process's gRPC server runs: a worker starts it when its port first gets a
        connection (lazy_grpc_server.py), a driver at once."""
        return not isinstance(self._server, LazyGrpcServer) or self._server.started

    def data_port(self) -> int:
        """The port this worker takes framed actor calls on (0: none, a driver)."""
        return self.data_server.port if self.data_server is not None else 0

    def serves_own_store(self) -> bool:
        """Whether this process serves its store folder itself (no node agent does)."""
        return self.transport.serves_own_store

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def close():
            await self.borrows.close()
            self.tasks.close()
            self.actors.close()
            if self.data_server is not None:
                await self.data_server.stop()
            await self._server.stop(grace=0.2)
            await self.peers.close()
            await self.transport.close()

        try:
            self.run(close(), timeout=5)
        except Exception:
            log.debug("core shutdown: close failed", exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if self.recycle_pool is not None:
            self.recycle_pool.drain()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- identity of the running task ----

    def current_job_id(self) -> bytes:
        task = context.current_task.get()
        return task.job_id if task else self.job_id

    def current_namespace(self) -> str:
        task = context.current_task.get()
        return task.namespace if task and task.namespace else self.namespace

    def current_env_vars(self) -> dict[str, str]:
        """The runtime_env variables new work inherits: the running task's, else the job's."""
        task = context.current_task.get()
        return dict(task.env_vars) if task else self.env_vars

    def current_task_id(self) -> bytes:
        task = context.current_task.get()
        return task.task_id if task else b""

    # ---- reference counting (local counts, and borrowers: see runtime/borrowing.py) ----

    @property
    def tracks_borrows(self) -> bool:
        """Whether this process takes part in the borrower protocol: a remote client, which the
        cluster cannot call back, does not (the refs it hands out escape and are kept for good)."""
        return self.transport.reachable

    def add_local_ref(self, object_id: bytes, owner: str, borrowed: bool) -> None:
        borrow = owner != self.address and self.tracks_borrows and object_id != self._own_handle_token
        self.objects.add_local_ref(object_id, owner if borrow else None)

    def become_actor(self, actor_id: bytes) -> None:
        """This worker now runs `actor_id`: the handles to itself it comes to hold (passed to its
        methods, kept in its state) do not count as holders, or it would never be collected."""
        self._own_handle_token = handle_token_id(actor_id)

    def on_ref_pickled(self, ref: ObjectRef) -> None:
        """Called while a ref is pickled (no locks): a serialization that tracks borrowers
        collects it; any other pickling lets it escape."""
        if self.tracks_borrows and borrowing.collect(ref):
            return
        self.on_ref_escaped(ref.binary(), ref.owner_address)

    def on_ref_escaped(self, object_id: bytes, owner: str = "") -> None:
        """Called while a ref is pickled (no locks may be taken: see remove_local_ref)."""
        if owner == self.address:  # first, so that a failed upload is tried again at the next use
            self.transport.upload_deferred(self, object_id)  # a remote client's put (lazy_puts.py)
        # Pickled where no borrower will register (see runtime/borrowing.py): keep it for good.
        if not self.objects.escape(object_id):
            return
        if owner == self.address:
            self.transport.on_escaped(self, object_id)

    def remove_local_ref(self, object_id: bytes) -> None:
        """From ObjectRef.__del__: queued, never done in place (see ObjectTable.remove_local_ref)."""
        self.objects.remove_local_ref(object_id)

    def _hold_nested(self, object_id: bytes, value: pb.Value, kept: bool) -> None:
        """An owned value that holds refs is stored: it holds them while it is kept; the worker
        that pinned them for it lets go once the owners acknowledged this process's holds."""
        if kept:
            for nested in value.nested:
                self.add_local_ref(nested.object_id, nested.owner, True)
        pinned_at = value.pinned_at
        if not pinned_at or not self.tracks_borrows:
            return
        if pinned_at == self.address:
            self.pins.release(object_id)
        else:
            self.post(lambda: self.borrows.after_flush(lambda: self.borrows.unpin(object_id, pinned_at)))

    def _release_nested(self, value: pb.Value) -> None:
        for nested in value.nested:
            self.objects.remove_local_ref(nested.object_id)

    def free_value(self, value: pb.Value) -> None:
        """Deletes a stored object's file, locally or through the node that holds it."""
        loc = value.location
        if not loc.path:
            return
        if loc.node_id == self.node_id:
            if self.transport.free_local(loc.path):  # a remote client's put never uploaded
                return
            if self.recycle_pool is not None and self.recycle_pool.keep(loc.path):
                return
            try:
                os.unlink(loc.path)
            except FileNotFoundError:
                pass
        elif not self._closed:
            self.transport.forget_copy(loc.path)
            self.post(lambda: self.loop.create_task(self._free_remote(loc)))

    async def _free_remote(self, loc: pb.ObjectLocation) -> None:
        try:
            await self.node_stub(loc.node_address).FreeObjects(
                pb.FreeObjectsRequest(paths=[loc.path]), metadata=self.metadata, timeout=10)
        except grpc.aio.AioRpcError:
            pass

    def serves_objects(self) -> bool:
        """Whether another process may still fetch a value from this one (see ObjectTable)."""
        return self.objects.serves_objects()

    # ---- values ----

    def make_value(self, value: Any, what: str, object_id: bytes | None = None, pin: bool = False,
                   owner: str | None = None, put: bool = False) -> pb.Value:
        """Serializes; large values go to this node's shared-memory store. The refs inside are
        recorded in the value (Value.nested); with `pin` (a value this worker returns to its
        owner), they are also kept here under `object_id` until the owner holds them. `owner`:
        the address of the process that owns the object (a task's caller for its returns), if
        not this one (its store file goes under that owner's directory). `put`: the value of a
        put() (a remote client defers its upload: runtime/lazy_puts.py)."""
        plain = pickler.is_plain(value)  # builtin scalars and containers: no refs in it, no buffers
        if plain:
            frame = serialization.plain_frame(value)
            if len(frame) <= config.INLINE_LIMIT:  # a task's usual small result: no Serialized to lay out
                return pb.Value(data=frame)
        if plain or not self.tracks_borrows or object_id is None:
            return self.store_serialized(serialization.serialize(value, what), object_id, owner, put)
        with borrowing.Collector() as collected:
            ser = serialization.serialize(value, what)
        stored = self.store_serialized(ser, object_id, owner)
        if collected.refs:
            stored.nested.extend(borrowing.nested_of(collected.refs))
            if pin:
                self.pins.pin(object_id, collected.refs)
                stored.pinned_at = self.address
        return stored

    def store_serialized(self, ser: serialization.Serialized, object_id: bytes | None = None,
                         owner: str | None = None, put: bool = False) -> pb.Value:
        if ser.size <= config.INLINE_LIMIT:
            return pb.Value(data=ser.to_bytes())
        if put and object_id is not None:
            return pb.Value(location=self.transport.store_put(self, ser, object_id, owner or self.address))
        name = (object_id or os.urandom(20)).hex()
        # A return whose spec names no owner goes to the store's root, never under this worker,
        # which may exit while the caller still holds the ref.
        return pb.Value(location=self.transport.store_large(self, ser, name, self.address if owner is None else owner))

    def decode(self, object_id: bytes, value: pb.Value) -> Any:
        """The Python value of a stored object; raises the stored error if it is one."""
        try:
            obj = self._load(object_id, value)
        except exceptions.ObjectLostError:
            raise
        except Exception as e:
            raise exceptions.KastorSystemError(
                f"Could not unpickle object {object_id.hex()} in this process: {type(e).__name__}: {e}. The code "
                f"that defines its value may be missing here or differ from where it was made (install the same "
                f"modules and versions), or its __reduce__/__setstate__ failed.") from e
        if value.is_error:
            if isinstance(obj, BaseException):
                raise obj
            raise exceptions.KastorSystemError(f"corrupt error value for {object_id.hex()}")
        return obj

    def _load(self, object_id: bytes, value: pb.Value) -> Any:
        if value.location.path:
            if value.location.node_id == self.node_id:
                try:
                    obj = serialization.load_file(value.location.path)
                except FileNotFoundError:
                    raise exceptions.ObjectLostError(object_id.hex()) from None
            elif (copy := self.transport.local_copy(value.location.path)) is not None:
                obj = serialization.load_file(copy)  # a remote client's own upload, kept on its disk
            else:
                data = self.run(self._fetch_remote(value.location))
                obj = serialization.loads(data)
        else:
            obj = serialization.loads(value.data)
        return obj

    async def _fetch_remote(self, loc: pb.ObjectLocation) -> bytes:
        parts = []
        try:
            stream = self.node_stub(loc.node_address).FetchObject(
                pb.FetchObjectRequest(path=loc.path), metadata=self.metadata)
            async for chunk in stream:
                parts.append(chunk.data)
        except grpc.aio.AioRpcError as e:
            raise exceptions.ObjectLostError(
                message=f"Could not fetch an object from node {loc.node_id}: {e.details()}") from None
        return b"".join(parts)

    # ---- put / get / wait ----

    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError("Calling put() on an ObjectRef is not allowed: pass the ref itself instead.")
        object_id = new_put_id()
        stored = self.make_value(value, "the value passed to put()", object_id, put=True)
        self.objects.own(object_id, stored)
        return ObjectRef(object_id, self.address)

    def generator_item(self, item: pb.GeneratorItem) -> None:
        """Stores an item a generator task of ours reported; its ObjectRefGenerator hands out the ref."""
        self.objects.own(return_id(item.task_id, item.index + 1), item.value)

    def adopt(self, object_id: bytes, value: pb.Value) -> ObjectRef:
        """Owns a value serialized elsewhere (a generator's items), as `put` owns what it stores."""
        self.objects.own(object_id, value)
        return ObjectRef(object_id, self.address)

    def _ensure_available(self, refs: list[ObjectRef]) -> None:
        """Starts fetching borrowed refs this process does not have yet."""
        for ref in refs:
            oid = ref.binary()
            if ref.owner_address != self.address and oid not in self._fetching and not self.store.contains(oid):
                self._fetching.add(oid)
                self.post(lambda ref=ref: self._start_fetch(ref))

    def _start_fetch(self, ref: ObjectRef) -> None:
        self._probes += 1  # counted from now, so that after_probes() waits for it
        self.loop.create_task(self._fetch_borrowed(ref))

    async def _fetch_borrowed(self, ref: ObjectRef) -> None:
        """Fetches a borrowed ref's value from its owner.

        It first asks for a value that is ready now (PROBE_S): until that answer comes, a get
        waiting on it is not "blocked" (see after_probes), so it keeps its task's CPU, as a
        Ray get of ready objects does; a node would otherwise start a worker per such task.
        """
        oid = ref.binary()
        probing = True
        try:
            stub = self.worker_stub(ref.owner_address)
            value = await self._ask_owner(stub, oid, PROBE_S)
            if value is None:  # not ready: wait for it as a blocked get
                probing = False
                self._probe_done()
                value = await self._ask_owner(stub, oid, 0)
        except grpc.aio.AioRpcError as e:
            value = error_value(exceptions.OwnerDiedError(
                oid.hex(), f"Object {oid.hex()} is lost: its owner at {ref.owner_address} is unreachable "
                           f"({e.code().name}). The process that created a ref owns its value; keep it "
                           f"alive while others use the ref."))
        finally:
            self._fetching.discard(oid)
        self.store.put(oid, value)
        if probing:
            self._probe_done()

    async def _ask_owner(self, stub: pb_grpc.CoreWorkerStub, oid: bytes, wait_s: float) -> pb.Value | None:
        """The owner's value for oid; with wait_s > 0, None if it is not ready within wait_s.
        A slow owner is asked again; one that refuses the connection is gone (owner_fetch)."""
        return await owner_fetch.ask_owner(stub, oid, wait_s, self.metadata)

    def after_probes(self, fn: Callable[[], None]) -> None:
        """Runs fn (on the loop) once no fetch is still asking an owner for a ready value."""
        if self._probes:
            self._after_probes.append(fn)
        else:
            fn()

    def _probe_done(self) -> None:
        self._probes -= 1
        if not self._probes:
            waiting, self._after_probes = self._after_probes, []
            for fn in waiting:
                fn()

    def value_when_ready(self, ref: ObjectRef, callback: Callable[[pb.Value], None]) -> None:
        """Calls back with the stored value of a ref (fetching it when borrowed)."""
        self._ensure_available([ref])
        self.store.on_ready(ref.binary(), callback)

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        if self.actors.has_fast_calls():  # results this thread reads off lanes itself (fast_lane.py)
            if len(refs) == 1:
                value = self.actors.fast_get(refs[0].binary(), timeout)
                if value is not None:
                    return [self.decode(refs[0].binary(), value)]
            else:
                started = time.monotonic()
                self.actors.read_own_lanes([r.binary() for r in refs], timeout)
                if timeout is not None:
                    timeout = max(0.0, timeout - (time.monotonic() - started))
        self._ensure_available(refs)
        ids = [r.binary() for r in refs]
        values = self.store.get_values(ids, timeout, self.blocked_hook(ids))
        return [self.decode(r.binary(), v) for r, v in zip(refs, values, strict=True)]

    def wait(self, refs: list[ObjectRef], num_returns: int, timeout: float | None,
             fetch_local: bool) -> tuple[list[ObjectRef], list[ObjectRef]]:
        self._ensure_available(refs)
        ids = [r.binary() for r in refs]
        ready = self.store.wait(ids, num_returns, timeout, self.blocked_hook(ids))
        ready_refs, rest = [], []
        for r in refs:
            (ready_refs if r.binary() in ready and len(ready_refs) < num_returns else rest).append(r)
        return ready_refs, rest

    def blocked_hook(self, ids: list[bytes]) -> Callable[[bool], None] | None:
        """What a get/wait on `ids` calls as it blocks and unblocks: a worker lends its CPU back."""
        if self.engine is None:
            return None
        return lambda blocked: self.engine.notify_blocked(blocked, ids)

    def object_future(self, ref: ObjectRef) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def settle(value: pb.Value) -> None:
            if value.location.path and value.location.node_id != self.node_id:
                threading.Thread(target=resolve, args=(value,), daemon=True).start()
            else:
                resolve(value)

        def resolve(value: pb.Value) -> None:
            try:
                fut.set_result(self.decode(ref.binary(), value))
            except BaseException as e:  # the stored error is the future's outcome
                fut.set_exception(e)

        self.value_when_ready(ref, settle)
        return fut

    # ---- code registry ----

    def register_code(self, obj: Any, kind: str) -> str:
        """Exports a function or class to the head's registry once; returns its id."""
        try:
            payload = pickler.dumps_code(obj)
        except Exception as e:
            raise serialization.SerializationError(
                f"Could not serialize {kind} {getattr(obj, '__qualname__', obj)!r}: {e}. Everything "
                f"it captures (globals, closure variables) must be picklable; create unpicklable "
                f"resources inside the {kind} instead.") from e
        _check_code_size(obj, kind, len(payload))
        function_id = hashlib.sha256(payload).hexdigest()[:32]
        if function_id not in self._registered:
            paths = [os.getcwd() if p == "" else p for p in sys.path]
            entry = pb.FunctionEntry(function_id=function_id, payload=payload, code_paths=paths)
            self.head_call("PutFunction", entry)
            self._registered.add(function_id)
            self._functions[function_id] = obj
        return function_id

    def load_code(self, function_id: str, shipped: pb.FunctionEntry | None = None) -> Any:
        """The function or class `function_id`, unpickled once per process. `shipped` is its
        registry entry when the caller already has it (an actor's class comes with StartActor),
        which saves the GetFunction round trip to the head; otherwise the head is asked."""
        obj = self._functions.get(function_id)
        if obj is None:
            if shipped is not None and shipped.function_id == function_id:
                entry = shipped
            else:
                entry = self.head_call("GetFunction", pb.FunctionKey(function_id=function_id))
            for p in entry.code_paths:
                if p not in sys.path:
                    sys.path.append(p)
            obj = cloudpickle.loads(entry.payload)
            self._functions[function_id] = obj
        return obj

    # ---- arguments ----

    def pack_args(self, args: tuple, kwargs: dict, what: str,
                  pins: list[ObjectRef] | None = None) -> tuple[pb.Value, list[ObjectRef]]:
        """The call's packed arguments and its top-level refs. Refs nested inside the arguments
        go to `pins`, which the caller keeps until the call's results are back (by then the
        worker has registered its borrows); without `pins` they escape (kept for good)."""
        if not args and not kwargs:  # a call without arguments: their bytes are always the same
            return pb.Value(data=_no_args()), []
        args, kwargs, refs = argpack.split_refs(args, kwargs)
        for ref in refs:  # the submission carries their stored values: a remote client's puts are uploaded first
            self.transport.upload_deferred(self, ref.binary())
        try:
            if pins is not None and self.tracks_borrows:
                with borrowing.Collector() as collected:
                    ser = serialization.serialize((args, kwargs), what)
                pins.extend(collected.refs)
            else:
                ser = serialization.serialize((args, kwargs), what)
        except serialization.SerializationError:
            raise _name_unpicklable_argument(args, kwargs, what) from None
        return self.store_serialized(ser), refs


@functools.cache
def _no_args() -> bytes:
    """The packed arguments of a call that has none. Packed per call, they were a fifth of what
    submitting a task without arguments cost the calling thread (a pickler made and run each time)."""
    return serialization.serialize(((), {}), "no arguments").to_bytes()


def _check_code_size(obj: Any, kind: str, size: int) -> None:
    """Ray's limits on a pickled function or class: over FUNCTION_SIZE_ERROR_BYTES is refused
    (it almost always captured a large object from its scope by accident, and every worker that
    runs it would load that object), over FUNCTION_SIZE_WARN_BYTES is warned about."""
    name = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"
    what = f"The actor {getattr(obj, '__qualname__', obj)}" if kind == "actor class" else f"The {kind} {name}"
    if size > config.FUNCTION_SIZE_ERROR_BYTES:
        raise ValueError(
            f"{what} is too large ({size / 2**20:.0f} MiB > KASTOR_FUNCTION_SIZE_ERROR_BYTES = "
            f"{config.FUNCTION_SIZE_ERROR_BYTES / 2**20:.0f} MiB). Check that its definition is not capturing a large "
            f"array or other object from its scope; pass it as an argument, or kastor.put() it and pass the ref.")
    if size > config.FUNCTION_SIZE_WARN_BYTES:
        warnings.warn(f"{what} is {size / 2**20:.1f} MiB pickled: it probably captures a large object from its "
                      f"scope, which every worker running it loads; pass large data as arguments or with "
                      f"kastor.put() instead.", stacklevel=4)


def _name_unpicklable_argument(args: tuple, kwargs: dict, what: str) -> serialization.SerializationError:
    """Finds which argument failed so the error can name it."""
    for label, value in itertools.chain(((f"argument {i}", a) for i, a in enumerate(args)),
                                        ((f"keyword argument {k!r}", v) for k, v in kwargs.items())):
        try:
            pickler.dumps(value)
        except Exception as e:
            return serialization.SerializationError(
                f"Could not serialize {label} of {what} ({type(value).__name__}): {e}. Arguments "
                f"travel to another process with cloudpickle; pass picklable values, or create "
                f"the resource inside the task or actor instead.")
    return serialization.SerializationError(f"Could not serialize the arguments of {what}.")

