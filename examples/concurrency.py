"""Actors that handle many calls at once.

Why this exists: a plain actor runs one method call at a time. That is what
makes its state safe, but it wastes time when calls mostly wait (on I/O, on
other services). Two ways to let calls overlap:

* an async actor: any ``async def`` method makes the actor run its calls as
  coroutines on one event loop, so calls that ``await`` interleave;
* a threaded actor: ``max_concurrency=N`` runs up to N calls at once on a
  thread pool (state shared between calls then needs a lock).

Each demo records how many calls were in flight at once and compares the
elapsed time with what running the calls one by one would take.

Run it with ``python examples/concurrency.py``.
"""

import asyncio
import threading
import time

import kastor

DELAY = 0.5  # seconds each call spends waiting


@kastor.remote
class AsyncFetcher:
    """Async actor: every call is a coroutine on the actor's event loop."""

    def __init__(self):
        self.in_flight = 0
        self.peak = 0

    async def fetch(self, i: int) -> int:
        # No lock needed: coroutines only switch at an await.
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(DELAY)
        self.in_flight -= 1
        return i

    async def peak_concurrency(self) -> int:
        return self.peak


@kastor.remote(max_concurrency=4)
class ThreadedFetcher:
    """Threaded actor: up to 4 calls run at once, each on its own thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0

    def fetch(self, i: int) -> int:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        time.sleep(DELAY)  # a blocking wait, e.g. a synchronous HTTP call
        with self.lock:
            self.in_flight -= 1
        return i

    def peak_concurrency(self) -> int:
        return self.peak


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def timed_calls(actor, n: int) -> float:
    # Make sure the actor is up before timing, so start-up cost is not counted.
    kastor.get(actor.peak_concurrency.remote())
    start = time.perf_counter()
    results = kastor.get([actor.fetch.remote(i) for i in range(n)])
    elapsed = time.perf_counter() - start
    check(results == list(range(n)), "every call should return its own input")
    return elapsed


def report(label: str, actor, n: int, limit: int) -> None:
    elapsed = timed_calls(actor, n)
    sequential = n * DELAY
    peak = kastor.get(actor.peak_concurrency.remote())
    print(
        f"{label}: {n} calls of {DELAY}s took {elapsed:.2f}s "
        f"(one by one: {sequential:.1f}s), up to {peak} at once"
    )
    check(1 < peak <= limit, f"expected between 2 and {limit} calls in flight at once, saw {peak}")
    check(elapsed < sequential / 2, f"calls should overlap: {elapsed:.2f}s vs {sequential:.1f}s")


def main() -> None:
    kastor.init()
    try:
        # 20 calls that each sleep 0.5s: about 0.5s in total, not 10s.
        report("async actor   ", AsyncFetcher.remote(), n=20, limit=20)
        # 8 calls, 4 at a time: about 1s in total, not 4s.
        report("threaded actor", ThreadedFetcher.remote(), n=8, limit=4)
    finally:
        kastor.shutdown()
    print("concurrency example OK")


if __name__ == "__main__":
    main()
