"""One way to retry a call: a policy (how many tries, for how long, how far apart, on which
errors) and a sync and an async runner.

Kastor retries calls to a head that may be restarting, a node joining a head that is still
starting, and a Redis that comes up after the head. Each of those loops used to hand-write its
own attempt counting, deadline and backoff; they now state a `RetryPolicy` and let `call` or
`call_async` run it. Delays grow exponentially up to a cap, and jitter shortens each one by a
random fraction so that many clients that lost the same head do not come back in lock-step.
The clock, sleep and random source are parameters, so tests run a policy without waiting.

When the policy gives up (attempts used, deadline passed, or an error that is not retryable)
the last error is raised unchanged: the call site knows best how to explain it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc

T = TypeVar("T")
# Called with (error, attempt number from 1, delay before the next) before each wait; it may raise
# to stop retrying at once (its caller shut down, say): that error then leaves the runner.
OnRetry = Callable[[BaseException, int, float], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How to retry. `attempts` and `deadline_s` may both bound it; with neither it retries for ever.

    `retry_on`: exception types worth retrying; `fatal` types are raised at once even when they
    subclass one of those (redis-py files a wrong password under ConnectionError). For gRPC
    errors, `retry_codes` (if given) lists the status codes worth retrying, and `fatal_codes`
    those that never are (UNAUTHENTICATED: a wrong token does not fix itself).
    """

    attempts: int | None = None
    deadline_s: float | None = None
    initial_s: float = 0.05
    max_s: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.0  # each delay is shortened by up to this fraction, at random
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    fatal: tuple[type[BaseException], ...] = ()
    retry_codes: Collection[grpc.StatusCode] | None = None
    fatal_codes: Collection[grpc.StatusCode] = ()

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1 (or None), got {self.attempts}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1), got {self.jitter}")
        if self.initial_s < 0 or self.max_s < self.initial_s or self.multiplier < 1:
            raise ValueError(f"RetryPolicy needs 0 <= initial_s <= max_s and multiplier >= 1, got "
                             f"initial_s={self.initial_s}, max_s={self.max_s}, multiplier={self.multiplier}")

    def retryable(self, error: BaseException) -> bool:
        if isinstance(error, self.fatal) or not isinstance(error, self.retry_on):
            return False
        code = _grpc_code(error)
        if code is None:
            return True
        return code not in self.fatal_codes and (self.retry_codes is None or code in self.retry_codes)

    def delays(self, rng: Callable[[], float] = random.random) -> Iterator[float]:
        """The waits between tries: initial_s, times multiplier each time up to max_s, each jittered
        (the runners also cut a wait short at the deadline)."""
        delay = self.initial_s
        while True:
            yield delay * (1 - self.jitter * rng())
            delay = min(delay * self.multiplier, self.max_s)


def _grpc_code(error: BaseException) -> grpc.StatusCode | None:
    if isinstance(error, grpc.RpcError) and callable(getattr(error, "code", None)):
        return error.code()
    return None


class _Attempts:
    """The bookkeeping both runners share: whether to try again, and how long to wait first."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float], rng: Callable[[], float]):
        self.policy, self.clock = policy, clock
        self.deadline = None if policy.deadline_s is None else clock() + policy.deadline_s
        self.delays = policy.delays(rng)
        self.count = 0

    def next_delay(self, error: BaseException) -> float | None:
        """The wait before the next try after `error`, or None to give up (the caller re-raises)."""
        self.count += 1
        p = self.policy
        if not p.retryable(error) or (p.attempts is not None and self.count >= p.attempts):
            return None
        delay = next(self.delays)
        if self.deadline is not None:
            remaining = self.deadline - self.clock()
            if remaining <= 0:
                return None
            delay = min(delay, remaining)
        return delay


def call(fn: Callable[[], T], policy: RetryPolicy, *, on_retry: OnRetry | None = None,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] = time.sleep,
         rng: Callable[[], float] = random.random) -> T:
    """Calls `fn` until it returns, retrying per `policy`; raises the last error when it gives up."""
    attempts = _Attempts(policy, clock, rng)
    while True:
        try:
            return fn()
        except BaseException as e:
            delay = attempts.next_delay(e)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(e, attempts.count, delay)
        sleep(delay)


async def call_async(fn: Callable[[], Awaitable[T]], policy: RetryPolicy, *, on_retry: OnRetry | None = None,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                     rng: Callable[[], float] = random.random) -> T:
    """The async form of `call`: awaits `fn()` until it returns, sleeping on the event loop between tries.

    Cancellation is never retried: it is not an Exception, and policies retry Exceptions only."""
    attempts = _Attempts(policy, clock, rng)
    while True:
        try:
            return await fn()
        except BaseException as e:
            delay = attempts.next_delay(e)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(e, attempts.count, delay)
        await sleep(delay)
