"""A worker starts its gRPC server only when its port gets a connection (runtime/lazy_grpc_server.py).

The module tests use a real gRPC server on real sockets: calls made before the server started
(their connections wait in the plain socket's backlog and are copied to gRPC) and after (steered
to gRPC's own listener by the reuseport group's BPF program) all succeed, and so do they when
every connection is copied (the fallback where steering cannot be set). The cluster tests check
that actor calls and tasks never start a worker's gRPC, and that a cancel, which needs it, does.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import grpc
import kastor
import pytest
from kastor.runtime import lazy_grpc_server
from kastor.runtime.lazy_grpc_server import LazyGrpcServer
from support import DEADLINE_S, wait_until

ECHO = "/test.Echo/Echo"


def _echo_server() -> grpc.aio.Server:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                      ("grpc.max_send_message_length", 64 << 20)])

    async def echo(request: bytes, context) -> bytes:
        return request[::-1]

    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    server.add_generic_rpc_handlers((handler,))
    return server


async def _call(port: int, payload: bytes, host: str = "127.0.0.1") -> bytes:
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20),
               ("grpc.use_local_subchannel_pool", 1)]  # a connection of its own, not one shared in the process
    async with grpc.aio.insecure_channel(f"{host}:{port}", options=options) as channel:
        return await channel.unary_unary(ECHO)(payload, timeout=DEADLINE_S)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_calls_before_and_after_the_start_all_succeed_and_later_ones_go_straight_to_grpc(host):
    async def scenario() -> None:
        built = []
        lazy = LazyGrpcServer(host, lambda: built.append(1) or _echo_server(), "test server")
        try:
            assert not lazy.started and not built, "nothing starts gRPC before a connection comes"
            first = await asyncio.gather(*(_call(lazy.port, b"abc%d" % i) for i in range(8)))
            assert first == [b"%dcba" % i for i in range(8)]
            assert lazy.started and built == [1]
            assert lazy.copied >= 1, "the connections that started it waited on the plain socket"
            if _ipv6_loopback():  # gRPC binds the port as IPv6, as the plain socket does: one group
                assert lazy.steered
            copied = lazy.copied
            later = [await _call(lazy.port, b"x" * 10 + b"%d" % i) for i in range(8)]  # a connection each
            assert later == [b"%d" % i + b"x" * 10 for i in range(8)]
            if lazy.steered:
                assert lazy.copied == copied, "a steered group hands new connections to gRPC itself"
        finally:
            await lazy.stop(0)
        with pytest.raises(grpc.aio.AioRpcError):
            await _call(lazy.port, b"after stop")

    asyncio.run(scenario())


def test_without_steering_every_connection_is_copied_whole_both_ways(monkeypatch):
    monkeypatch.setattr(lazy_grpc_server, "steer_to_second_socket", lambda sock: False)

    async def scenario() -> None:
        lazy = LazyGrpcServer("127.0.0.1", _echo_server, "test server")
        try:
            big = os.urandom(20 << 20)  # the first connection, copied: more than a socket buffer each way
            assert await _call(lazy.port, big) == big[::-1]
            assert not lazy.steered
            copied = lazy.copied
            results = [await _call(lazy.port, b"%d-" % i * 1000) for i in range(6)]  # a connection each
            assert results == [(b"%d-" % i * 1000)[::-1] for i in range(6)]
            # Unsteered, the group hashes new connections between the two sockets: some are copied.
            assert lazy.copied > copied
        finally:
            await lazy.stop(0)

    asyncio.run(scenario())


@kastor.remote
class Worker:
    def serves_grpc(self) -> bool:
        from kastor.runtime import context
        return context.core.serves_grpc()

    def sleep(self, started: str) -> None:
        open(started, "w").close()
        time.sleep(DEADLINE_S)


@kastor.remote
def task_serves_grpc() -> tuple[int, bool]:
    from kastor.runtime import context
    return os.getpid(), context.core.serves_grpc()


def test_actor_calls_and_tasks_leave_a_workers_grpc_unstarted_and_a_cancel_starts_it(tmp_path):
    kastor.init(num_cpus=2)
    try:
        actor = Worker.remote()
        for _ in range(5):  # calls on the core loop's stream, then on the lane
            assert kastor.get(actor.serves_grpc.remote(), timeout=DEADLINE_S) is False
        ran = kastor.get([task_serves_grpc.remote() for _ in range(20)], timeout=DEADLINE_S)
        assert [serving for _, serving in ran] == [False] * 20, "a task's lease asks its worker nothing by gRPC"
        started = tmp_path / "started"
        ref = actor.sleep.remote(str(started))
        wait_until(started.exists, "the call to run (its cancel then goes to the worker, by gRPC)")
        kastor.cancel(ref)
        with pytest.raises(kastor.exceptions.TaskCancelledError):
            kastor.get(ref, timeout=DEADLINE_S)
        assert kastor.get(actor.serves_grpc.remote(), timeout=DEADLINE_S) is True
    finally:
        kastor.shutdown()
