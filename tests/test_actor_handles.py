"""Actor handles held inside other values keep their actor alive, in every process (runtime/actor_handles.py).

As in Ray, a non-detached actor is killed once no strong handle to it is left anywhere: a
handle passed to a task, returned by one, put() in the store or kept in another actor's state
counts as a holder until it is dropped there, or its holder dies. Weak handles (current_actor,
a get_actor() lookup outside the owner) keep nothing alive, and an actor holding a handle to
itself does not keep itself alive. Every test waits for the condition it asserts, on the real
processes: the owner's object table, or the actor's process exiting.
"""

import gc
import os
import sys

import cloudpickle
import kastor
import pytest
from kastor.actor import actor_id_of
from kastor.runtime import context
from kastor.runtime.ids import handle_token_id
from support import process_gone, wait_until

# The workers cannot import this test module; ship its functions and classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.usefixtures("embedded_cluster")


@kastor.remote
class Target:
    def pid(self):
        return os.getpid()


@kastor.remote
class Keeper:
    """Holds whatever it is given, and calls the actor it holds."""

    def __init__(self):
        self.held = None

    def keep(self, box):
        self.held = box
        return True

    def drop(self):
        self.held = None
        return True

    def call(self):
        return kastor.get(self.held[0].pid.remote())

    def keep_by_name(self, name):
        self.held = [kastor.get_actor(name)]
        return True


@kastor.remote
class SelfHolder:
    def __init__(self, own_in_init=False):
        self.me = kastor.get_runtime_context().current_actor if own_in_init else None

    def keep_self(self, box):
        self.me = box
        return True

    def holds_itself(self):
        return kastor.get_runtime_context().current_actor == self.me[0]

    def give_current_to(self, keeper):
        return kastor.get(keeper.keep.remote([kastor.get_runtime_context().current_actor]))

    def pid(self):
        return os.getpid()


@kastor.remote(max_concurrency=2)  # open() runs while wait() blocks
class Gate:
    def __init__(self):
        import threading
        self.event = threading.Event()

    def wait(self):
        self.event.wait()
        return True

    def open(self):
        self.event.set()
        return True


@kastor.remote
def pass_to(box, keeper):
    return kastor.get(keeper.keep.remote(box))


@kastor.remote
def call_after(box, gate):
    kastor.get(gate.wait.remote())
    return kastor.get(box[0].pid.remote())


@kastor.remote
def make_target():
    target = Target.remote()
    return [target], kastor.get(target.pid.remote())


def _counts(token):
    """(the driver's own refs, other processes' borrows) of an actor's handle token."""
    return context.core.objects.counts(token)


def test_a_handle_passed_through_a_task_into_an_actor_keeps_it_alive_until_the_actor_drops_it():
    target, keeper = Target.remote(), Keeper.remote()
    pid = kastor.get(target.pid.remote())
    token = handle_token_id(actor_id_of(target))
    assert kastor.get(pass_to.remote([target], keeper))
    wait_until(lambda: _counts(token) == (1, 1), "the driver's handle, and the keeper's borrow (the task let go)")
    del target
    gc.collect()
    wait_until(lambda: _counts(token) == (0, 1), "the driver's own handle to be released")
    assert kastor.get(keeper.call.remote()) == pid, "the keeper's handle still reaches the live actor"
    assert not process_gone(pid)
    assert kastor.get(keeper.drop.remote())
    wait_until(lambda: process_gone(pid), "the actor to exit once its last holder dropped it")


def test_a_task_holding_the_only_handle_keeps_the_actor_until_it_finishes():
    target, gate = Target.remote(), Gate.remote()
    pid = kastor.get(target.pid.remote())
    token = handle_token_id(actor_id_of(target))
    done = call_after.remote([target], gate)
    del target
    gc.collect()
    # The driver's handle is gone; the call keeps its arguments' handles until it is done (as Ray's
    # submitted-task references do), and the running task borrowed its own.
    wait_until(lambda: _counts(token) == (1, 1), "the call's pin and the task's borrow")
    assert not process_gone(pid)
    kastor.get(gate.open.remote())
    assert kastor.get(done) == pid, "the task used the actor after the driver had let go"
    wait_until(lambda: process_gone(pid), "the actor to exit once the task that held it finished")


def test_a_handle_in_a_put_value_keeps_the_actor_while_the_value_is_referenced():
    target = Target.remote()
    pid = kastor.get(target.pid.remote())
    ref = kastor.put([target])
    del target
    gc.collect()
    again = kastor.get(ref)[0]
    assert kastor.get(again.pid.remote()) == pid
    del again
    gc.collect()
    assert not process_gone(pid)
    del ref
    wait_until(lambda: process_gone(pid), "the actor to exit once the value holding its handle was freed")


def test_a_handle_returned_by_the_task_that_created_the_actor_keeps_it_while_the_driver_holds_it():
    box, pid = kastor.get(make_target.remote())
    assert kastor.get(box[0].pid.remote()) == pid, "its owner, the task's worker, did not kill it"
    del box
    gc.collect()
    wait_until(lambda: process_gone(pid), "the actor to exit once the driver dropped the returned handle")


def test_a_holder_that_dies_lets_go_of_the_handle():
    target, keeper = Target.remote(), Keeper.remote()
    pid = kastor.get(target.pid.remote())
    assert kastor.get(keeper.keep.remote([target]))
    del target
    gc.collect()
    assert kastor.get(keeper.call.remote()) == pid
    kastor.kill(keeper)
    wait_until(lambda: process_gone(pid), "the actor to exit once its only holder was killed")


def test_an_actor_holding_its_own_handle_does_not_keep_itself_alive():
    passed = SelfHolder.remote()
    pid = kastor.get(passed.pid.remote())
    assert kastor.get(passed.keep_self.remote([passed]))
    assert kastor.get(passed.holds_itself.remote())
    del passed
    gc.collect()
    wait_until(lambda: process_gone(pid), "an actor keeping a handle to itself to exit with its last outside handle")

    own = SelfHolder.remote(own_in_init=True)
    pid = kastor.get(own.pid.remote())
    del own
    gc.collect()
    wait_until(lambda: process_gone(pid), "an actor keeping its current_actor to exit with its last outside handle")


def test_weak_handles_keep_nothing_alive():
    actor, keeper = SelfHolder.remote(), Keeper.remote()
    pid = kastor.get(actor.pid.remote())
    assert kastor.get(actor.give_current_to.remote(keeper)), "current_actor is weak, wherever it is sent"
    del actor
    gc.collect()
    wait_until(lambda: process_gone(pid), "the actor to exit although the keeper holds its current_actor")

    named, keeper = Target.options(name="weakly-looked-up").remote(), Keeper.remote()
    pid = kastor.get(named.pid.remote())
    assert kastor.get(keeper.keep_by_name.remote("weakly-looked-up")), "a lookup outside the owner is weak"
    del named
    gc.collect()
    wait_until(lambda: process_gone(pid), "the named actor to exit although another process looked it up")


@kastor.remote
class Tidy:
    """Writes `marker` when it shuts down gracefully (Ray's __ray_shutdown__)."""

    def __init__(self, marker: str):
        self.marker = marker

    def say(self, text: str):
        print(text)
        return os.getpid()

    def __ray_shutdown__(self):
        with open(self.marker, "w") as f:
            f.write("shut down")


def test_an_actor_whose_last_handle_goes_ends_gracefully(tmp_path, capfd):
    """As in Ray: an actor no handle refers to any more finishes the calls made before and then
    exits gracefully, so its __ray_shutdown__ runs and what it printed still reaches the driver
    (a kill would lose both)."""
    marker = tmp_path / "shutdown"
    pid = kastor.get(Tidy.remote(str(marker)).say.remote("tidy says goodbye"))  # the handle is gone at once
    wait_until(marker.exists, "__ray_shutdown__ ran on the released actor", 60)
    wait_until(lambda: process_gone(pid), "the released actor's process gone", 60)
    seen: list[str] = []
    wait_until(lambda: seen.append(capfd.readouterr().out) or "tidy says goodbye" in "".join(seen),
               "its output on the driver", 30)
