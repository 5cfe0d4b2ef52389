"""A borrower tells a slow owner from a dead one (issue 15, item 4): one UNAVAILABLE (a new
connection that timed out before the owner's SETTINGS frame, on a loaded machine) is asked
again, while a refused connection means the owner is gone at once. A stub stands in for the
owner's gRPC face; the errors are grpc's own."""

import asyncio

import grpc
import pytest
from kastor.runtime import owner_fetch, retry
from kastor.runtime.protocol import kastor_pb2 as pb

VALUE = pb.Value(data=b"value")
SLOW = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:10.0.0.1:5: " \
       "Socket closed: timed out before receiving SETTINGS frame"
GONE = "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:5: Connection refused"


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class Owner:
    """GetObjects answers with the queued errors first, then the value."""

    def __init__(self, *errors: grpc.aio.AioRpcError):
        self.errors = list(errors)
        self.calls = 0

    async def GetObjects(self, request, metadata=None):  # noqa: N802 - the gRPC method's name
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return pb.GetObjectsReply(object_ids=list(request.object_ids), values=[VALUE])


FAST = retry.RetryPolicy(deadline_s=5.0, initial_s=0.0, max_s=0.0, retry_on=(grpc.aio.AioRpcError,),
                         retry_codes=(grpc.StatusCode.UNAVAILABLE,))


def _ask(owner: Owner, policy: retry.RetryPolicy = FAST, wait_s: float = 0):
    return asyncio.run(owner_fetch.ask_owner(owner, b"oid", wait_s, (), policy))


def test_a_slow_owner_is_asked_again_until_it_answers():
    owner = Owner(_error(grpc.StatusCode.UNAVAILABLE, SLOW), _error(grpc.StatusCode.UNAVAILABLE, SLOW))
    assert _ask(owner) == VALUE
    assert owner.calls == 3


def test_an_owner_that_refuses_the_connection_is_gone_at_once():
    owner = Owner(_error(grpc.StatusCode.UNAVAILABLE, GONE))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ask(owner)
    assert caught.value.details() == GONE and owner.calls == 1


def test_an_owner_that_stays_unreachable_is_given_up_after_the_deadline():
    owner = Owner(*[_error(grpc.StatusCode.UNAVAILABLE, SLOW)] * 10_000)
    policy = retry.RetryPolicy(deadline_s=0.3, initial_s=0.01, max_s=0.01, retry_on=(grpc.aio.AioRpcError,),
                               retry_codes=(grpc.StatusCode.UNAVAILABLE,))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ask(owner, policy)
    assert caught.value.details() == SLOW and 1 < owner.calls < 10_000


def test_other_errors_are_not_retried_and_a_probe_that_times_out_is_not_ready():
    owner = Owner(_error(grpc.StatusCode.UNAUTHENTICATED, "bad token"))
    with pytest.raises(grpc.aio.AioRpcError):
        _ask(owner)
    assert owner.calls == 1
    probe = Owner(_error(grpc.StatusCode.DEADLINE_EXCEEDED, "not ready"))
    assert _ask(probe, wait_s=0.2) is None
