"""Objects owned by remote clients, served to the cluster by the gateway on their behalf.

An in-cluster owner answers GetObjects for the refs it lent out. A notebook behind the client
port cannot be reached from the cluster, so when one of its refs escapes inside another value
it publishes the value here, and borrowers' GetObjects (addressed to the gateway, the ref's
owner address) are answered from this table.
"""

from __future__ import annotations

import asyncio

import grpc
from kastor.runtime import exceptions
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.serialization import error_value

# How long a borrower waits for a value that was never published (a ref that escaped in
# some way the client did not see) before it is declared lost.
UNKNOWN_OBJECT_WAIT_S = 60.0


class ObjectDirectory:
    """Kept per job: a client's objects go when its job ends (the refs to them die with it)."""

    def __init__(self) -> None:
        self._values: dict[bytes, pb.Value] = {}
        self._by_job: dict[bytes, set[bytes]] = {}
        self._waiters: dict[bytes, list[asyncio.Future]] = {}

    def publish(self, job_id: bytes, object_ids, values) -> None:
        owned = self._by_job.setdefault(job_id, set())
        for object_id, value in zip(object_ids, values, strict=True):
            self._values[object_id] = value
            owned.add(object_id)
            for fut in self._waiters.pop(object_id, ()):
                if not fut.done():
                    fut.set_result(value)

    def forget_job(self, job_id: bytes) -> None:
        for object_id in self._by_job.pop(job_id, ()):
            self._values.pop(object_id, None)

    async def get_objects(self, request: pb.GetObjectsRequest, context) -> pb.GetObjectsReply:
        values = []
        for object_id in request.object_ids:
            value = self._values.get(object_id)
            if value is None:
                fut = asyncio.get_running_loop().create_future()
                self._waiters.setdefault(object_id, []).append(fut)
                try:
                    value = await asyncio.wait_for(fut, request.timeout_s or UNKNOWN_OBJECT_WAIT_S)
                except TimeoutError:
                    if request.timeout_s:
                        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"object {object_id.hex()} not ready")
                    value = error_value(exceptions.ObjectLostError(
                        object_id.hex(), f"Object {object_id.hex()} is owned by a remote client that never "
                                         f"published it: pass refs to the cluster at the top level of arguments."))
            values.append(value)
        return pb.GetObjectsReply(object_ids=list(request.object_ids), values=values)
