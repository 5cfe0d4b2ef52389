"""What a thread hand-off costs a synchronous round trip, with no Kastor and no gRPC (issue 16).

    python bench/handoffs.py            # four shapes, 3 s each
    python bench/handoffs.py --seconds 1

A caller process sends an 8-byte frame over a local TCP socket and blocks until the server process
echoes it, in four shapes:

- ``direct/direct``: the caller's thread writes and reads the socket itself; the server (a uvloop
  protocol) answers inside ``data_received``. The raw-socket floor.
- ``handoff/direct``: the caller's thread hands the frame to an event-loop thread that owns the
  connection (``call_soon_threadsafe``) and waits on a future the loop completes: Kastor's caller
  side (caller thread -> core loop -> caller thread).
- ``direct/handoff``: the server's loop hands the frame to a method thread (a ``queue.Queue``) and
  that thread hands the answer back (``call_soon_threadsafe``): Kastor's worker side (worker loop ->
  method thread -> worker loop).
- ``handoff/handoff``: both, the shape of one Kastor sync actor call minus gRPC and protobuf.

Each line is ``handoffs <shape> <round trips/s>``; the README's profile section explains them.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import queue
import socket
import struct
import threading
import time

try:
    import uvloop
except ImportError:  # pragma: no cover - Kastor depends on uvloop on Linux
    uvloop = None

FRAME = struct.Struct("!Q")


class Echo(asyncio.Protocol):
    """Answers each 8-byte frame, on the loop (`handoff` False) or from a method thread."""

    def __init__(self, handoff: bool) -> None:
        self.handoff = handoff
        self.buf = b""
        self.inbox: queue.Queue[bytes | None] = queue.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.handoff:
            loop = asyncio.get_running_loop()
            threading.Thread(target=self._method_thread, args=(loop,), daemon=True).start()

    def _method_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        while (frame := self.inbox.get()) is not None:
            loop.call_soon_threadsafe(self.transport.write, frame)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= FRAME.size:
            frame, self.buf = self.buf[:FRAME.size], self.buf[FRAME.size:]
            if self.handoff:
                self.inbox.put(frame)
            else:
                self.transport.write(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbox.put(None)


def serve(port_out: multiprocessing.connection.Connection, handoff: bool) -> None:
    loop = uvloop.new_event_loop() if uvloop else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(lambda: Echo(handoff), "127.0.0.1", 0))
    port_out.send(server.sockets[0].getsockname()[1])
    loop.run_forever()


class LoopClient(asyncio.Protocol):
    """The connection owned by an event-loop thread; `call` is made from another thread."""

    def __init__(self) -> None:
        self.waiter: concurrent.futures.Future[bytes] | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= FRAME.size and self.waiter is not None:
            frame, self.buf = self.buf[:FRAME.size], self.buf[FRAME.size:]
            self.waiter.set_result(frame)


def round_trips(port: int, handoff: bool, seconds: float) -> float:
    frame = FRAME.pack(1)
    if not handoff:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        step = lambda: (sock.sendall(frame), sock.recv(FRAME.size))  # noqa: E731
    else:
        loop = uvloop.new_event_loop() if uvloop else asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        proto = asyncio.run_coroutine_threadsafe(
            loop.create_connection(LoopClient, "127.0.0.1", port), loop).result()[1]

        def step() -> bytes:
            proto.waiter = concurrent.futures.Future()
            loop.call_soon_threadsafe(proto.transport.write, frame)
            return proto.waiter.result()
    for _ in range(200):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    print(f"# handoffs: loadavg {' '.join(open('/proc/loadavg').read().split()[:3])}, nproc {os.cpu_count()}",
          flush=True)
    for client_handoff, server_handoff in ((False, False), (True, False), (False, True), (True, True)):
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.Process(target=serve, args=(child, server_handoff), daemon=True)
        server.start()
        try:
            rate = round_trips(parent.recv(), client_handoff, args.seconds)
        finally:
            server.terminate()
            server.join()
        shape = f"{'handoff' if client_handoff else 'direct'}/{'handoff' if server_handoff else 'direct'}"
        print(f"handoffs {shape:<16} {rate:.0f}", flush=True)


if __name__ == "__main__":
    main()
