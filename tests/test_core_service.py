"""A process's gRPC face: every process serves what it owns, only workers serve work.

Real driver, real worker, real gRPC: a driver answers a borrower's GetObjects, while the
executor's methods (Execute, StartActor, LeaseState, Exit) are not registered on it at all.
"""

from __future__ import annotations

import grpc
import kastor
import pytest
from kastor.runtime import context
from kastor.runtime.protocol import kastor_pb2 as pb

pytestmark = pytest.mark.usefixtures("embedded_cluster")


@kastor.remote
class Probe:
    def address(self) -> str:
        return context.core.address


def _call(address: str, method: str, request):
    core = context.core

    async def call():
        return await getattr(core.worker_stub(address), method)(request, metadata=core.metadata, timeout=30)
    return core.run(call())


def test_a_driver_serves_its_objects_but_runs_no_work():
    core = context.core
    ref = kastor.put("owned by the driver")
    reply = _call(core.address, "GetObjects", pb.GetObjectsRequest(object_ids=[ref.binary()]))
    assert core.decode(ref.binary(), reply.values[0]) == "owned by the driver"
    for method in ("LeaseState", "Exit"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _call(core.address, method, pb.Empty())
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED, method


def test_a_worker_serves_both_parts():
    probe = Probe.remote()  # held for the whole test: an actor whose last handle goes is killed (as in Ray)
    address = kastor.get(probe.address.remote())
    reply = _call(address, "LeaseState", pb.Empty())
    assert isinstance(reply, pb.LeaseStateReply)
    reply = _call(address, "GetObjects", pb.GetObjectsRequest(object_ids=[b"\0" * 20]))
    assert reply.values[0].is_error, "an object the worker never owned is reported lost"
    kastor.kill(probe)
