"""Actor concurrency: one call at a time by default, threads with `max_concurrency`, asyncio actors.

Overlap is proven with barriers and events that only open when enough calls run at once, so a
test fails (rather than passes slowly) if the runtime serialises calls it should overlap.
"""

import asyncio
import threading
import time

import kastor
import pytest
from kastor.exceptions import PendingCallsLimitExceeded, TaskCancelledError, TaskError
from support import DEADLINE_S

pytestmark = pytest.mark.usefixtures("embedded_cluster")


@kastor.remote
class Gauge:
    """Tracks how many calls run at once."""

    def __init__(self, parties: int = 1):
        self.lock = threading.Lock()
        self.active = self.peak = 0
        self.barrier = threading.Barrier(parties, timeout=DEADLINE_S)

    def busy(self, seconds: float) -> int:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(seconds)
        with self.lock:
            self.active -= 1
        return threading.get_ident()

    def meet(self) -> int:
        return self.barrier.wait()

    def get_peak(self) -> int:
        return self.peak


@kastor.remote
class AsyncGauge:
    def __init__(self):
        self.active = self.peak = 0
        self.opened = asyncio.Event()

    async def wait_open(self) -> str:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await self.opened.wait()
        self.active -= 1
        return "through"

    async def open_when(self, waiting: int) -> int:
        while self.active < waiting:
            await asyncio.sleep(0.01)
        self.opened.set()
        return self.active

    async def busy(self, seconds: float) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(seconds)
        self.active -= 1

    async def sleep_forever(self) -> None:
        await asyncio.sleep(3600)

    async def get_peak(self) -> int:
        return self.peak

    def sync_method(self) -> str:
        return "sync methods of an async actor run on its event loop"


def test_default_actor_runs_one_call_at_a_time():
    g = Gauge.remote()
    kastor.get([g.busy.remote(0.02) for _ in range(10)])
    assert kastor.get(g.get_peak.remote()) == 1


def test_default_actor_serialises_calls_from_several_callers():
    g = Gauge.remote()

    @kastor.remote
    def hammer(gauge):
        return kastor.get([gauge.busy.remote(0.01) for _ in range(5)])

    kastor.get([hammer.remote(g) for _ in range(3)])
    assert kastor.get(g.get_peak.remote()) == 1


def test_threaded_actor_overlaps_up_to_max_concurrency():
    g = Gauge.options(max_concurrency=4).remote(4)
    arrivals = kastor.get([g.meet.remote() for _ in range(4)], timeout=DEADLINE_S)
    assert sorted(arrivals) == [0, 1, 2, 3], "four calls were inside the barrier at once"


def test_threaded_actor_never_exceeds_max_concurrency():
    g = Gauge.options(max_concurrency=2).remote()
    threads = kastor.get([g.busy.remote(0.05) for _ in range(8)])
    assert kastor.get(g.get_peak.remote()) == 2
    assert len(set(threads)) == 2


def test_async_actor_runs_a_thousand_calls_concurrently():
    g = AsyncGauge.remote()
    refs = [g.wait_open.remote() for _ in range(999)]
    assert kastor.get(g.open_when.remote(999), timeout=DEADLINE_S) == 999, "the 1000th slot opens the gate"
    assert kastor.get(refs, timeout=DEADLINE_S) == ["through"] * 999


def test_async_actor_respects_max_concurrency():
    g = AsyncGauge.options(max_concurrency=3).remote()
    kastor.get([g.busy.remote(0.02) for _ in range(12)])
    assert kastor.get(g.get_peak.remote()) == 3


def test_async_actor_sync_method_still_works():
    g = AsyncGauge.remote()
    assert "event loop" in kastor.get(g.sync_method.remote())


def test_cancel_an_async_actor_call():
    g = AsyncGauge.remote()
    ref = g.sleep_forever.remote()
    assert kastor.wait([ref], timeout=0.2)[0] == [], "the call is still running"
    kastor.cancel(ref)
    with pytest.raises(TaskCancelledError):
        kastor.get(ref, timeout=DEADLINE_S)
    assert kastor.get(g.get_peak.remote(), timeout=DEADLINE_S) == 0, "the actor keeps serving"


def test_actor_calls_from_threads_in_the_driver():
    g = Gauge.options(max_concurrency=8).remote()
    results: list[int] = []

    def caller():
        results.extend(kastor.get([g.busy.remote(0.001) for _ in range(25)]))

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
    assert len(results) == 100


def test_application_error_in_a_threaded_actor():
    @kastor.remote(max_concurrency=4)
    class Fragile:
        def boom(self):
            raise KeyError("missing")

        def ok(self):
            return "still serving"

    f = Fragile.remote()
    with pytest.raises(TaskError) as info:
        kastor.get(f.boom.remote())
    assert isinstance(info.value, KeyError)
    assert kastor.get(f.ok.remote()) == "still serving"


# ---- concurrency groups ----


@kastor.remote(concurrency_groups={"io": 2})
class ThreadedGroups:
    """Its "io" group has two threads of its own; other methods run on the default (main) thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = self.peak = 0
        self.release = threading.Event()

    @kastor.method(concurrency_group="io")
    def io(self) -> str:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        self.release.wait(DEADLINE_S)
        with self.lock:
            self.active -= 1
        return "io done"

    def waiting(self) -> int:
        return self.active

    def open(self) -> int:
        self.release.set()
        return self.peak


@kastor.remote(concurrency_groups={"io": 2})
class AsyncGroups:
    def __init__(self):
        self.active = self.peak = 0
        self.release = asyncio.Event()

    @kastor.method(concurrency_group="io")
    async def io(self) -> str:
        self.io_loop = asyncio.get_running_loop()  # the io group's own loop (Ray's semantics)
        self.active += 1
        self.peak = max(self.peak, self.active)
        await self.release.wait()
        self.active -= 1
        return "io done"

    async def waiting(self) -> int:
        return self.active

    async def open(self) -> int:
        self.io_loop.call_soon_threadsafe(self.release.set)  # the event belongs to the io group's loop
        return self.peak


@pytest.mark.parametrize("actor_class", [ThreadedGroups, AsyncGroups], ids=["threaded", "async"])
def test_a_concurrency_group_has_its_own_limit_and_does_not_block_the_rest(actor_class):
    actor = actor_class.remote()
    io_calls = [actor.io.remote() for _ in range(5)]
    deadline = time.monotonic() + DEADLINE_S
    while kastor.get(actor.waiting.remote(), timeout=DEADLINE_S) < 2:  # default group: answered meanwhile
        assert time.monotonic() < deadline, "two io calls never ran at once"
    assert kastor.get(actor.waiting.remote(), timeout=DEADLINE_S) == 2, "the io group admits two, no more"
    assert kastor.get(actor.open.remote(), timeout=DEADLINE_S) == 2
    assert kastor.get(io_calls, timeout=DEADLINE_S) == ["io done"] * 5


def test_a_call_can_pick_its_group_and_an_unknown_group_is_named():
    actor = ThreadedGroups.remote()
    # waiting() picked into the io group runs there; the default thread stays free meanwhile
    assert kastor.get(actor.waiting.options(concurrency_group="io").remote(), timeout=DEADLINE_S) == 0
    with pytest.raises(ValueError, match="'nope'.*io"):
        kastor.get(actor.waiting.options(concurrency_group="nope").remote(), timeout=DEADLINE_S)
    assert kastor.get(actor.waiting.remote(), timeout=DEADLINE_S) == 0, "the actor keeps serving"


def test_bad_concurrency_groups_are_named():
    with pytest.raises(ValueError, match="concurrency_groups\\['io'\\]"):
        ThreadedGroups.options(concurrency_groups={"io": 0})
    with pytest.raises(TypeError, match="concurrency_groups"):
        ThreadedGroups.options(concurrency_groups=["io"])


# ---- max_pending_calls ----


def test_max_pending_calls_refuses_more_until_results_come_back():
    gauge = AsyncGauge.options(name="pending-limit", max_pending_calls=2).remote()
    waiting = [gauge.wait_open.remote(), gauge.wait_open.remote()]
    with pytest.raises(PendingCallsLimitExceeded, match="max_pending_calls"):
        gauge.wait_open.remote()
    other = kastor.get_actor("pending-limit")  # Ray counts per handle: this one has its own
    assert kastor.get(other.open_when.remote(2), timeout=DEADLINE_S) == 2
    assert kastor.get(waiting, timeout=DEADLINE_S) == ["through", "through"]
    assert kastor.get(gauge.wait_open.remote(), timeout=DEADLINE_S) == "through", "answered calls free their slots"
    kastor.kill(gauge)
    with pytest.raises(ValueError, match="max_pending_calls"):
        AsyncGauge.options(max_pending_calls=0)
