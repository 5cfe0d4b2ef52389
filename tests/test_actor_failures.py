"""Actor fault tolerance against real worker deaths (SIGKILL), with Ray 2.x semantics.

A killed worker restarts its actor (constructor re-run) up to `max_restarts` (-1: forever); a
call in flight is retried up to `max_task_retries`, otherwise it fails with
`ActorUnavailableError` (the actor is coming back) or `ActorDiedError` (it is not). Restart
counts and death causes are visible through `kastor.util.state.list_actors`.
"""

import os
import signal
from pathlib import Path

import kastor
import pytest
from kastor.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from kastor.util.state import list_actors
from support import DEADLINE_S, process_gone, wait_until

pytestmark = pytest.mark.usefixtures("embedded_cluster")


@kastor.remote
class Counter:
    def __init__(self):
        self.value = 0

    def incr(self) -> int:
        self.value += 1
        return self.value

    def pid(self) -> int:
        return os.getpid()

    def reconstructed(self) -> bool:
        return kastor.get_runtime_context().was_current_actor_reconstructed

    def slow_once(self, log: str) -> int:
        """Runs for a long time on its first attempt only, so a test can kill it mid-call."""
        with open(log, "a") as f:
            f.write("started\n")
        attempts = Path(log).read_text().count("started")
        if attempts == 1:
            import time

            time.sleep(120)
        return attempts

    def record(self, log: str, i: int) -> int:
        with open(log, "a") as f:
            f.write(f"{i}\n")
        return i


def row(actor) -> dict:
    [r] = list_actors(filters=[("actor_id", "=", actor._actor_id.hex())])
    return r


def sigkill(actor) -> int:
    pid = kastor.get(actor.pid.remote(), timeout=DEADLINE_S)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: process_gone(pid), f"worker {pid} to exit")
    return pid


def wait_alive_after_restarts(actor, restarts: int) -> None:
    wait_until(lambda: (r := row(actor))["state"] == "ALIVE" and r["restarts"] == restarts,
               f"actor ALIVE after {restarts} restart(s)")


def test_sigkill_without_restarts_kills_the_actor():
    a = Counter.remote()
    sigkill(a)
    with pytest.raises(ActorDiedError):
        kastor.get(a.incr.remote(), timeout=DEADLINE_S)
    r = row(a)
    assert r["state"] == "DEAD" and r["restarts"] == 0
    assert r["death_cause"], "a dead actor reports why it died"


def test_restart_reruns_constructor_until_max_restarts():
    a = Counter.options(max_restarts=2).remote()
    assert kastor.get([a.incr.remote() for _ in range(3)]) == [1, 2, 3]
    assert kastor.get(a.reconstructed.remote()) is False
    for restarts in (1, 2):
        old_pid = sigkill(a)
        wait_alive_after_restarts(a, restarts)
        assert "SIGKILL" in row(a)["death_cause"], "the last death's cause stays visible"
        assert kastor.get(a.incr.remote(), timeout=DEADLINE_S) == 1, "the constructor ran again"
        assert kastor.get(a.pid.remote()) != old_pid
        assert kastor.get(a.reconstructed.remote()) is True
    sigkill(a)
    with pytest.raises(ActorDiedError):
        kastor.get(a.incr.remote(), timeout=DEADLINE_S)
    assert row(a)["state"] == "DEAD"


def test_infinite_restarts():
    a = Counter.options(max_restarts=-1).remote()
    for restarts in (1, 2, 3):
        sigkill(a)
        wait_alive_after_restarts(a, restarts)
    assert kastor.get(a.incr.remote(), timeout=DEADLINE_S) == 1


def crash_mid_call(actor, log: str):
    """Starts slow_once on `actor`, SIGKILLs the worker while it runs; returns the call's ref."""
    pid = kastor.get(actor.pid.remote())
    ref = actor.slow_once.remote(log)
    wait_until(lambda: os.path.exists(log), "the call to start")
    os.kill(pid, signal.SIGKILL)
    return ref


def test_in_flight_call_is_retried_with_max_task_retries(tmp_path):
    ref = crash_mid_call(Counter.options(max_restarts=1, max_task_retries=1).remote(), str(tmp_path / "attempts"))
    assert kastor.get(ref, timeout=DEADLINE_S) == 2, "the call ran again on the restarted actor"


def test_method_options_max_task_retries_overrides_the_actors(tmp_path):
    """As in Ray, `method.options(max_task_retries=n)` sets the retries of those calls: more
    than the actor's default of 0 here, and none where the actor would retry."""
    retried = Counter.options(max_restarts=1).remote()
    pid = kastor.get(retried.pid.remote())
    log = str(tmp_path / "retried")
    ref = retried.slow_once.options(max_task_retries=1).remote(log)
    wait_until(lambda: os.path.exists(log), "the call to start")
    os.kill(pid, signal.SIGKILL)
    assert kastor.get(ref, timeout=DEADLINE_S) == 2, "the call ran again on the restarted actor"

    not_retried = Counter.options(max_restarts=1, max_task_retries=3).remote()
    pid = kastor.get(not_retried.pid.remote())
    log = str(tmp_path / "not_retried")
    ref = not_retried.slow_once.options(max_task_retries=0).remote(log)
    wait_until(lambda: os.path.exists(log), "the call to start")
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ActorUnavailableError):
        kastor.get(ref, timeout=DEADLINE_S)
    assert Path(log).read_text().count("started") == 1


def test_method_options_name_every_valid_option():
    a = Counter.remote()
    with pytest.raises(ValueError) as info:
        a.incr.options(max_retries=1)
    for option in ("concurrency_group", "max_task_retries", "name", "num_returns"):
        assert option in str(info.value)
    with pytest.raises(ValueError, match="max_task_retries"):
        a.incr.options(max_task_retries=-2)


def test_in_flight_call_without_retries_fails_but_actor_comes_back(tmp_path):
    log = str(tmp_path / "attempts")
    a = Counter.options(max_restarts=1).remote()
    ref = crash_mid_call(a, log)
    with pytest.raises(ActorUnavailableError) as info:
        kastor.get(ref, timeout=DEADLINE_S)
    assert isinstance(info.value, RayActorError)
    assert Path(log).read_text().count("started") == 1, "a call without retries runs at most once"
    wait_alive_after_restarts(a, 1)
    assert kastor.get(a.incr.remote(), timeout=DEADLINE_S) == 1


def test_in_flight_call_fails_with_actor_died_when_no_restart_is_left(tmp_path):
    ref = crash_mid_call(Counter.options(max_task_retries=3).remote(), str(tmp_path / "attempts"))
    with pytest.raises(ActorDiedError):
        kastor.get(ref, timeout=DEADLINE_S)


def test_calls_submitted_around_a_crash_all_run_in_order(tmp_path):
    log = tmp_path / "calls"
    a = Counter.options(max_restarts=1, max_task_retries=-1).remote()
    pid = kastor.get(a.pid.remote())
    os.kill(pid, signal.SIGKILL)
    refs = [a.record.remote(str(log), i) for i in range(50)]
    assert kastor.get(refs, timeout=DEADLINE_S) == list(range(50))
    ran = [int(x) for x in log.read_text().split()]
    assert sorted(set(ran)) == list(range(50)), "every acknowledged call ran"
    assert ran == sorted(ran), "calls from one caller keep their order across the restart"


def test_kill_with_no_restart_false_restarts_the_actor():
    a = Counter.options(max_restarts=1).remote()
    old_pid = kastor.get(a.pid.remote())
    kastor.get(a.incr.remote())
    kastor.kill(a, no_restart=False)
    wait_alive_after_restarts(a, 1)
    assert kastor.get(a.incr.remote(), timeout=DEADLINE_S) == 1
    assert kastor.get(a.pid.remote()) != old_pid


def test_kill_ignores_max_restarts():
    a = Counter.options(max_restarts=-1).remote()
    pid = kastor.get(a.pid.remote())
    kastor.kill(a)
    wait_until(lambda: process_gone(pid), "the killed actor's worker to exit")
    with pytest.raises(ActorDiedError):
        kastor.get(a.incr.remote(), timeout=DEADLINE_S)
    assert row(a)["restarts"] == 0


def test_named_actor_keeps_its_name_across_restarts():
    a = Counter.options(name="phoenix", max_restarts=1).remote()
    sigkill(a)
    wait_alive_after_restarts(a, 1)
    b = kastor.get_actor("phoenix")
    assert kastor.get(b.incr.remote(), timeout=DEADLINE_S) == 1
    kastor.kill(a)


def test_calls_whose_stream_never_opened_are_resent_without_a_retry():
    """A call is only written once the worker has accepted its stream. A worker that cannot
    accept it (frozen, then killed, as a process starved on a loaded machine may time out)
    has certainly not run the call, so it is re-sent to the restarted actor instead of
    failing with ActorUnavailableError, even with max_task_retries=0."""
    actor = Counter.options(max_restarts=1, max_task_retries=0).remote()
    actor_id = actor._kastor_actor_id.hex()

    def alive_pid():
        rows = [a for a in list_actors() if a["actor_id"] == actor_id and a["state"] == "ALIVE"]
        return rows[0]["pid"] if rows else None

    wait_until(lambda: alive_pid(), "the actor is alive (no call has opened a stream to it yet)")
    pid = alive_pid()
    os.kill(pid, signal.SIGSTOP)  # it can accept a TCP connection, but never the stream
    try:
        first = actor.incr.remote()
        with pytest.raises(kastor.exceptions.GetTimeoutError):
            kastor.get(first, timeout=1)
    finally:
        os.kill(pid, signal.SIGKILL)
    assert kastor.get(first, timeout=DEADLINE_S) == 1, "the call ran once, on the restarted actor"
    assert kastor.get(actor.pid.remote(), timeout=DEADLINE_S) != pid


@kastor.remote
class DiesInItsConstructor:
    """Its process exits in `__init__` until `tries` file has `survive_after` lines."""

    def __init__(self, tries: str, survive_after: int):
        with open(tries, "a") as f:
            f.write("try\n")
        if len(Path(tries).read_text().splitlines()) <= survive_after:
            os._exit(3)

    def ping(self) -> str:
        return "pong"


def test_a_worker_that_dies_in_the_constructor_is_an_actor_failure_not_a_retried_placement(tmp_path):
    """As in Ray: the process dying in `__init__` (os._exit, a crash, the OOM killer) fails the
    actor, which restarts within max_restarts and then dies. It used to stay PENDING, its
    constructor run again for ever."""
    tries = tmp_path / "tries"
    doomed = DiesInItsConstructor.remote(str(tries), 1_000)
    with pytest.raises(ActorDiedError, match="exited with code 3"):
        kastor.get(doomed.ping.remote(), timeout=DEADLINE_S)
    assert len(tries.read_text().splitlines()) == 1, "max_restarts=0: one attempt"

    tries = tmp_path / "tries-2"
    comes_back = DiesInItsConstructor.options(max_restarts=2).remote(str(tries), 2)
    assert kastor.get(comes_back.ping.remote(), timeout=DEADLINE_S) == "pong"
    assert row(comes_back)["restarts"] == 2 and len(tries.read_text().splitlines()) == 3

    tries = tmp_path / "tries-3"
    used_up = DiesInItsConstructor.options(max_restarts=1).remote(str(tries), 1_000)
    with pytest.raises(ActorDiedError, match="max_restarts=1 used up"):
        kastor.get(used_up.ping.remote(), timeout=DEADLINE_S)
    assert len(tries.read_text().splitlines()) == 2
