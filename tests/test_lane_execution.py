"""A serial actor runs a lane's call on the thread that reads the lane (runtime/lane_host.py).

The worker's main thread reads the call from the caller's lane (fast_lane.py), runs the method
and writes the result on the same socket, with no hop through the core loop. What is checked:
the calls are answered there (the engine's lane counters, not a timing), and every rule of the
loop's path still holds: order between a lane caller and callers on the loop's path (which
must not wait behind an idle lane), cancellation, an actor killed under a lane call (with and
without max_task_retries), durable state checkpointed before the result, and the fallbacks
(threaded and async actors, KASTOR_LANE_EXECUTION=0) that keep lanes on the loop.
"""

from __future__ import annotations

import os
import threading
import time

import kastor
import pytest
from kastor.exceptions import ActorDiedError, TaskCancelledError
from kastor.state import Checkpoint, FileStore
from support import DEADLINE_S, SerialLog, kill_once_started, wait_until

pytestmark = pytest.mark.usefixtures("embedded_cluster")


def _engine():
    from kastor.runtime import context
    return context.core.engine


@kastor.remote
class Log(SerialLog):
    """A serial actor (the default): the kind whose main thread serves lanes."""

    def lanes(self):
        return _engine().lane_stats()

    def leave(self):
        from kastor.actor import exit_actor
        exit_actor()

    def blob(self, n: int) -> bytes:
        return b"x" * n

    def on_main_thread(self):
        return threading.current_thread() is threading.main_thread()

    def hold_until_queued(self, x):
        """Runs until a call of another caller waits in the main thread's queue."""
        while _engine().lane_stats()["queued"] < 1:
            time.sleep(0.005)
        self.seen.append(x)
        return x


@kastor.remote
def call_from_elsewhere(actor, x):
    """A caller in another process: its first call to the actor takes the loop's path."""
    return kastor.get(actor.add.remote(x), timeout=DEADLINE_S)


def fast_sent() -> int:
    from kastor.runtime import context
    return context.core.actors.fast_sent


def on_a_lane(actor) -> dict:
    """Warms the actor up until this driver's calls take its lane; the worker's lane stats."""
    kastor.get(actor.add.remote("warm"), timeout=DEADLINE_S)  # the first call opens the stream
    before = fast_sent()
    stats = kastor.get(actor.lanes.remote(), timeout=DEADLINE_S)
    assert fast_sent() == before + 1, "the driver's call did not take the lane"
    return stats


def test_lane_calls_are_read_run_and_answered_on_the_actors_main_thread():
    log = Log.remote()
    first = on_a_lane(log)
    assert first["adopted"] == 1 and first["open"] == 1, first
    before = fast_sent()
    for i in range(20):
        assert kastor.get(log.add.remote(i), timeout=DEADLINE_S) == i
    assert kastor.get(log.on_main_thread.remote(), timeout=DEADLINE_S)
    stats = kastor.get(log.lanes.remote(), timeout=DEADLINE_S)
    assert fast_sent() - before == 22
    # `lanes` runs before its own answer is counted: the 20 adds, on_main_thread and the first lanes
    assert stats["calls"] - first["calls"] == 22, (first, stats)
    assert stats["adopted"] == 1, "each call opened a lane of its own"
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == ["warm", *range(20)]


def test_both_ends_of_a_lane_spin_before_they_sleep():
    """The caller's wait for a result and the actor's wait for the next call poll their socket
    first (spin_wait.py). Whether a spin finds its data depends on the machine's load (a busy
    CPU ends it), so what is checked is that both ends spun and every answer is right."""
    from kastor.runtime import context
    log = Log.remote()
    first = on_a_lane(log)
    caller_before = context.core.actors.lane_spins()
    for i in range(20):
        assert kastor.get(log.add.remote(i)) == i  # no timeout: the usual sync get
    stats = kastor.get(log.lanes.remote(), timeout=DEADLINE_S)
    caller_spins, caller_hits = context.core.actors.lane_spins()
    assert caller_spins > caller_before[0], "the caller's get did not spin before it slept"
    assert stats["spins"] > first["spins"], "the actor's main thread did not spin for the next call"
    assert caller_hits <= caller_spins and stats["spin_hits"] <= stats["spins"]
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == ["warm", *range(20)]


def test_a_lane_carries_results_larger_than_one_socket_send():
    log = Log.remote()
    first = on_a_lane(log)
    for n in (1, 64 * 1024, 90 * 1024):  # inline results (a bigger one is stored, and fetched by ref)
        assert kastor.get(log.blob.remote(n), timeout=DEADLINE_S) == b"x" * n
    assert kastor.get(log.lanes.remote(), timeout=DEADLINE_S)["calls"] - first["calls"] == 4


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 16_381, 16_382, 300_000])
def test_a_lanes_hand_encoded_frame_is_the_protobuf_encoding(size):
    """The lane writes one TaskSpec (TaskResult) as an ExecuteRequest (ExecuteReply) without
    the wrapper message: the bytes must be protobuf's, around each varint length boundary."""
    from kastor.runtime.frames import frame
    from kastor.runtime.lane_host import one_item_frame
    from kastor.runtime.protocol import kastor_pb2 as pb
    spec = pb.TaskSpec(task_id=b"t" * 24, method="add", args=pb.Value(data=b""))
    spec.args.data = b"a" * max(0, size - len(spec.SerializeToString()))
    assert one_item_frame(spec.SerializeToString()) == frame(pb.ExecuteRequest(tasks=[spec]).SerializeToString())
    result = pb.TaskResult(task_id=b"t" * 24, returns=[pb.Value(data=b"r" * size)])
    assert one_item_frame(result.SerializeToString()) == frame(pb.ExecuteReply(results=[result]).SerializeToString())


class Custom:
    """Not a builtin value: pickled by the general pickler, not the C fast path for plain values."""

    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, Custom) and other.x == self.x


def test_plain_and_non_plain_returns_and_arguments_round_trip_on_a_lane():
    log = Log.remote()
    first = on_a_lane(log)
    values = [0, "s", b"b" * 200, 1.5, None, (1, [2, {"k": 3}]), Custom(7), [Custom(1), 2],
              b"y" * 70_000, {"big": "z" * 20_000}]
    for v in values:
        assert kastor.get(log.add.remote(v), timeout=DEADLINE_S) == v
    assert kastor.get(log.lanes.remote(), timeout=DEADLINE_S)["calls"] - first["calls"] == len(values) + 1


def test_a_lane_result_goes_once_the_borrows_its_arguments_made_are_acknowledged():
    """A ref nested in a lane call's arguments makes the actor a borrower: its result waits
    for the owner's acknowledgement (as the loop's `borrows.after_flush` does), so the object
    outlives the caller's own ref."""
    import gc
    log = Log.remote()
    first = on_a_lane(log)
    value = kastor.put("kept")
    before = fast_sent()
    assert kastor.get(log.add.remote([value]), timeout=DEADLINE_S) == [value]
    assert fast_sent() == before + 1, "the call with a nested ref did not take the lane"
    del value
    gc.collect()
    [kept] = kastor.get(log.items.remote(), timeout=DEADLINE_S)[1]
    assert kastor.get(kept, timeout=DEADLINE_S) == "kept"
    # (Whether the result had to wait depends on how fast the owner acknowledged: `flush_waits`
    # counts those that did; it is not asserted, as that race is the scheduler's.)
    assert kastor.get(log.lanes.remote(), timeout=DEADLINE_S)["calls"] - first["calls"] == 3  # lanes, add, items


def test_a_loop_path_caller_is_served_while_the_main_thread_waits_on_an_idle_lane():
    log = Log.remote()
    on_a_lane(log)  # the lane stays open and idle: the main thread waits on it
    assert kastor.get(call_from_elsewhere.remote(log, "other"), timeout=DEADLINE_S) == "other"
    assert kastor.get(log.add.remote("lane"), timeout=DEADLINE_S) == "lane"
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == ["warm", "other", "lane"]


def test_a_lane_caller_and_a_loop_path_caller_run_in_arrival_order():
    log = Log.remote()
    on_a_lane(log)
    before = fast_sent()
    held = log.hold_until_queued.remote("held")  # on the lane: runs until the other caller's call waits
    assert fast_sent() == before + 1
    other = call_from_elsewhere.remote(log, "other")
    assert kastor.get(held, timeout=DEADLINE_S) == "held"
    assert kastor.get(other, timeout=DEADLINE_S) == "other"
    assert kastor.get(log.add.remote("after"), timeout=DEADLINE_S) == "after"
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == ["warm", "held", "other", "after"]


@kastor.remote(num_cpus=0)
def calls_one_at_a_time(actor, caller: str, n: int) -> int:
    """Another process's sync calls: after its first, they take its own lane to the actor."""
    from kastor.runtime import context
    for i in range(n):
        assert kastor.get(actor.add.remote((caller, i)), timeout=DEADLINE_S) == (caller, i)
    return context.core.actors.fast_sent


def test_several_lanes_and_the_loop_path_keep_each_callers_order():
    log = Log.remote()
    on_a_lane(log)
    n = 60
    others = [calls_one_at_a_time.remote(log, name, n) for name in ("a", "b")]
    for i in range(n // 10):  # the driver's bursts, on the loop's path
        assert kastor.get([log.add.remote(("driver", 10 * i + k)) for k in range(10)], timeout=DEADLINE_S) == \
            [("driver", 10 * i + k) for k in range(10)]
    sent = kastor.get(others, timeout=DEADLINE_S)
    assert all(count >= n - 2 for count in sent), f"the other callers' calls did not take their lanes: {sent}"
    seen = kastor.get(log.items.remote(), timeout=DEADLINE_S)[1:]
    for caller in ("a", "b", "driver"):
        mine = [i for who, i in map(tuple, seen) if who == caller]
        assert mine == list(range(n)), f"{caller}'s calls ran out of order or not once each: {mine}"
    stats = kastor.get(log.lanes.remote(), timeout=DEADLINE_S)
    assert stats["adopted"] >= 3, stats


def test_a_lane_call_is_cancelled_on_the_main_thread(tmp_path):
    log = Log.remote()
    first = on_a_lane(log)
    gate = str(tmp_path / "gate")
    before = fast_sent()
    ref = log.hold.remote(gate, "never")
    assert fast_sent() == before + 1
    wait_until(lambda: os.path.exists(gate + ".started"), "the held call to start")
    kastor.cancel(ref)
    with pytest.raises(TaskCancelledError):
        kastor.get(ref, timeout=DEADLINE_S)
    assert kastor.get(log.add.remote("after"), timeout=DEADLINE_S) == "after"
    stats = kastor.get(log.lanes.remote(), timeout=DEADLINE_S)
    assert stats["calls"] - first["calls"] == 3, "the cancelled call was not answered on the lane"
    assert kastor.get(log.items.remote(), timeout=DEADLINE_S) == ["warm", "after"]


def test_an_actor_killed_under_a_lane_call_raises_actor_died(tmp_path):
    log = Log.options(max_restarts=0).remote()
    assert on_a_lane(log)["adopted"] == 1
    pid = kastor.get(log.pid.remote(), timeout=DEADLINE_S)
    gate = str(tmp_path / "gate")
    ref = log.hold.remote(gate, "never")
    killer = kill_once_started(gate, pid)
    with pytest.raises(ActorDiedError):
        kastor.get(ref, timeout=DEADLINE_S)
    killer.join(DEADLINE_S)


def test_a_lane_call_is_retried_on_the_restarted_actor(tmp_path):
    log = Log.options(max_restarts=1, max_task_retries=1).remote()
    assert on_a_lane(log)["adopted"] == 1
    pid = kastor.get(log.pid.remote(), timeout=DEADLINE_S)
    gate = str(tmp_path / "gate")
    ref = log.once.remote(gate)
    killer = kill_once_started(gate, pid)
    assert kastor.get(ref, timeout=DEADLINE_S) == "retried"
    killer.join(DEADLINE_S)
    assert kastor.get(log.pid.remote(), timeout=DEADLINE_S) != pid


def test_exit_actor_in_a_lane_call_ends_the_actor_without_a_restart():
    log = Log.options(max_restarts=1).remote()
    on_a_lane(log)
    before = fast_sent()
    with pytest.raises(ActorDiedError, match=r"exit_actor\(\)"):
        kastor.get(log.leave.remote(), timeout=DEADLINE_S)
    assert fast_sent() == before + 1, "exit_actor() was not called on a lane"
    with pytest.raises(ActorDiedError):
        kastor.get(log.add.remote("after"), timeout=DEADLINE_S)


def test_ray_terminate_on_a_lane_ends_the_actor_after_the_calls_before_it():
    log = Log.options(max_restarts=1).remote()
    on_a_lane(log)
    assert kastor.get(log.add.remote("before"), timeout=DEADLINE_S) == "before"
    before = fast_sent()
    terminate = log.__ray_terminate__.remote()
    assert fast_sent() == before + 1, "__ray_terminate__ was not sent on a lane"
    with pytest.raises(ActorDiedError):  # as on the loop's path: the call ends the actor it ran on
        kastor.get(terminate, timeout=DEADLINE_S)
    with pytest.raises(ActorDiedError):
        kastor.get(log.add.remote("after"), timeout=DEADLINE_S)


class Account:
    def __init__(self):
        self.balance = 0

    def deposit(self, amount: int) -> int:
        self.balance += amount
        return self.balance

    def lanes(self):
        return _engine().lane_stats()


def test_a_durable_actors_lane_result_is_sent_only_after_its_checkpoint(tmp_path):
    from kastor.runtime import checkpoint
    store = FileStore(tmp_path / "ckpt")
    acct = kastor.remote(state=Checkpoint(store=store))(Account).options(name="lane-acct").remote()
    assert kastor.get(acct.deposit.remote(1), timeout=DEADLINE_S) == 1
    key = f"{kastor.get_runtime_context().namespace}/lane-acct"
    first = kastor.get(acct.lanes.remote(), timeout=DEADLINE_S)
    for expected in range(2, 22):
        assert kastor.get(acct.deposit.remote(1), timeout=DEADLINE_S) == expected
        _, state = checkpoint.decode(store.load(key), key)
        assert kastor.cloudpickle.loads(state)["balance"] == expected, "a lane result went before its checkpoint"
    stats = kastor.get(acct.lanes.remote(), timeout=DEADLINE_S)
    assert stats["calls"] - first["calls"] == 21, "the deposits were not answered on the lane"
    kastor.kill(acct)


@kastor.remote(max_concurrency=2)
class Threaded:
    def lanes(self):
        return _engine().lane_stats()

    def addresses(self):
        from kastor.runtime import context
        host = context.core.address.rpartition(":")[0]
        return context.core.address, f"{host}:{context.core.data_port()}"


def _open_lane(actor) -> None:
    """Opens a lane to the actor's worker as a driver's would (its first frame carries the lane
    mark), whatever kind of actor it is, and closes it again."""
    from kastor.runtime import context
    from kastor.runtime.fast_lane import FastLane, LaneBudget
    address, data_address = kastor.get(actor.addresses.remote(), timeout=DEADLINE_S)
    lane = FastLane(context.core.token.encode(), 5.0, LaneBudget(1), lambda *a: None, lambda *a: None)
    assert lane.connect(address, data_address, 0, DEADLINE_S), "the worker did not accept the lane"
    lane.close()


def test_a_threaded_actors_lane_is_served_on_the_loop_and_a_serial_ones_on_its_main_thread():
    threaded = Threaded.remote()
    _open_lane(threaded)
    assert kastor.get(threaded.lanes.remote(), timeout=DEADLINE_S)["adopted"] == 0
    serial = Log.remote()
    before = on_a_lane(serial)["adopted"]  # the driver's own lane
    _open_lane(serial)
    wait_until(lambda: kastor.get(serial.lanes.remote(), timeout=DEADLINE_S)["adopted"] == before + 1,
               "the serial actor's main thread to take the lane over")


def test_bytes_sent_with_the_lanes_token_reach_the_main_thread():
    """A peer that writes past its token before the accept frame (ours never does) loses
    nothing: here the end-of-calls frame comes in the same write, and the lane is closed."""
    import socket

    from kastor.runtime import context
    from kastor.runtime.frames import frame
    from kastor.runtime.lane_host import LANE_MARK
    log = Log.remote()
    before = on_a_lane(log)["adopted"]
    _, data_address = kastor.get(log.addresses.remote(), timeout=DEADLINE_S)
    host, _, port = data_address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=DEADLINE_S) as sock:
        sock.sendall(frame(context.core.token.encode() + LANE_MARK) + frame(b""))
        received = b""
        while chunk := sock.recv(64):  # the accept frame, then the end of the stream
            received += chunk
    assert received == frame(b""), received
    stats = kastor.get(log.lanes.remote(), timeout=DEADLINE_S)
    assert stats["adopted"] == before + 1 and stats["open"] == 1, stats  # the driver's lane is the one open
