"""The fast path of a sync actor call (runtime/fast_lane.py): the calling thread sends the call
on the actor's lane and reads the result itself, with no hand-off to the core loop.

Every guarantee of the loop's path holds: one caller's calls run in the order it made them
whichever path each took, a get may time out or be interrupted and the result still comes, a
call is cancelled, an actor killed under a fast call raises the typed error or retries it, and
the result of a fast call reaches every other waiter (another thread, wait(), a dependent call).
"""

from __future__ import annotations

import os
import signal
import threading

import kastor
import pytest
from kastor.exceptions import ActorDiedError, GetTimeoutError, TaskCancelledError
from support import DEADLINE_S, SerialLog, kill_once_started, wait_until

pytestmark = pytest.mark.usefixtures("embedded_cluster")


@kastor.remote
class Log(SerialLog):
    """A serial actor (the default): the fast path's kind."""


def fast_sent() -> int:
    """Calls this driver sent on a lane so far."""
    from kastor.runtime import context
    return context.core.actors.fast_sent


def started(gate) -> None:
    wait_until(lambda: os.path.exists(str(gate) + ".started"), "the held call to start")


def test_a_sync_call_is_sent_and_read_on_the_calling_thread():
    log = Log.remote()
    kastor.get(log.add.remote(0), timeout=DEADLINE_S)  # the first call opens the actor's stream
    before = fast_sent()
    for i in range(1, 21):
        assert kastor.get(log.add.remote(i), timeout=DEADLINE_S) == i
    assert fast_sent() - before == 20, "sync calls went through the core loop, not the lane"
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == list(range(21))


def test_fast_and_loop_calls_of_one_caller_run_in_the_order_made(tmp_path):
    log = Log.remote()
    kastor.get(log.add.remote("warm"), timeout=DEADLINE_S)
    gate = str(tmp_path / "gate")
    before = fast_sent()
    first = log.hold.remote(gate, "fast")  # on the lane
    assert fast_sent() == before + 1
    started(gate)
    burst = [log.add.remote(i) for i in range(50)]  # on the loop's path: they wait for `first`
    from_thread: list = []
    t = threading.Thread(target=lambda: from_thread.append(kastor.get(log.add.remote("thread"), timeout=DEADLINE_S)))
    t.start()
    open(gate, "w").close()
    assert kastor.get(burst, timeout=DEADLINE_S) == list(range(50))
    assert kastor.get(first, timeout=DEADLINE_S) == "fast"
    t.join(DEADLINE_S)
    assert from_thread == ["thread"]
    # The other way round: loop calls unfinished, so a sync call goes after them, on the loop.
    second = [log.add.remote(i) for i in range(100, 150)]
    assert kastor.get(log.add.remote("sync"), timeout=DEADLINE_S) == "sync"
    kastor.get(second, timeout=DEADLINE_S)
    # After a burst, the lane is used again once calls come one at a time (SYNC_STREAK of them).
    kastor.get(log.add.remote("one at a time"), timeout=DEADLINE_S)
    before = fast_sent()
    assert kastor.get(log.add.remote("lane again"), timeout=DEADLINE_S) == "lane again"
    assert fast_sent() == before + 1, "the lane was not used again once calls came one at a time"
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == \
        ["warm", "fast", *range(50), "thread", *range(100, 150), "sync", "one at a time", "lane again"]


def test_a_fast_get_times_out_and_the_result_still_comes(tmp_path):
    log = Log.remote()
    kastor.get(log.add.remote("warm"), timeout=DEADLINE_S)
    gate = str(tmp_path / "gate")
    before = fast_sent()
    ref = log.hold.remote(gate, "slow")
    assert fast_sent() == before + 1
    with pytest.raises(GetTimeoutError):
        kastor.get(ref, timeout=0.2)
    after = log.add.remote("after")
    open(gate, "w").close()
    assert kastor.get(ref, timeout=DEADLINE_S) == "slow"
    assert kastor.get(after, timeout=DEADLINE_S) == "after"
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == ["warm", "slow", "after"]


class Interrupted(Exception):
    pass


def test_an_interrupted_fast_get_leaves_the_call_running(tmp_path):
    """What Ctrl-C does: a signal handler raises in the thread blocked reading the lane."""
    log = Log.remote()
    kastor.get(log.add.remote("warm"), timeout=DEADLINE_S)
    gate = str(tmp_path / "gate")
    ref = log.hold.remote(gate, "held")
    started(gate)

    def interrupt(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            kastor.get(ref, timeout=DEADLINE_S)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    open(gate, "w").close()
    assert kastor.get(ref, timeout=DEADLINE_S) == "held"
    assert kastor.get(log.add.remote("next"), timeout=DEADLINE_S) == "next"


def test_a_fast_call_is_cancelled(tmp_path):
    log = Log.remote()
    kastor.get(log.add.remote("warm"), timeout=DEADLINE_S)
    gate = str(tmp_path / "gate")
    before = fast_sent()
    ref = log.hold.remote(gate, "never")
    assert fast_sent() == before + 1
    started(gate)
    kastor.cancel(ref)
    with pytest.raises(TaskCancelledError):
        kastor.get(ref, timeout=DEADLINE_S)
    assert kastor.get(log.add.remote("after"), timeout=DEADLINE_S) == "after"
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == ["warm", "after"]


def test_a_fast_calls_result_reaches_other_waiters():
    log = Log.remote()
    kastor.get(log.add.remote("warm"), timeout=DEADLINE_S)
    ref = log.add.remote(1)  # on the lane; its sender never reads it itself
    seen: list = []
    t = threading.Thread(target=lambda: seen.append(kastor.get(ref, timeout=DEADLINE_S)))
    t.start()
    t.join(DEADLINE_S)
    assert seen == [1]
    assert kastor.wait([log.add.remote(2)], timeout=DEADLINE_S)[0], "wait() on a fast call's ref never saw it ready"
    assert kastor.get(log.add.remote(log.add.remote(3)), timeout=DEADLINE_S) == 3  # a fast call's ref as an argument
    assert kastor.get(ref, timeout=DEADLINE_S) == 1


def test_an_actor_killed_under_a_fast_call_raises_actor_died(tmp_path):
    log = Log.options(max_restarts=0).remote()
    pid = kastor.get(log.pid.remote(), timeout=DEADLINE_S)
    gate = str(tmp_path / "gate")
    before = fast_sent()
    ref = log.hold.remote(gate, "never")
    assert fast_sent() == before + 1
    killer = kill_once_started(gate, pid)
    with pytest.raises(ActorDiedError):
        kastor.get(ref, timeout=DEADLINE_S)
    killer.join(DEADLINE_S)
    with pytest.raises(ActorDiedError):
        kastor.get(log.add.remote("dead"), timeout=DEADLINE_S)


def test_a_fast_call_is_retried_on_the_restarted_actor(tmp_path):
    log = Log.options(max_restarts=1, max_task_retries=1).remote()
    pid = kastor.get(log.pid.remote(), timeout=DEADLINE_S)
    gate = str(tmp_path / "gate")
    before = fast_sent()
    ref = log.once.remote(gate)
    assert fast_sent() == before + 1
    killer = kill_once_started(gate, pid)
    assert kastor.get(ref, timeout=DEADLINE_S) == "retried"
    killer.join(DEADLINE_S)
    assert kastor.get(log.pid.remote(), timeout=DEADLINE_S) != pid


def test_a_call_made_inside_an_event_loop_goes_through_the_core_loop():
    """There its ref is awaited, not read by a get on the same thread: a lane would only cost
    a hand-over thread per call."""
    import asyncio

    log = Log.remote()
    kastor.get(log.add.remote("warm"), timeout=DEADLINE_S)
    before = fast_sent()

    async def calls():
        return [await log.add.remote(i) for i in range(5)]

    assert asyncio.run(calls()) == list(range(5))
    assert fast_sent() == before
    assert kastor.get(log.add.remote("sync"), timeout=DEADLINE_S) == "sync"
    assert fast_sent() == before + 1


def test_a_process_opens_no_more_lanes_than_its_budget():
    """Each lane is a socket beside the loop's stream: past the budget, calls take the loop."""
    from kastor.runtime import context
    from kastor.runtime.fast_lane import FastLane, LaneBudget
    token = context.core.token.encode()
    actors = [Log.remote(), Log.remote()]  # held: a released actor ends
    (a_addr, a_data), (b_addr, b_data) = kastor.get([a.addresses.remote() for a in actors], timeout=DEADLINE_S)
    budget = LaneBudget(1)

    def lane() -> FastLane:
        return FastLane(token, 5.0, budget, lambda *a: None, lambda *a: None)

    first, second = lane(), lane()
    assert first.connect(a_addr, a_data, 0, DEADLINE_S), "the first lane did not open"
    assert not second.connect(b_addr, b_data, 0, DEADLINE_S), "a lane opened past the budget"
    first.close()
    assert second.connect(b_addr, b_data, 0, DEADLINE_S), "the budget was not given back on close"
    second.close()


def test_a_get_of_several_refs_reads_its_own_lane_call_on_its_thread():
    """A fan-out to several actors (its first call on a lane, the others through the loop): the
    get reads the lane itself, with no reader thread."""
    from kastor.runtime import context
    actors = [Log.remote() for _ in range(3)]
    kastor.get([a.add.remote("warm") for a in actors], timeout=DEADLINE_S)
    kastor.get([a.add.remote("warm 2") for a in actors], timeout=DEADLINE_S)
    before, handovers = fast_sent(), context.core.actors.handovers()
    assert kastor.get([a.add.remote(i) for i, a in enumerate(actors)], timeout=DEADLINE_S) == [0, 1, 2]
    assert fast_sent() == before + 1  # one lane call per thread at a time: the others take the loop
    assert context.core.actors.handovers() == handovers, "a reader thread read what the get could read itself"


def test_bursts_stay_on_the_loop_and_calls_one_at_a_time_take_the_lane(tmp_path):
    """A burst goes out in one frame on the loop's stream; on a lane its first call would hold
    the rest for a round trip. Only calls made one at a time (SYNC_STREAK) take the lane. Each
    burst starts with a held call, so that its other calls find it in flight however slow
    this process is."""
    log = Log.remote()
    for i in range(3):
        kastor.get(log.add.remote(i), timeout=DEADLINE_S)
    before = fast_sent()
    for n, gate in enumerate((str(tmp_path / "first"), str(tmp_path / "second"))):
        held = log.hold.remote(gate, f"held {n}")  # the first finds the lane idle after calls one at a time
        burst = [log.add.remote(i) for i in range(20)]
        open(gate, "w").close()
        kastor.get([held, *burst], timeout=DEADLINE_S)
    assert fast_sent() == before + 1, "the first call of a burst that followed a burst took the lane"
    kastor.get(log.add.remote("one"), timeout=DEADLINE_S)
    assert fast_sent() == before + 1
    kastor.get(log.add.remote("two"), timeout=DEADLINE_S)
    assert fast_sent() == before + 2, "calls made one at a time again did not take the lane"
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == \
        [0, 1, 2, "held 0", *range(20), "held 1", *range(20), "one", "two"]


@kastor.remote
class Holder:
    """Keeps a box of refs it was given, and reads the ref in it later."""

    def keep(self, box):
        self.box = box
        return True

    def read(self):
        return kastor.get(self.box[0])

    def drop(self):
        self.box = None
        return True


def test_a_lane_calls_ref_outlives_its_get_for_a_borrower_and_goes_with_the_last_ref():
    """A lane call's plain result is stored by its sender's get without the general settling
    (pending.store_plain): the ref stays gettable, a borrower it is passed to after the get reads
    the value from this process, and the value goes once the last ref and borrow are gone."""
    from kastor.runtime import context
    log, holder = Log.remote(), Holder.remote()
    for i in range(3):
        kastor.get(log.add.remote(i), timeout=DEADLINE_S)
    before = fast_sent()
    ref = log.add.remote("kept")
    assert kastor.get(ref, timeout=DEADLINE_S) == "kept"
    assert fast_sent() == before + 1, "the call did not take the lane"
    assert kastor.get(ref, timeout=DEADLINE_S) == "kept", "a second get of the same ref"
    object_id, table = ref.binary(), context.core.objects
    assert kastor.get(holder.keep.remote([ref]), timeout=DEADLINE_S)
    del ref
    wait_until(lambda: table.counts(object_id) == (0, 1), "only the holder's borrow to be left")
    assert table.known(object_id), "the value went while a borrower holds its ref"
    assert kastor.get(holder.read.remote(), timeout=DEADLINE_S) == "kept", "the borrower reads it from its owner"
    assert kastor.get(holder.drop.remote(), timeout=DEADLINE_S)
    wait_until(lambda: not table.known(object_id), "the value to go once its last borrower let go")


def test_a_lane_calls_value_goes_when_its_ref_dies():
    """Nothing but its ref keeps a lane call's result: dropped with it, as a loop call's is."""
    from kastor.runtime import context
    log = Log.remote()
    for i in range(3):
        kastor.get(log.add.remote(i), timeout=DEADLINE_S)
    before = fast_sent()
    ref = log.add.remote("once")
    assert kastor.get(ref, timeout=DEADLINE_S) == "once" and fast_sent() == before + 1
    object_id, table = ref.binary(), context.core.objects
    assert table.store.contains(object_id)
    del ref
    kastor.get(log.add.remote("next"), timeout=DEADLINE_S)  # a new ref drains the released ones
    wait_until(lambda: not table.known(object_id), "the value to go with its only ref")

