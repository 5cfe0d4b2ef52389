"""The submitters run on the parts the core hands them (runtime/peers.py's Peers and
runtime/owned_values.py's OwnedValues), with no CoreWorker at all: in-process, on a real
ObjectTable and real gRPC channels.

The node agent's and the head's addresses are loopback ports nobody listens on, so every
lease request and actor lookup is refused and a submitted call stays queued: the cancel paths
of the submitters' state machines can be watched without a cluster.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from kastor.runtime import exceptions, serialization
from kastor.runtime.actor_submitter import ActorSubmitter
from kastor.runtime.ids import new_actor_id, new_put_id, new_task_id, return_id
from kastor.runtime.object_ref import ObjectRef
from kastor.runtime.owned_values import OwnedValues
from kastor.runtime.ownership import ObjectTable
from kastor.runtime.peers import Peers
from kastor.runtime.pending import PendingCall
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.rpc import ChannelCache
from kastor.runtime.task_submitter import TaskSubmitter


def _refused_address() -> str:
    """A loopback address with no listener (the port was bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _decode(object_id: bytes, value: pb.Value) -> Any:
    obj = serialization.loads(value.data)
    if value.is_error:
        raise obj
    return obj


def _parts() -> tuple[Peers, OwnedValues, ObjectTable]:
    objects = ObjectTable(free_value=lambda value: None)  # only inline values here: no files to free
    owned = OwnedValues(objects, _decode, lambda ref, callback: objects.store.on_ready(ref.binary(), callback),
                        objects.free_value)
    peers = Peers(ChannelCache(), (), head_address=_refused_address(), node_address=_refused_address())
    peers.address = "127.0.0.1:9"  # this owner's address, only carried in the lease requests
    return peers, owned, objects


def _call(objects: ObjectTable, deps: list[ObjectRef] = ()) -> PendingCall:
    task_id = new_task_id()
    returns = [return_id(task_id, 1)]
    objects.add_local_ref(returns[0])  # the caller holds the ref, so its result is kept
    spec = pb.TaskSpec(task_id=task_id, name="f", num_returns=1, args=pb.Value(data=serialization.dumps(((), {}))))
    return PendingCall(spec, returns, list(deps), 0, key=("f", (("CPU", 1.0),), b"", "", 0), required={"CPU": 1.0})


async def _until(condition, what: str, timeout: float = 60) -> None:
    async def poll():
        while not condition():
            await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _outcome(objects: ObjectTable, call: PendingCall) -> Any:
    value = objects.store.peek(call.return_ids[0])
    assert value is not None, "the call's result was not stored"
    try:
        return _decode(call.return_ids[0], value)
    except BaseException as e:
        return e


def test_a_queued_task_that_cannot_get_a_lease_is_cancelled():
    async def scenario():
        peers, owned, objects = _parts()
        tasks = TaskSubmitter(peers, owned)
        call = _call(objects)
        tasks.submit(call)
        await _until(lambda: tasks.requesting[call.key] > 0, "a lease request for the queued call")
        assert list(tasks.queues[call.key]) == [call] and not objects.store.contains(call.return_ids[0])

        assert tasks.cancel(call.spec.task_id, force=False, recursive=False)
        assert isinstance(_outcome(objects, call), exceptions.TaskCancelledError)
        assert not tasks.queues[call.key] and call.spec.task_id not in tasks.calls

        tasks.close()  # the refused lease requests stop retrying
        await _until(lambda: tasks.requesting[call.key] == 0, "the lease requests to end after close()")
        await peers.close()

    asyncio.run(scenario())


def test_a_task_waiting_for_its_arguments_is_cancelled_and_never_queued():
    async def scenario():
        peers, owned, objects = _parts()
        tasks = TaskSubmitter(peers, owned)
        dep = ObjectRef(new_put_id(), peers.address)
        call = _call(objects, [dep])
        tasks.submit(call)
        assert not call.resolved and not tasks.queues[call.key]

        assert tasks.cancel(call.spec.task_id, force=False, recursive=False)
        assert isinstance(_outcome(objects, call), exceptions.TaskCancelledError)

        objects.own(dep.binary(), pb.Value(data=serialization.dumps(1)))  # the argument arrives after all
        # resolve_deps marks the call resolved and the submitter checks `finished` in the same step
        await _until(lambda: call.resolved, "the argument to resolve")
        assert not tasks.queues[call.key] and tasks.requesting[call.key] == 0
        tasks.close()
        await peers.close()

    asyncio.run(scenario())


def test_an_actor_call_queued_while_the_head_cannot_be_reached_is_cancelled():
    async def scenario():
        peers, owned, objects = _parts()
        actors = ActorSubmitter(peers, owned)
        call = _call(objects)
        actor_id = call.spec.actor_id = new_actor_id(b"\0" * 4)
        actors.submit(call)
        assert actors.conn(actor_id).resolving, "the submitter should be asking the head where the actor lives"
        assert actors.actor_of_task(call.spec.task_id) == actor_id

        assert actors.cancel(actor_id, call.spec.task_id, recursive=False)
        assert isinstance(_outcome(objects, call), exceptions.TaskCancelledError)
        assert not actors.conn(actor_id).queue and actors.actor_of_task(call.spec.task_id) is None
        actors.close()
        await peers.close()

    asyncio.run(scenario())
