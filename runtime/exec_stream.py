"""One Execute stream from a caller to a worker: ordered, batched, results dispatched.

Calls queued while a write is in flight go out together in the next message, so a burst
of `.remote()` calls costs a handful of gRPC messages rather than one each, and a single
stream keeps one caller's calls in submission order.

Nothing is written before the worker has accepted the stream (it sends its initial metadata
first): a stream lost before that (a connection that timed out on a loaded machine, say) is
`established=False`, and its calls certainly never ran, so callers re-send them without
spending a retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc

OnResults = Callable[["ExecStream", list[pb.TaskResult]], None]
OnLost = Callable[["ExecStream", BaseException | None], None]


class ExecStream:
    def __init__(self, channel: grpc.aio.Channel, metadata, address: str,
                 on_results: OnResults, on_lost: OnLost):
        self.address = address
        self._call = pb_grpc.CoreWorkerStub(channel).Execute(metadata=metadata)
        self._outbox: list[pb.TaskSpec] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._lost = False
        self.established = False  # the worker accepted the stream: calls written from now on may run
        self._on_results = on_results
        self._on_lost = on_lost
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._write_loop())
        self._reader = loop.create_task(self._read_loop())

    @property
    def lost(self) -> bool:
        return self._lost

    def send(self, specs: list[pb.TaskSpec]) -> None:
        self._outbox.extend(specs)
        self._wake.set()

    def unwritten(self) -> set[bytes]:
        """The task ids of the calls handed to this stream that it has not written (they
        cannot have run, so a lost stream's caller re-sends them without spending a retry)."""
        return {spec.task_id for spec in self._outbox}

    def close(self) -> None:
        """Half-closes after queued specs are written; the worker then ends the stream."""
        self._closing = True
        self._wake.set()

    def abort(self) -> None:
        self._call.cancel()

    async def _write_loop(self) -> None:
        try:
            await self._call.initial_metadata()  # returns (empty) on a failed call too
            if self._call.done():
                return  # failed before the worker accepted it: nothing was written
            self.established = True
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._outbox:
                    batch, self._outbox = self._outbox, []
                    await self._call.write(pb.ExecuteRequest(tasks=batch))
                if self._closing and not self._outbox:
                    await self._call.done_writing()
                    return
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, asyncio.CancelledError):
            return  # the reader reports the loss

    async def _read_loop(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                reply = await self._call.read()
                if reply is grpc.aio.EOF:
                    break
                self._on_results(self, list(reply.results))
        except grpc.aio.AioRpcError as e:
            error = e
        except asyncio.CancelledError as e:
            error = e
        self._lost = True
        self._writer.cancel()
        self._on_lost(self, error)
