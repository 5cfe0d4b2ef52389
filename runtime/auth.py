"""Cluster-token authentication for every gRPC endpoint.

The check runs in a server interceptor, i.e. before gRPC hands the request bytes to a
deserializer: a peer without the token never gets a single byte parsed, let alone unpickled.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time

import grpc
from kastor.runtime import config, receive_deadline, settings

log = logging.getLogger("kastor.auth")

_FINGERPRINT_SCHEME = "pbkdf2-sha256"
_FINGERPRINT_ITERATIONS = 200_000


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def fingerprint(token: str, salt: bytes | None = None, iterations: int = _FINGERPRINT_ITERATIONS) -> str:
    """A salted, slow one-way hash of the token, safe to keep beside the cluster's state.

    The head's Redis store keeps this, never the token: whoever can read Redis learns
    nothing that lets them call the cluster, even for a short hand-picked `--token`
    (PBKDF2 makes guessing slow; the salt makes each cluster's guesses separate).
    """
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", token.encode(), salt, iterations)
    return f"{_FINGERPRINT_SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def fingerprint_matches(token: str, stored: str) -> bool:
    """Whether `token` is the one `stored` (from `fingerprint`) was made from."""
    try:
        scheme, iterations, salt, _ = stored.split("$")
        if scheme != _FINGERPRINT_SCHEME:
            return False
        expected = fingerprint(token, bytes.fromhex(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(expected.encode(), stored.encode())


def resolve_token(explicit: str | None = None, token_file: str | None = None) -> str | None:
    """Flags win over environment; a token file is how a Kubernetes Secret arrives."""
    if explicit:
        return explicit.strip()
    path = token_file or settings.TOKEN_FILE.get()
    if path and os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    env = settings.TOKEN.get()
    return env.strip() if env else None


_REFUSAL_LOG_INTERVAL_S = 60.0
_last_refusal_logged: dict[tuple[str, str], float] = {}


def _log_refusal(context, method: str, reason: str) -> None:
    """Logs a refused peer once a minute per (host, reason): a node with a stale token heartbeats
    twice a second, and one line says enough."""
    log_refused_peer(context.peer() or "unknown peer", method, reason)


def log_refused_peer(peer: str, method: str, reason: str) -> None:
    """Logs a peer refused for its token, at most once a minute per (host, reason); also for
    the data port (data_server.py), whose connections have no gRPC context."""
    host = peer.rsplit(":", 1)[0]
    now = time.monotonic()
    if now - _last_refusal_logged.get((host, reason), -_REFUSAL_LOG_INTERVAL_S) < _REFUSAL_LOG_INTERVAL_S:
        return
    _last_refusal_logged[(host, reason)] = now
    log.warning("refused %s from %s: %s cluster token. A node or driver of another cluster, or this process "
                "was started with a token other than its cluster's (restart it with the cluster's "
                "--token-file / KASTOR_TOKEN_FILE).", method, peer, reason)


def _reject(message: str, method: str, reason: str):
    async def abort(request_iterator, context):  # never iterated: nothing the peer sent is read
        _log_refusal(context, method, reason)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return abort


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls whose `kastor-token` metadata is missing or wrong, and bounds how long an
    accepted call's request may take to arrive (see receive_deadline)."""

    def __init__(self, token: str):
        self._token = token.encode()
        self._receive_timeout = receive_deadline.receive_timeout_s()

    async def intercept_service(self, continuation, handler_call_details):
        reason = "no"
        for key, value in handler_call_details.invocation_metadata or ():
            if key == config.TOKEN_METADATA_KEY:
                given = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(given, self._token):
                    return receive_deadline.with_receive_deadline(
                        await continuation(handler_call_details), handler_call_details.method, self._receive_timeout)
                reason = "a wrong"
                break
        return _unauthenticated_handler(handler_call_details, reason)


def _unauthenticated_handler(details, reason: str) -> grpc.RpcMethodHandler:
    # Request-streaming shapes with identity (de)serializers: the call is refused before its
    # request is read (a unary handler would first wait for the whole message), never parsed.
    msg = "missing or wrong cluster token (pass token=... or set KASTOR_TOKEN)"
    method = details.method
    return grpc.stream_unary_rpc_method_handler(_reject(msg, method, reason), lambda b: b, lambda b: b) \
        if not _is_stream(details) else grpc.stream_stream_rpc_method_handler(
            _reject_stream(msg, method, reason), lambda b: b, lambda b: b)


def _is_stream(details) -> bool:
    # Only these stream; aborting through the unary shape works for
    # unary-unary calls, the streaming shape for the rest.
    return details.method.rsplit("/", 1)[-1] in {"Execute", "JobSession", "FetchObject", "PutObject", "WatchCluster"}


def _reject_stream(message: str, method: str, reason: str):
    async def abort(request_iterator, context):
        _log_refusal(context, method, reason)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield b""  # pragma: no cover - abort raises

    return abort


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    return ((config.TOKEN_METADATA_KEY, token),)
