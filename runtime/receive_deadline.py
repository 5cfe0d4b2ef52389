"""Receive deadlines: a request that stops arriving part-way is dropped, not waited on for ever.

gRPC reads a unary call's request before it runs the handler, with no time limit and no
server option to set one: keepalive pings are answered by a live peer's HTTP/2 stack, and
connection idle/age limits either never fire while a call is open or also cut healthy
long-lived streams. So a peer that sends the start of a message and then stalls would keep
its stream (and its buffers) on the server for good, on every port.

`with_receive_deadline` re-shapes a handler so the handler itself reads the request, within
`timeout` seconds of the call's start, and each message of a request stream (PutObject's
chunks) within `timeout` of the previous one. The wire format is the same for the client.
Execute streams are left alone: a caller's stream to an actor is idle between calls for as
long as the caller likes, and a stalled message cannot be told from that idle time here.
"""

from __future__ import annotations

import asyncio
import inspect

import grpc
from kastor.runtime import settings

ENV_RECEIVE_TIMEOUT = settings.RECEIVE_TIMEOUT_S.name
DEFAULT_RECEIVE_TIMEOUT_S: float = settings.RECEIVE_TIMEOUT_S.default  # type: ignore[assignment]
_UNBOUNDED = {"Execute"}  # request streams that may legitimately idle between messages


def receive_timeout_s() -> float:
    """Read at server start, so a test (or an operator) can set it per process."""
    return settings.RECEIVE_TIMEOUT_S.get()


def with_receive_deadline(handler: grpc.RpcMethodHandler | None, method: str,
                          timeout: float) -> grpc.RpcMethodHandler | None:
    if handler is None or method.rsplit("/", 1)[-1] in _UNBOUNDED:
        return handler
    if handler.request_streaming:
        return _bounded_stream(handler, timeout)
    return _bounded_unary(handler, timeout)


def _bounded_unary(handler: grpc.RpcMethodHandler, timeout: float) -> grpc.RpcMethodHandler:
    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    if not handler.response_streaming:
        inner = handler.unary_unary

        async def unary_response(request_iterator, context):
            return await inner(await _one_request(request_iterator, context, timeout), context)

        return grpc.stream_unary_rpc_method_handler(unary_response, deserialize, serialize)

    inner = handler.unary_stream
    if inspect.isasyncgenfunction(inner):
        async def stream_response(request_iterator, context):
            async for reply in inner(await _one_request(request_iterator, context, timeout), context):
                yield reply
    else:  # a handler that answers through context.write
        async def stream_response(request_iterator, context):
            await inner(await _one_request(request_iterator, context, timeout), context)

    return grpc.stream_stream_rpc_method_handler(stream_response, deserialize, serialize)


def _bounded_stream(handler: grpc.RpcMethodHandler, timeout: float) -> grpc.RpcMethodHandler:
    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    if not handler.response_streaming:
        inner = handler.stream_unary

        async def unary_response(request_iterator, context):
            return await inner(_each_request(request_iterator, context, timeout), context)

        return grpc.stream_unary_rpc_method_handler(unary_response, deserialize, serialize)

    inner = handler.stream_stream

    async def stream_response(request_iterator, context):
        async for reply in inner(_each_request(request_iterator, context, timeout), context):
            yield reply

    return grpc.stream_stream_rpc_method_handler(stream_response, deserialize, serialize)


async def _one_request(request_iterator, context, timeout: float):
    async for request in _each_request(request_iterator, context, timeout):
        return request
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call ended before its request message was sent")


async def _each_request(request_iterator, context, timeout: float):
    messages = aiter(request_iterator)
    while True:
        try:
            request = await asyncio.wait_for(anext(messages), timeout)
        except StopAsyncIteration:
            return
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the request message did not arrive in full within {timeout:g}s, so the call was dropped "
                f"(a peer that stalled part-way through a message). Set {ENV_RECEIVE_TIMEOUT} on the "
                f"servers to allow slower senders.")
        yield request
