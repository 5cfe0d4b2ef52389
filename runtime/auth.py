"""Cluster-token authentication for every gRPC endpoint.

The check runs in a server interceptor, i.e. before gRPC hands the request bytes to a
deserializer: a peer without the token never gets a single byte parsed, let alone unpickled.
"""

from __future__ import annotations

import hmac
import os
import secrets

import grpc
from kastor.runtime import config, receive_deadline


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def resolve_token(explicit: str | None = None, token_file: str | None = None) -> str | None:
    """Flags win over environment; a token file is how a Kubernetes Secret arrives."""
    if explicit:
        return explicit.strip()
    path = token_file or os.environ.get(config.ENV_TOKEN_FILE)
    if path and os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    env = os.environ.get(config.ENV_TOKEN)
    return env.strip() if env else None


def _reject(message: str):
    async def abort(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return abort


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls whose `kastor-token` metadata is missing or wrong, and bounds how long an
    accepted call's request may take to arrive (see receive_deadline)."""

    def __init__(self, token: str):
        self._token = token.encode()
        self._receive_timeout = receive_deadline.receive_timeout_s()

    async def intercept_service(self, continuation, handler_call_details):
        for key, value in handler_call_details.invocation_metadata or ():
            if key == config.TOKEN_METADATA_KEY:
                given = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(given, self._token):
                    return receive_deadline.with_receive_deadline(
                        await continuation(handler_call_details), handler_call_details.method, self._receive_timeout)
                break
        return _unauthenticated_handler(handler_call_details)


def _unauthenticated_handler(details) -> grpc.RpcMethodHandler:
    # Request-streaming shapes with identity (de)serializers: the call is refused before its
    # request is read (a unary handler would first wait for the whole message), never parsed.
    msg = "missing or wrong cluster token (pass token=... or set KASTOR_TOKEN)"
    return grpc.stream_unary_rpc_method_handler(_reject(msg), lambda b: b, lambda b: b) \
        if not _is_stream(details) else grpc.stream_stream_rpc_method_handler(
            _reject_stream(msg), lambda b: b, lambda b: b)


def _is_stream(details) -> bool:
    # Only these stream; aborting through the unary shape works for
    # unary-unary calls, the streaming shape for the rest.
    return details.method.rsplit("/", 1)[-1] in {"Execute", "JobSession", "FetchObject", "PutObject"}


def _reject_stream(message: str):
    async def abort(request_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield b""  # pragma: no cover - abort raises

    return abort


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    return ((config.TOKEN_METADATA_KEY, token),)
