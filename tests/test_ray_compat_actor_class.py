"""Actor classes and handles as Ray has them (issue 13, group 2): what `dir()` shows (Ray's
test_actor_autocomplete), `__ray_call__` (test_actor_generic_call), `__ray_metadata__`,
`_remote(num_returns=...)` on a method (test_submit_api), and `bind` for lazy call graphs
(`kastor.dag`, Ray's `ray.dag`)."""

import os

import kastor
import pytest
from kastor.dag import InputNode
from support import DEADLINE_S

pytestmark = pytest.mark.usefixtures("embedded_cluster")


@kastor.remote
class Counter:
    step = 10

    def __init__(self, start: int = 0):
        self.value = start

    def add(self, n: int = 1) -> int:
        self.value += n
        return self.value

    def pair(self) -> tuple[int, int]:
        return self.value, -self.value

    def pid(self) -> int:
        return os.getpid()


@kastor.remote
def double(x: int) -> int:
    return 2 * x


@kastor.remote
def total(*xs: int) -> int:
    return sum(xs)


def test_dir_of_an_actor_class_and_a_handle_lists_what_ray_lists():
    """Ray's test_actor_autocomplete (the methods' own dir() is in test_actor_classes)."""
    assert {n for n in dir(Counter) if not n.startswith("_")} == {"add", "pair", "pid", "step", "bind", "options",
                                                                   "remote"}
    c = Counter.remote()
    assert set(dir(c)) == {"__init__", "__ray_call__", "__ray_ready__", "__ray_terminate__", "add", "pair", "pid"}


def test_ray_call_runs_a_function_on_the_actor_in_order_with_its_methods():
    c = Counter.remote(5)
    c.add.remote(2)
    assert kastor.get(c.__ray_call__.remote(lambda self, k: self.value * k + self.step, 3), timeout=DEADLINE_S) == 31
    with pytest.raises(kastor.exceptions.RayTaskError, match="must be callable"):
        kastor.get(c.__ray_call__.remote(42), timeout=DEADLINE_S)
    assert kastor.get(c.add.remote(), timeout=DEADLINE_S) == 8  # the actor keeps serving


def test_ray_metadata_gives_a_plain_local_subclass_and_the_class_name():
    meta = Counter.__ray_metadata__
    assert meta.class_name == "Counter"
    local = meta.modified_class(3)  # no cluster involved: the class's own code, in this process
    assert local.add(4) == 7 and isinstance(local, meta.modified_class.__mro__[1])
    assert meta.modified_class.__mro__[1].__name__ == "Counter"
    assert meta.method_num_returns["add"] == 1


def test_a_methods_low_level_remote_takes_num_returns():
    c = Counter.remote(4)
    first, second = c.pair._remote(args=[], kwargs={}, num_returns=2)
    assert kastor.get([first, second], timeout=DEADLINE_S) == [4, -4]
    assert kastor.get(c.add._remote(args=[3]), timeout=DEADLINE_S) == 7


def test_a_function_graph_runs_on_execute_with_its_input():
    with InputNode() as inp:
        dag = total.bind(double.bind(inp), double.bind(inp), 1)
    assert kastor.get(dag.execute(5), timeout=DEADLINE_S) == 21
    assert kastor.get(dag.execute(1), timeout=DEADLINE_S) == 5  # a graph runs again, with another input
    with InputNode() as inp:
        keyed = total.bind(inp[0], inp.extra, double.options(name="d").bind(inp[1]))
    assert kastor.get(keyed.execute(1, 2, extra=10), timeout=DEADLINE_S) == 15


def test_an_actor_node_is_one_actor_per_execution_shared_by_its_calls():
    actor = Counter.bind(100)
    dag = total.bind(actor.add.bind(1), actor.add.bind(1))
    # one actor served both adds (101 and 102); two actors would give 101 + 101
    assert kastor.get(dag.execute(), timeout=DEADLINE_S) == 203
    # a fresh actor for the next execution; the same one again would give 103 + 104
    assert kastor.get(dag.execute(), timeout=DEADLINE_S) == 203
    live = Counter.remote(7)
    call = live.add.bind(double.bind(InputNode()))
    assert kastor.get(call.execute(4), timeout=DEADLINE_S) == 15
    assert kastor.get(call.execute(1), timeout=DEADLINE_S) == 17  # a live handle's actor keeps its state


def test_bind_checks_the_call_signature_at_once():
    with pytest.raises(TypeError):
        double.bind(1, 2)
    with pytest.raises(TypeError):
        Counter.bind(1, 2, 3)
    c = Counter.remote()
    with pytest.raises(TypeError):
        c.add.bind(1, 2)
