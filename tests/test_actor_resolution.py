"""How a caller learns a new actor's address: the head's record from CreateActor's reply is its
first answer, then one GetActor long poll until the actor is ALIVE (issue 16: every call the
head serves per creation is CPU that bounds actor creations per second).

A real head (with its HTTP port, for the metrics), node agent and worker; the constructor is held
until the test lets it go, so the caller is still waiting when the head's counters are read.
"""

from __future__ import annotations

import os

import kastor
import pytest
import requests
from kastor.runtime import launcher
from support import DEADLINE_S, cli_head, wait_until

TOKEN = "resolution-test-" + os.urandom(8).hex()


@kastor.remote
class HeldInConstructor:
    def __init__(self, release: str):
        import time

        while not os.path.exists(release):  # the test creates the file: wait for that condition
            time.sleep(0.01)

    def ping(self) -> str:
        return "pong"


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    http_port = launcher.free_port()
    with cli_head(tmp_path_factory.mktemp("sessions"), TOKEN, "--client-port", "-1",
                  "--dashboard-port", str(http_port)) as head:
        kastor.init(head["head"], token=TOKEN)

        def read(name: str) -> float:
            text = requests.get(f"http://127.0.0.1:{http_port}/metrics", timeout=DEADLINE_S,
                                headers={"Authorization": f"Bearer {TOKEN}"}).text
            for line in text.splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
            raise AssertionError(f"{name} not in the metrics:\n{text}")

        yield read
        kastor.shutdown()


def test_a_new_actor_costs_its_caller_one_long_poll_and_no_getactor_before_it(metrics, tmp_path):
    get_actor = 'kastor_head_operator_requests_total{method="GetActor"}'
    before = metrics(get_actor)
    release = str(tmp_path / "release")
    actor = HeldInConstructor.remote(release)
    ref = actor.ping.remote()
    wait_until(lambda: metrics("kastor_head_actor_long_polls") >= 1, "the caller's long poll on the new actor")
    # CreateActor's reply said PENDING (with its version): the caller long-polls from there, and
    # did not first ask GetActor for what the reply already said.
    assert metrics(get_actor) - before == 1
    open(release, "w").close()
    assert kastor.get(ref, timeout=DEADLINE_S) == "pong"


@kastor.remote
class Pinged:
    def ping(self) -> int:
        return os.getpid()


def test_a_new_actor_gets_its_class_with_its_start_and_never_asks_getfunction(metrics):
    """The head sends the pickled class with StartActor (issue 16): a new worker's constructor
    costs no GetFunction round trip to the head, whichever worker (prestarted, or started for it
    and forked) it lands on."""
    fetches = "kastor_head_code_fetches_total"
    before = metrics(fetches)
    actors = [Pinged.remote() for _ in range(3)]
    pids = kastor.get([a.ping.remote() for a in actors], timeout=DEADLINE_S)
    assert len(set(pids)) == 3  # three worker processes, each of which unpickled the class
    assert metrics(fetches) - before == 0
    for a in actors:
        kastor.kill(a)


@kastor.remote
class OwnAddress:
    def address(self) -> str:
        from kastor.runtime import context

        return context.core.address


def test_calling_a_new_actor_opens_no_grpc_channel_to_its_worker(metrics):
    """The actor's record carries its worker's data port (from StartActor's reply), so a caller
    opens its framed stream there at once: no LeaseState call to ask the worker for the port,
    and so no gRPC channel from the caller to every actor it calls (issue 16)."""
    from kastor.runtime import context

    actors = [OwnAddress.remote() for _ in range(2)]
    addresses = kastor.get([a.address.remote() for a in actors], timeout=DEADLINE_S)
    assert not set(addresses) & set(context.core.peers.channel_addresses())
    for a in actors:
        kastor.kill(a)


@kastor.remote
def plain_task() -> int:
    return 7


def test_a_task_function_is_still_fetched_by_the_worker_that_runs_it(metrics):
    """Tasks keep GetFunction (a leased worker runs many functions): the counter counts it, so
    the test above could see a fetch if an actor's start made one."""
    fetches = "kastor_head_code_fetches_total"
    before = metrics(fetches)
    assert kastor.get(plain_task.remote(), timeout=DEADLINE_S) == 7
    assert metrics(fetches) - before >= 1


def test_killing_a_stateless_actor_asks_the_head_nothing_but_killactor(metrics):
    """KillActor's reply says whether the actor has durable state, so kastor.kill looks up no
    checkpoint (it asked GetActor for that after every kill: one more head call per actor in
    microbench's create, ping, kill). The actor is never called, so no watch of its caller's
    asks GetActor either."""
    get_actor = 'kastor_head_operator_requests_total{method="GetActor"}'
    alive, dead = 'kastor_actors{state="ALIVE"}', 'kastor_actors{state="DEAD"}'
    alive_before, dead_before = metrics(alive), metrics(dead)
    actor = Pinged.remote()
    wait_until(lambda: metrics(alive) > alive_before, "the new actor to be ALIVE")
    before = metrics(get_actor)
    kastor.kill(actor)
    wait_until(lambda: metrics(dead) > dead_before, "the killed actor to be DEAD")
    assert metrics(get_actor) - before == 0



def test_a_callers_watch_ends_when_the_head_says_its_actor_is_dead(metrics):
    """A caller watches each actor it called with a GetActor long poll (a restart moves it to
    the new instance). DEAD is final, so the watch ends there: it used to ask again and leave
    a long poll parked on the head for the dead actor until the poll's timeout (5 s), two
    GetActor calls per killed actor and caller. One call remains allowed: the caller's stream
    to the dead worker breaks, and the caller asks the head once whether it was restarted."""
    get_actor = 'kastor_head_operator_requests_total{method="GetActor"}'
    polls, dead = "kastor_head_actor_long_polls", 'kastor_actors{state="DEAD"}'
    actor = Pinged.remote()
    kastor.get(actor.ping.remote(), timeout=DEADLINE_S)
    wait_until(lambda: metrics(polls) >= 1, "the caller's watch on the actor")
    dead_before, before = metrics(dead), metrics(get_actor)
    kastor.kill(actor)
    wait_until(lambda: metrics(dead) > dead_before, "the killed actor to be DEAD")
    wait_until(lambda: metrics(polls) == 0, "no long poll left on the head for the dead actor")
    assert metrics(get_actor) - before <= 1
