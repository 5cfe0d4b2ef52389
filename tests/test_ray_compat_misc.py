"""Small promises Ray's own tests check (issue 13): cancelling a ref another process submitted,
named actors living as long as their creator's handles, list_named_actors' timeout, and the
ActorPool attributes Ray's test of `push` reads."""

import asyncio
import gc
import os
import signal

import kastor
import pytest
from kastor.util import ActorPool, list_named_actors
from support import DEADLINE_S, wait_until


def _define():
    """Local definitions travel to the workers by value: they cannot import this module."""

    @kastor.remote
    class Gate:
        """Calls to wait() block until open() is called."""

        def __init__(self):
            self.event = asyncio.Event()
            self.waiting = 0

        async def wait(self):
            self.waiting += 1
            await self.event.wait()

        async def waiters(self):
            return self.waiting

        async def open(self):
            self.event.set()

    @kastor.remote
    def blocked_on(refs):
        return kastor.get(refs[0])

    @kastor.remote
    def submit_blocked(refs):
        return [blocked_on.remote([refs[0]])]

    @kastor.remote
    def cancel_it(refs, force=False):
        kastor.cancel(refs[0], force=force)

    @kastor.remote
    class Named:
        def hello(self):
            return "hello"

    return Gate, blocked_on, submit_blocked, cancel_it, Named


Gate, blocked_on, submit_blocked, cancel_it, Named = _define()


@pytest.mark.parametrize("force", [False, True])
def test_cancel_a_task_that_another_task_submitted(embedded_cluster, force):
    gate = Gate.remote()
    never = gate.wait.remote()
    # The inner task's owner is the worker that ran submit_blocked, not this driver.
    inner = kastor.get(submit_blocked.remote([never]), timeout=DEADLINE_S)[0]
    with pytest.raises(kastor.exceptions.GetTimeoutError):
        kastor.get(inner, timeout=0.5)
    kastor.cancel(inner, force=force)
    expected = (kastor.exceptions.TaskCancelledError, kastor.exceptions.WorkerCrashedError) if force \
        else kastor.exceptions.TaskCancelledError
    with pytest.raises(expected):
        kastor.get(inner, timeout=DEADLINE_S)
    kastor.get(gate.open.remote(), timeout=DEADLINE_S)


def test_a_task_cancels_an_actor_call_the_driver_made(embedded_cluster):
    gate = Gate.remote()
    stuck = gate.wait.remote()
    wait_until(lambda: kastor.get(gate.waiters.remote()) == 1, "the actor call to be running")
    kastor.get(cancel_it.remote([stuck]), timeout=DEADLINE_S)
    with pytest.raises(kastor.exceptions.TaskCancelledError):
        kastor.get(stuck, timeout=DEADLINE_S)


def test_force_cancel_of_an_actor_call_from_another_process_is_refused(embedded_cluster):
    gate = Gate.remote()
    stuck = gate.wait.remote()
    with pytest.raises(ValueError, match="force=True is not supported for actor tasks"):
        kastor.get(cancel_it.remote([stuck], force=True), timeout=DEADLINE_S)
    kastor.get(gate.open.remote(), timeout=DEADLINE_S)
    assert kastor.get(stuck, timeout=DEADLINE_S) is None, "the refused cancel left the call alone"


def _named_gone(name: str) -> bool:
    try:
        kastor.get_actor(name)
    except ValueError:
        return True
    return False


def test_named_actor_goes_once_every_handle_is_gone(embedded_cluster):
    actor = Named.options(name="looked-up").remote()
    assert kastor.get(actor.hello.remote()) == "hello"
    for _ in range(10):
        actor = kastor.get_actor("looked-up")
        assert kastor.get(actor.hello.remote()) == "hello"
    gc.collect()
    assert not _named_gone("looked-up"), "a handle is still held"
    del actor
    gc.collect()  # a handle and its cached methods form a cycle: collect it, as test_actors does
    wait_until(lambda: _named_gone("looked-up"), "the named actor to go with its last handle")


def test_detached_named_actor_outlives_its_handles(embedded_cluster):
    actor = Named.options(name="kept", lifetime="detached").remote()
    assert kastor.get(actor.hello.remote()) == "hello"
    del actor
    gc.collect()
    again = kastor.get_actor("kept")
    assert kastor.get(again.hello.remote()) == "hello"
    kastor.kill(again)


def _head_pid() -> int:
    """The embedded cluster's head: a child process this test process started."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except OSError:
            continue
        if ppid == os.getpid() and b"kastor.runtime.head" in cmdline:
            return int(entry)
    pytest.fail("found no head process started by this test process")


def test_list_named_actors_times_out_when_the_head_does_not_answer(embedded_cluster, monkeypatch):
    actor = Named.options(name="listed").remote()
    assert "listed" in list_named_actors()
    monkeypatch.setenv("KASTOR_GCS_REQUEST_TIMEOUT_S", "1")
    head = _head_pid()
    os.kill(head, signal.SIGSTOP)
    try:
        with pytest.raises(kastor.exceptions.GetTimeoutError, match="KASTOR_GCS_REQUEST_TIMEOUT_S"):
            list_named_actors()
    finally:
        os.kill(head, signal.SIGCONT)
    assert "listed" in list_named_actors()
    del actor


def test_actor_pool_keeps_rays_bookkeeping_attributes(embedded_cluster):
    a1, a2, a3 = Gate.remote(), Gate.remote(), Gate.remote()
    pool = ActorPool([a1])
    pool.submit(lambda a, v: a.waiters.remote(), None)
    assert not pool.has_free()
    with pytest.raises(ValueError):
        pool.push(a1)
    pool.push(a2)
    assert pool.has_free()
    pool.submit(lambda a, v: a.waiters.remote(), None)
    pool.submit(lambda a, v: a.waiters.remote(), None)
    assert not pool.has_free()
    assert len(pool._pending_submits) == 1
    assert len(pool._future_to_actor) == 2 and len(pool._index_to_future) == 2
    pool.push(a3)
    assert not pool.has_free(), "a3 took the pending submit"
    assert len(pool._pending_submits) == 0 and pool._idle_actors == []
    assert sorted(pool.get_next() for _ in range(3)) == [0, 0, 0]
    assert len(pool._idle_actors) == 3 and pool._next_task_index == pool._next_return_index == 3

