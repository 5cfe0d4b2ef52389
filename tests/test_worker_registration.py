"""A new worker registers with its node agent on a socket pair the agent made for it, not with a
RegisterWorker call, and the agent starts an actor on it there, not over a gRPC channel to the
worker (issue 16: two channels and two calls fewer per actor creation), whether the worker was
forked by the fork server or started as a fresh interpreter; gRPC stays the fallback. The
agent asks an idle worker to exit there too, so that its gRPC is not started just for that.

The cluster tests run real embedded clusters and read what the node agent served from its
Stats, and from the actor how it was started; the module tests use real sockets and pipes and a
real event loop.
"""

from __future__ import annotations

import asyncio
import os

import grpc
import kastor
import pytest
from kastor.runtime import auth, context, settings
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc
from kastor.runtime.worker_registration import ControlLost, RegistrationPair, WorkerControl, announce, serve
from support import DEADLINE_S


@kastor.remote
class Where:
    def pid(self) -> int:
        return os.getpid()

    def register_fd(self) -> str | None:
        return os.environ.get(settings.REGISTER_FD.name)

    def started_by(self) -> str:
        from kastor.runtime import worker_registration
        return worker_registration.started_by()


@kastor.remote
def collect() -> int:
    import gc
    gc.collect()
    return os.getpid()


def _served(method: str) -> int:
    [node] = kastor.nodes()
    with grpc.insecure_channel(node["Address"]) as channel:
        stats = pb_grpc.NodeAgentStub(channel).Stats(pb.Empty(), metadata=auth.metadata(context.core.token),
                                                     timeout=DEADLINE_S)
    return stats.rpcs_served.get(method, 0)


@pytest.mark.parametrize("fork_server", ["1", "0"])
def test_new_workers_register_and_are_started_on_their_pair_with_no_registerworker_call(monkeypatch, fork_server):
    monkeypatch.setenv("KASTOR_FORK_SERVER", fork_server)
    kastor.init(num_cpus=2)
    try:
        # Idle workers that collected their garbage (as any may, between its start and its use)
        # still serve their pair: the worker holds the task that serves it.
        kastor.get([collect.remote() for _ in range(4)], timeout=DEADLINE_S)
        actors = [Where.remote() for _ in range(4)]  # more than the idle workers: new ones start too
        pids = kastor.get([a.pid.remote() for a in actors], timeout=DEADLINE_S)
        assert len(set(pids)) == 4
        assert _served("StartActor") >= 4  # the agent's counter works and saw these starts
        assert _served("RegisterWorker") == 0
        assert kastor.get([a.started_by.remote() for a in actors], timeout=DEADLINE_S) == ["pair"] * 4
        # The worker took the pipe's number out of its environment: what it starts does not inherit it.
        assert kastor.get(actors[0].register_fd.remote(), timeout=DEADLINE_S) is None
    finally:
        kastor.shutdown()


def test_a_worker_without_a_pipe_or_with_a_broken_one_falls_back(monkeypatch):
    monkeypatch.delenv(settings.REGISTER_FD.name, raising=False)
    assert announce(b"\x01" * 16, "127.0.0.1:1", 11) is None
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # nobody reads: the write fails (EPIPE) and the worker uses RegisterWorker
    monkeypatch.setenv(settings.REGISTER_FD.name, str(write_fd))
    assert announce(b"\x01" * 16, "127.0.0.1:1", 11) is None
    with pytest.raises(OSError):
        os.fstat(write_fd)  # closed either way
    assert settings.REGISTER_FD.name not in os.environ


def test_the_agent_takes_only_its_own_workers_registration(monkeypatch):
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        # A line for another worker id is not this worker's registration.
        other, fut = _listening(monkeypatch, b"\x02" * 16)
        assert announce(b"\x03" * 16, "127.0.0.1:2", 12) is not None
        await _until(lambda: other.closed)
        assert not fut.done()
        assert other.take_control() is None

        # Its own line resolves the wait with its address and data port.
        own, fut = _listening(monkeypatch, b"\x04" * 16)
        worker_end = announce(b"\x04" * 16, "127.0.0.1:4", 14)
        assert worker_end is not None
        assert await asyncio.wait_for(fut, DEADLINE_S) == ("127.0.0.1:4", 14)
        control = own.take_control()
        own.close()  # the pair is the control's now: closing the registration leaves it open
        assert isinstance(control, WorkerControl)

        # StartActor on the pair, answered by the worker's side (`serve`) ...
        seen = []

        async def start_actor(request: pb.StartActorRequest) -> pb.StartActorReply:
            seen.append(request.spec.class_name)
            return pb.StartActorReply(started=True, pid=1234)

        stays = ["it owns objects that may still be used", ""]  # what exit_if_idle says, in turn

        served = loop.create_task(serve(worker_end, start_actor, lambda: stays.pop(0)))
        reply = await asyncio.wait_for(
            control.start_actor(pb.StartActorRequest(spec=pb.ActorSpec(class_name="A"))), DEADLINE_S)
        assert reply.started and reply.pid == 1234 and seen == ["A"]

        # ... and the agent's reaping of an idle worker: why it stays, then "" (it exits).
        assert await asyncio.wait_for(control.ask_to_exit(), DEADLINE_S) == "it owns objects that may still be used"
        assert await asyncio.wait_for(control.ask_to_exit(), DEADLINE_S) == ""

        # ... and a worker whose start raises closes the pair: the agent reads a lost worker.
        async def crashing(request: pb.StartActorRequest) -> pb.StartActorReply:
            raise RuntimeError("boom")

        served.cancel()
        with pytest.raises(asyncio.CancelledError):
            await served
        control.close()
        own2, fut = _listening(monkeypatch, b"\x06" * 16)
        worker_end = announce(b"\x06" * 16, "127.0.0.1:6", 16)
        await asyncio.wait_for(fut, DEADLINE_S)
        control = own2.take_control()
        served = loop.create_task(serve(worker_end, crashing, lambda: ""))
        with pytest.raises(ControlLost):
            await asyncio.wait_for(control.start_actor(pb.StartActorRequest()), DEADLINE_S)
        await asyncio.wait_for(served, DEADLINE_S)
        control.close()

        # A pipe that ends with nothing on it (the worker exited) leaves the wait to the exit.
        silent = RegistrationPair(b"\x05" * 16)
        silent.started()  # no child holds it: it reads as ended at once
        fut = loop.create_future()
        silent.listen(fut)
        await _until(lambda: silent.closed)
        assert not fut.done()

    asyncio.run(scenario())


def _listening(monkeypatch, worker_id: bytes) -> tuple[RegistrationPair, asyncio.Future]:
    """The agent's side of a new worker's pair, waiting for its registration (the future); the
    worker's end is named in this process's environment, as a started worker finds it."""
    pair = RegistrationPair(worker_id)
    monkeypatch.setenv(settings.REGISTER_FD.name, str(os.dup(pair.child_fd)))
    pair.started()
    fut = asyncio.get_running_loop().create_future()
    pair.listen(fut)
    return pair, fut


async def _until(condition) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), DEADLINE_S)
