"""Asking an owner for a borrowed ref's value, telling a slow owner from a dead one.

A borrower that reaches a ref's owner gets the value; one that cannot must not call the
owner dead on the first failed RPC: on a loaded machine a new connection can time out before
the owner's HTTP/2 SETTINGS frame arrives, and the object would be reported lost
(`OwnerDiedError`) while its owner is alive and serving (issue 15, item 4). So UNAVAILABLE is
retried with backoff for up to KASTOR_OWNER_UNREACHABLE_S; a refused connection (nothing
listens at the owner's address any more) means the owner is gone, at once.
"""

from __future__ import annotations

from typing import Any

import grpc
from kastor.runtime import config, retry
from kastor.runtime.protocol import kastor_pb2 as pb


def refused(error: BaseException) -> bool:
    """Whether a gRPC error says nothing listens at the address (the process is gone)."""
    details = error.details() if isinstance(error, grpc.aio.AioRpcError) else ""
    return "Connection refused" in (details or "")


def _stop_if_refused(error: BaseException, attempt: int, delay: float) -> None:
    if refused(error):
        raise error


def policy(deadline_s: float | None = None) -> retry.RetryPolicy:
    return retry.RetryPolicy(deadline_s=config.OWNER_UNREACHABLE_S if deadline_s is None else deadline_s,
                             initial_s=0.1, max_s=2.0, jitter=0.2, retry_on=(grpc.aio.AioRpcError,),
                             retry_codes=(grpc.StatusCode.UNAVAILABLE,))


async def ask_owner(stub: Any, oid: bytes, wait_s: float, metadata: Any,
                    fetch_policy: retry.RetryPolicy | None = None) -> pb.Value | None:
    """The owner's value for `oid`; with wait_s > 0, None if it is not ready within wait_s.
    Raises the last AioRpcError once the owner is taken for dead (see the module docstring)."""

    async def once() -> pb.Value | None:
        try:
            reply = await stub.GetObjects(pb.GetObjectsRequest(object_ids=[oid], timeout_s=wait_s),
                                          metadata=metadata)
        except grpc.aio.AioRpcError as e:
            if wait_s and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return None
            raise
        return reply.values[0]

    return await retry.call_async(once, fetch_policy or policy(), on_retry=_stop_if_refused)
