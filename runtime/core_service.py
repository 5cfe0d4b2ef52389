"""The gRPC face of a CoreWorker, in two parts on one `kastor.CoreWorker` service name.

OwnerService serves what every process owns: its objects (to borrowers), generator items its
calls yield, and cancellation of the calls it submitted. ExecutorService serves what only a
worker does: running calls (Execute, StartActor) and answering its node (LeaseState, Exit).
A driver registers the owner part alone, so a call meant for a worker that reaches a driver
is UNIMPLEMENTED there instead of being served by code that has nothing to run it with.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
from kastor.runtime import borrowing, exceptions
from kastor.runtime.cancel import cancel_owned
from kastor.runtime.frames import DATA_PORT_METADATA_KEY
from kastor.runtime.memory_store import settling
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.serialization import error_value

if TYPE_CHECKING:  # the core hands itself in: importing it here would be a cycle
    from kastor.runtime.core import CoreWorker

SERVICE = "kastor.CoreWorker"
OWNER_METHODS = ("GetObjects", "Borrow", "ReportGeneratorItem", "CancelTask")
EXECUTOR_METHODS = ("Execute", "StartActor", "LeaseState", "Exit")


class OwnerService(pb_grpc.CoreWorkerServicer):
    def __init__(self, core: CoreWorker):
        self.core = core

    async def GetObjects(self, request, context):
        """Serves values this process owns to borrowers, waiting for pending ones."""
        loop = asyncio.get_running_loop()
        store = self.core.store
        values = []
        for object_id in request.object_ids:
            if not self.core.objects.known(object_id):
                values.append(error_value(exceptions.ObjectLostError(object_id.hex())))
                continue
            fut = loop.create_future()
            store.on_ready(object_id, settling(fut))
            timeout = request.timeout_s or None
            try:
                values.append(await asyncio.wait_for(fut, timeout))
            except TimeoutError:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"object {object_id.hex()} not ready")
        return pb.GetObjectsReply(object_ids=list(request.object_ids), values=values)

    def Borrow(self, request_iterator, context):
        """A borrower's stream: what it holds of this process's objects (see runtime/borrowing.py)."""
        return borrowing.serve(self.core, request_iterator)

    async def ReportGeneratorItem(self, request, context):
        self.core.generator_item(request)
        return pb.Empty()

    async def CancelTask(self, request, context):
        """Cancels a task this process submitted (for a process that holds its ref), or else
        one it runs (for the task's submitter)."""
        try:
            if cancel_owned(self.core, request.task_id, request.force, request.recursive):
                return pb.Empty()
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        engine = self.core.engine
        if engine is not None:
            engine.cancel(request.task_id, request.force, request.recursive)
        return pb.Empty()


class ExecutorService(pb_grpc.CoreWorkerServicer):
    """Runs work through the worker's engine, which the worker attaches once its core serves."""

    def __init__(self, core: CoreWorker):
        self.core = core

    async def _engine(self, context) -> Any:
        engine = self.core.engine
        if engine is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this worker is still starting: no work yet")
        return engine

    async def Execute(self, request_iterator, context):
        engine = await self._engine(context)
        await context.send_initial_metadata(())  # accepted: the caller writes its calls only after this
        async for reply in engine.serve_stream(request_iterator, context):
            yield reply

    async def StartActor(self, request, context):
        return await (await self._engine(context)).start_actor(request)

    async def LeaseState(self, request, context):
        """What this worker does for its lease; its trailing metadata names its data port, where
        callers send actor calls as frames (see runtime/frames.py)."""
        state = (await self._engine(context)).lease_state()
        port = self.core.data_port()
        if port:
            context.set_trailing_metadata(((DATA_PORT_METADATA_KEY, str(port)),))
        return state

    async def Exit(self, request, context):
        """The node reaping an idle worker: it exits unless it is busy or still needed."""
        refused = (await self._engine(context)).exit_if_idle()
        if refused:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"this worker stays: {refused}")
        return pb.Empty()


class _Capture:
    """Collects the method handlers the generated add_*_to_server builds, without a server."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.handlers = handlers


def _handlers(servicer: pb_grpc.CoreWorkerServicer, methods: tuple[str, ...]) -> dict[str, grpc.RpcMethodHandler]:
    capture = _Capture()
    pb_grpc.add_CoreWorkerServicer_to_server(servicer, capture)
    return {name: capture.handlers[name] for name in methods}


def register(server: grpc.aio.Server, core: CoreWorker, executes: bool) -> None:
    """Serves the owner part, and the executor part too when this process runs work."""
    handlers = _handlers(OwnerService(core), OWNER_METHODS)
    if executes:
        handlers.update(_handlers(ExecutorService(core), EXECUTOR_METHODS))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
