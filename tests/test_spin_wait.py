"""The short spin a lane's two ends make before they sleep (runtime/spin_wait.py).

What is checked is the policy and the spin's bounds, with a fake clock where time matters (no
test here waits for time): a spin returns what is already there, stops at its window or once
the CPU is wanted, and a lane end stops spinning while its waits last longer than the window.
"""

from __future__ import annotations

import select
import socket

import pytest
from kastor.runtime import spin_wait
from kastor.runtime.spin_wait import MISSES_BEFORE_BACKOFF, PROBE_EVERY, SpinPolicy


def recv(sock: socket.socket, window_s: float) -> bytes | None:
    """A spin on a lane caller's socket (FastLane._spin_for_result, without its policy)."""
    return spin_wait.first(lambda: spin_wait.recv_now(sock), window_s)


def events(epoll: select.epoll, window_s: float) -> list[tuple[int, int]]:
    """A spin on the actor's lanes (LaneHost.next_call, without its policy)."""
    return spin_wait.first(lambda: spin_wait.events_now(epoll), window_s) or []


def until(ready, window_s: float) -> bool:
    """A spin on a condition (RedisStore's save, without its policy)."""
    return spin_wait.first(lambda: True if ready() else None, window_s) is not None


class FakeClock:
    """perf_counter for spin_wait; each sched_yield advances it by `per_yield` seconds."""

    def __init__(self, per_yield: float) -> None:
        self.now = 100.0
        self.per_yield = per_yield
        self.yields = 0

    def perf_counter(self) -> float:
        return self.now

    def sched_yield(self) -> None:
        self.yields += 1
        self.now += self.per_yield


@pytest.fixture
def clock(monkeypatch):
    def install(per_yield: float) -> FakeClock:
        fake = FakeClock(per_yield)
        monkeypatch.setattr(spin_wait.time, "perf_counter", fake.perf_counter)
        monkeypatch.setattr(spin_wait.os, "sched_yield", fake.sched_yield)
        return fake
    return install


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_a_spin_returns_what_has_come_and_the_end_of_the_connection(pair):
    a, b = pair
    b.sendall(b"result")
    assert recv(a, 0.001) == b"result"
    b.close()
    assert recv(a, 0.001) == b""


def test_a_spin_over_an_idle_socket_ends_at_its_window_and_says_nothing_came(pair, clock):
    fake = clock(per_yield=1e-6)  # an idle CPU: a yield comes straight back
    assert recv(pair[0], 100e-6) is None
    assert 99 <= fake.yields <= 101, "the spin yielded once per microsecond of its window"


def test_a_spin_stops_once_its_yields_give_the_cpu_away(pair, clock):
    fake = clock(per_yield=50e-6)  # each yield ran something else for 50 µs: the CPU is wanted
    assert recv(pair[0], 1.0) is None
    assert fake.yields == spin_wait.CONTENDED_YIELDS


def test_the_actors_spin_returns_the_events_that_came(clock):
    fake = clock(per_yield=1e-6)
    poll = select.epoll()
    r, w = socket.socketpair()
    try:
        poll.register(r.fileno(), select.EPOLLIN)
        assert events(poll, 50e-6) == []
        w.sendall(b"call")
        assert events(poll, 50e-6) == [(r.fileno(), select.EPOLLIN)]
        assert fake.yields <= 51
    finally:
        poll.close()
        r.close()
        w.close()


def test_a_lane_end_stops_spinning_while_its_waits_outlast_the_window_and_probes_now_and_then():
    policy = SpinPolicy(200e-6)
    assert policy.should_spin()
    for _ in range(MISSES_BEFORE_BACKOFF):
        policy.record(hit=False)
    decisions = [policy.should_spin() for _ in range(3 * PROBE_EVERY)]
    assert decisions.count(True) == 3, "stopped: one wait in PROBE_EVERY spins, to notice short waits again"
    assert decisions[PROBE_EVERY - 1] and decisions[2 * PROBE_EVERY - 1]
    policy.record(hit=True)  # a probe found its result within the window: spin again
    assert all(policy.should_spin() for _ in range(5))
    assert (policy.spins, policy.hits) == (MISSES_BEFORE_BACKOFF + 1, 1)


def test_spinning_is_off_with_a_window_of_zero(monkeypatch):
    monkeypatch.setenv("KASTOR_SPIN_US", "0")
    assert not SpinPolicy().should_spin()
    monkeypatch.setenv("KASTOR_SPIN_US", "150")
    assert SpinPolicy().window_s == pytest.approx(150e-6)


def test_a_spin_on_a_condition_returns_once_it_holds_and_gives_up_at_its_window(clock):
    """What the durable-state save spins on (RedisStore: the reply readable)."""
    fake = clock(per_yield=1e-6)
    answers = iter([False, False, True])
    assert until(lambda: next(answers), 100e-6)
    assert fake.yields == 2
    assert not until(lambda: False, 100e-6)


def test_a_policys_wait_records_what_its_spin_found(pair, clock):
    clock(per_yield=1e-6)
    a, b = pair
    policy = SpinPolicy(100e-6)
    assert policy.wait(lambda: spin_wait.recv_now(a)) is None  # nothing came: a miss, and spinning stops
    assert not policy.should_spin()
    b.sendall(b"x")
    assert SpinPolicy(100e-6).wait(lambda: spin_wait.recv_now(a), timeout=1.0) == b"x"
    assert (policy.spins, policy.hits) == (1, 0)
