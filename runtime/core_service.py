"""The gRPC face of a CoreWorker: objects it owns, and (in workers) the work it runs."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
from kastor import exceptions
from kastor.runtime.cancel import cancel_owned
from kastor.runtime.memory_store import settling
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.serialization import error_value

if TYPE_CHECKING:  # the core hands itself in: importing it here would be a cycle
    from kastor.runtime.core import CoreWorker


class CoreWorkerService(pb_grpc.CoreWorkerServicer):
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

    async def ReportGeneratorItem(self, request, context):
        self.core.generator_item(request)
        return pb.Empty()

    def _engine(self):
        return self.core.engine

    async def Execute(self, request_iterator, context):
        engine = self._engine()
        if engine is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this process runs no work (a driver)")
        await context.send_initial_metadata(())  # accepted: the caller writes its calls only after this
        async for reply in engine.serve_stream(request_iterator, context):
            yield reply

    async def StartActor(self, request, context):
        engine = self._engine()
        if engine is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this process runs no work (a driver)")
        return await engine.start_actor(request)

    async def CancelTask(self, request, context):
        """Cancels a task this process submitted (for a process that holds its ref), or else
        one it runs (for the task's submitter)."""
        try:
            if cancel_owned(self.core, request.task_id, request.force, request.recursive):
                return pb.Empty()
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        engine = self._engine()
        if engine is not None:
            engine.cancel(request.task_id, request.force, request.recursive)
        return pb.Empty()

    async def LeaseState(self, request, context):
        engine = self._engine()
        if engine is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this process runs no work (a driver)")
        return engine.lease_state()

    async def Exit(self, request, context):
        """The node reaping an idle worker: it exits unless it is busy or still needed."""
        engine = self._engine()
        if engine is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this process runs no work (a driver)")
        refused = engine.exit_if_idle()
        if refused:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"this worker stays: {refused}")
        return pb.Empty()
