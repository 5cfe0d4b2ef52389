"""The retry helper, in-process: a fake clock and sleep stand in for time, so nothing waits."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from kastor.runtime import retry
from kastor.runtime.retry import RetryPolicy


class FakeTime:
    """A clock that moves only when slept on; records each sleep."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def sleep_async(self, seconds: float) -> None:
        self.sleep(seconds)


class Flaky:
    """Raises the given errors in turn, then returns "ok"; counts its calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    async def async_call(self) -> str:
        return self()


class RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def run(fn, policy: RetryPolicy, t: FakeTime, **kw):
    return retry.call(fn, policy, clock=t.clock, sleep=t.sleep, rng=lambda: 1.0, **kw)


def test_backoff_doubles_up_to_the_cap():
    t = FakeTime()
    fn = Flaky(*[OSError("down")] * 6)
    assert run(fn, RetryPolicy(initial_s=0.1, max_s=0.5), t) == "ok"
    assert fn.calls == 7
    assert t.slept == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])


def test_attempts_bound_the_tries_and_the_last_error_is_raised():
    t = FakeTime()
    fn = Flaky(OSError("1"), OSError("2"), OSError("3"), OSError("4"))
    with pytest.raises(OSError, match="^4$"):
        run(fn, RetryPolicy(attempts=4, initial_s=0.2, max_s=10), t)
    assert fn.calls == 4
    assert t.slept == pytest.approx([0.2, 0.4, 0.8])


def test_the_deadline_bounds_the_time_and_cuts_the_last_wait_short():
    t = FakeTime()
    fn = Flaky(*[OSError("down")] * 100)
    with pytest.raises(OSError):
        run(fn, RetryPolicy(deadline_s=1.0, initial_s=0.3, max_s=0.3), t)
    assert sum(t.slept) == pytest.approx(1.0)
    assert t.slept[-1] == pytest.approx(0.1)  # 0.3 + 0.3 + 0.3, then only the 0.1 left
    assert fn.calls == len(t.slept) + 1


def test_an_error_that_is_not_retryable_is_raised_at_once():
    t = FakeTime()
    fn = Flaky(KeyError("bug"))
    with pytest.raises(KeyError):
        run(fn, RetryPolicy(retry_on=(OSError,)), t)
    assert fn.calls == 1 and t.slept == []


def test_fatal_types_win_over_their_retryable_base():
    class WrongPassword(ConnectionError):
        pass

    t = FakeTime()
    fn = Flaky(ConnectionError("refused"), WrongPassword("no"))
    with pytest.raises(WrongPassword):
        run(fn, RetryPolicy(retry_on=(ConnectionError,), fatal=(WrongPassword,)), t)
    assert fn.calls == 2


def test_grpc_codes_choose_what_is_retried():
    only_unavailable = RetryPolicy(retry_codes={grpc.StatusCode.UNAVAILABLE})
    assert only_unavailable.retryable(RpcError(grpc.StatusCode.UNAVAILABLE))
    assert not only_unavailable.retryable(RpcError(grpc.StatusCode.NOT_FOUND))
    all_but_auth = RetryPolicy(fatal_codes={grpc.StatusCode.UNAUTHENTICATED})
    assert all_but_auth.retryable(RpcError(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert not all_but_auth.retryable(RpcError(grpc.StatusCode.UNAUTHENTICATED))
    t = FakeTime()
    fn = Flaky(RpcError(grpc.StatusCode.UNAVAILABLE), RpcError(grpc.StatusCode.UNAUTHENTICATED))
    with pytest.raises(grpc.RpcError) as info:
        run(fn, all_but_auth, t)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and fn.calls == 2


def test_jitter_only_shortens_a_wait():
    policy = RetryPolicy(initial_s=1.0, max_s=1.0, jitter=0.25)
    waits = policy.delays(rng=iter([0.0, 0.5, 1.0]).__next__)
    assert [next(waits) for _ in range(3)] == pytest.approx([1.0, 0.875, 0.75])


def test_on_retry_hears_each_retried_error():
    t = FakeTime()
    heard: list[tuple[str, int, float]] = []
    run(Flaky(OSError("a"), OSError("b")), RetryPolicy(initial_s=0.5, max_s=1), t,
        on_retry=lambda e, n, d: heard.append((str(e), n, d)))
    assert heard == [("a", 1, 0.5), ("b", 2, 1.0)]


def test_the_async_form_runs_the_same_policy():
    t = FakeTime()
    fn = Flaky(OSError("x"), OSError("y"))
    result = asyncio.run(retry.call_async(fn.async_call, RetryPolicy(initial_s=0.25, max_s=1), clock=t.clock,
                                          sleep=t.sleep_async, rng=lambda: 1.0))
    assert result == "ok" and fn.calls == 3
    assert t.slept == pytest.approx([0.25, 0.5])


def test_cancellation_is_not_retried():
    t = FakeTime()
    fn = Flaky(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(retry.call_async(fn.async_call, RetryPolicy(), clock=t.clock, sleep=t.sleep_async))
    assert fn.calls == 1


@pytest.mark.parametrize("kwargs", [dict(attempts=0), dict(jitter=1.0), dict(initial_s=2, max_s=1),
                                    dict(multiplier=0.5)])
def test_a_nonsense_policy_is_refused(kwargs):
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)


def test_on_retry_may_stop_the_retries_at_once():
    """A caller that shut down stops its retries from on_retry: its error leaves, without another wait."""
    t = FakeTime()

    def stop(error: BaseException, attempt: int, delay: float) -> None:
        raise LookupError("closed") from error

    with pytest.raises(LookupError):
        run(Flaky(OSError("a"), OSError("b")), RetryPolicy(initial_s=0.5), t, on_retry=stop)
    assert t.slept == []


def _schedule(policy: RetryPolicy, tries: int, error: type[Exception] = ConnectionError) -> list[float]:
    t = FakeTime()
    run(Flaky(*[error(str(i)) for i in range(tries - 1)]), policy, t)
    return t.slept


def test_the_former_hand_written_loops_keep_their_schedules():
    """The long polls moved onto the helper wait as they did: resolving an actor every 0.5 s,
    watching a live stream's incarnation 0.5 s doubling up to a poll (5 s), reopening a job
    session every 0.2 s, and the actor pod's watch every second."""
    from kastor.kubernetes import actor_pod
    from kastor.runtime import actor_submitter, driver

    assert _schedule(actor_submitter.RESOLVE_RETRY, 4) == [0.5, 0.5, 0.5]
    assert _schedule(actor_submitter.WATCH_RETRY, 7) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert _schedule(driver.SESSION_RETRY, 4, driver.SessionDropped) == pytest.approx([0.2, 0.2, 0.2])
    assert _schedule(actor_pod.WATCH_RETRY, 4) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("stop", ["actor_pod.PodStopping", "actor_pod.NodeExited", "actor_submitter.StopPolling"])
def test_the_polls_stop_at_once_when_their_reason_is_gone(stop):
    """Their stop signals are Exceptions, which the policies otherwise retry: they must not be."""
    from kastor.kubernetes import actor_pod
    from kastor.runtime import actor_submitter

    module, name = stop.split(".")
    error_type = getattr({"actor_pod": actor_pod, "actor_submitter": actor_submitter}[module], name)
    error = error_type(0) if name == "NodeExited" else error_type()
    policy = actor_pod.WATCH_RETRY if module == "actor_pod" else actor_submitter.WATCH_RETRY
    t = FakeTime()
    with pytest.raises(error_type):
        run(Flaky(error), policy, t)
    assert t.slept == []
