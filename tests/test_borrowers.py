"""Reference counting across processes (borrowers, runtime/borrowing.py), on a real local cluster.

A ref nested inside a value (a list passed to a task, an actor's state, a result) is borrowed
by the process that unpickles it. As in Ray, the owner keeps the object while any borrower
holds it, and frees it (its store file too) once the last borrower lets go or dies. Every test
waits for the owner's table to say so, never for a fixed time.
"""

import os
import sys

import cloudpickle
import kastor
import pytest
from kastor.runtime import context
from support import wait_until

# The workers cannot import this test module; ship its functions and classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.usefixtures("embedded_cluster")

BIG = 300 * 1024  # over the inline limit: the value lives in a store file, which must go too


def _table():
    return context.core.objects


def _stored_path(ref) -> str:
    value = _table().store.peek(ref.binary())
    assert value is not None and value.location.path, "a large put() lives in the node's store"
    return value.location.path


def _gone(object_id: bytes, path: str) -> bool:
    return not _table().known(object_id) and not os.path.exists(path)


@kastor.remote
class Keeper:
    """Holds whatever it is given, and can hand it on or read it."""

    def __init__(self):
        self.held = None

    def keep(self, box):
        self.held = box
        return True

    def drop(self):
        self.held = None
        return True

    def read(self):
        return len(kastor.get(self.held[0]))

    def pass_to(self, other):
        return kastor.get(other.keep.remote(self.held))

    def make(self, n):
        self.made = kastor.put(b"m" * n)
        return [self.made]

    def forget_made(self):
        del self.made
        return True

    def owns(self, object_id):
        return context.core.objects.known(object_id)


def test_a_nested_ref_an_actor_keeps_outlives_the_drivers_ref_and_goes_when_the_actor_drops_it():
    keeper = Keeper.remote()
    ref = kastor.put(b"x" * BIG)
    object_id, path = ref.binary(), _stored_path(ref)
    assert kastor.get(keeper.keep.remote([ref]))
    assert _table().counts(object_id) == (1, 1), "the driver's own ref, and the actor's borrow"
    del ref
    wait_until(lambda: _table().counts(object_id)[0] == 0, "the driver's own ref to be released")
    assert _table().known(object_id) and os.path.exists(path), "the actor still borrows it"
    assert kastor.get(keeper.read.remote()) == BIG, "a borrower reads the value from its owner"
    assert kastor.get(keeper.drop.remote())
    wait_until(lambda: _gone(object_id, path), "the owner to free the object once its last borrower let go")


def test_a_dead_borrower_releases_what_it_held():
    keeper = Keeper.remote()
    ref = kastor.put(b"d" * BIG)
    object_id, path = ref.binary(), _stored_path(ref)
    assert kastor.get(keeper.keep.remote([ref]))
    del ref
    wait_until(lambda: _table().counts(object_id) == (0, 1), "only the actor's borrow to be left")
    kastor.kill(keeper)
    wait_until(lambda: _gone(object_id, path), "the owner to free the object once its borrower died")


def test_a_borrower_hands_the_ref_on_and_the_owner_keeps_it_until_the_last_one_lets_go():
    first, second = Keeper.remote(), Keeper.remote()
    ref = kastor.put(b"c" * BIG)
    object_id, path = ref.binary(), _stored_path(ref)
    assert kastor.get(first.keep.remote([ref]))
    del ref
    assert kastor.get(first.pass_to.remote(second)), "the first borrower passes it to a second"
    assert kastor.get(first.drop.remote())
    wait_until(lambda: _table().counts(object_id) == (0, 1), "the first borrower's release to reach the owner")
    assert kastor.get(second.read.remote()) == BIG, "the second borrower still reads it"
    assert kastor.get(second.drop.remote())
    wait_until(lambda: _gone(object_id, path), "the owner to free the object once the chain let go")


def test_a_ref_returned_inside_a_result_lives_while_the_result_does():
    maker = Keeper.remote()
    box_ref = maker.make.remote(BIG)
    box = kastor.get(box_ref)
    inner_id = box[0].binary()
    assert kastor.get(maker.forget_made.remote()), "the actor, which owns the inner object, drops its own ref"
    assert kastor.get(box[0]) == b"m" * BIG, "the caller holds the inner ref: its owner keeps the object"
    assert kastor.get(maker.owns.remote(inner_id))
    del box
    # The stored result still holds the inner ref: a later get of the outer ref must work.
    again = kastor.get(box_ref)
    assert kastor.get(again[0]) == b"m" * BIG
    del again, box_ref
    wait_until(lambda: not kastor.get(maker.owns.remote(inner_id)),
               "the inner object's owner to free it once the result holding it is gone")


def test_a_ref_inside_a_put_value_lives_while_that_value_does():
    inner = kastor.put(b"p" * BIG)
    object_id, path = inner.binary(), _stored_path(inner)
    outer = kastor.put([inner])
    del inner
    wait_until(lambda: _table().counts(object_id)[0] == 1, "only the outer value's hold to be left")
    keeper = Keeper.remote()
    assert kastor.get(keeper.keep.remote(kastor.get(outer)))
    del outer
    assert kastor.get(keeper.read.remote()) == BIG
    assert kastor.get(keeper.drop.remote())
    wait_until(lambda: _gone(object_id, path), "the object to go with the value that held it and its borrower")


def test_a_task_reads_a_borrowed_ref_after_the_caller_dropped_its_own():
    @kastor.remote
    def total(box):
        return sum(len(kastor.get(r)) for r in box)

    refs = [kastor.put(b"t" * BIG) for _ in range(3)]
    ids = [r.binary() for r in refs]
    pending = total.remote(refs)
    del refs  # the call itself keeps them until it is done, as in Ray
    assert kastor.get(pending) == 3 * BIG
    wait_until(lambda: not any(_table().known(i) for i in ids),
               "the objects to go once the call that borrowed them finished")


@kastor.remote(max_restarts=0)
class Holder:
    """Keeps what its constructor was given."""

    def __init__(self, box):
        self.held = box

    def read(self):
        return len(kastor.get(self.held[0]))

    def drop(self):
        self.held = None
        return True


def test_a_ref_nested_in_an_actors_constructor_arguments_is_borrowed_by_the_actor():
    ref = kastor.put(b"k" * BIG)
    object_id, path = ref.binary(), _stored_path(ref)
    holder = Holder.remote([ref])
    del ref
    assert kastor.get(holder.read.remote()) == BIG, "the constructor's nested ref outlives the driver's"
    wait_until(lambda: _table().counts(object_id) == (0, 1), "only the actor's borrow to be left")
    assert kastor.get(holder.drop.remote())
    wait_until(lambda: _gone(object_id, path), "the owner to free the object once the actor dropped it")
