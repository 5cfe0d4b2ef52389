"""Calls to the head that ride out a head restart.

The head is off the call path, but creating actors, looking up names and reporting deaths go
through it. When it restarts (its state is in Redis), those calls wait for it to come back, up
to a deadline, instead of failing at once; a call that was in flight when it died is re-sent,
so every head method reached through here must be idempotent.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from kastor.runtime import config, retry
from kastor.runtime.retry import RetryPolicy

log = logging.getLogger("kastor.head_link")

# While the head is away: only UNAVAILABLE (refused, reset, died mid-call) is waited out, up to a
# deadline set per call; the jitter spreads the callers that all lost the same head.
HEAD_OUTAGE = RetryPolicy(initial_s=0.05, max_s=1.0, jitter=0.2, retry_on=(grpc.aio.AioRpcError,),
                          retry_codes={grpc.StatusCode.UNAVAILABLE})

_outage_since: dict[str, float] = {}  # head address -> when calls to it started failing


async def call(method: Callable[..., Awaitable[Any]], request: Any, *, metadata: Any, address: str,
               timeout: float | None = None, deadline_s: float | None = None) -> Any:
    """Calls `method` (a head stub method), retrying while the head is unreachable.

    `timeout` bounds one attempt (long polls pass their own); the call gives up once the head
    has been unreachable (UNAVAILABLE: refused, reset, or died mid-call) for `deadline_s`
    (default HEAD_RECONNECT_TIMEOUT_S).
    """
    policy = dataclasses.replace(
        HEAD_OUTAGE, deadline_s=config.HEAD_RECONNECT_TIMEOUT_S if deadline_s is None else deadline_s)
    try:
        reply = await retry.call_async(lambda: method(request, metadata=metadata, timeout=timeout), policy,
                                       on_retry=lambda e, _n, _d: _note_outage(address, e))
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.UNAVAILABLE:
            raise ConnectionError(
                f"The Kastor head at {address} has been unreachable for "
                f"{time.monotonic() - _outage_since.get(address, time.monotonic()):.0f}s "
                f"({e.code().name}). Check that the head is running; raise "
                f"KASTOR_HEAD_RECONNECT_TIMEOUT_S to wait longer.") from None
        raise
    _note_recovery(address)
    return reply


def _note_outage(address: str, e: grpc.aio.AioRpcError) -> None:
    if address not in _outage_since:
        _outage_since[address] = time.monotonic()
        log.warning("lost the head at %s (%s); waiting for it to come back (up to %.0fs per call)",
                    address, e.code().name, config.HEAD_RECONNECT_TIMEOUT_S)


def _note_recovery(address: str) -> None:
    since = _outage_since.pop(address, None)
    if since is not None:
        log.warning("reconnected to the head at %s after %.1fs", address, time.monotonic() - since)
