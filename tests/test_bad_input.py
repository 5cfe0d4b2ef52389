"""Mistakes a Ray program can make, on a real two-CPU local cluster.

Each mistake must fail where it is made, with the Ray-compatible error type and a message
that names the culprit (the argument, the option, the method), and must leave the cluster
serving: the last test runs normal work after all the others.
"""

import sys
import threading

import cloudpickle
import kastor
import pytest
from kastor import exceptions

# The workers cannot import this test module; ship its functions and classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

DEADLINE_S = 60


pytestmark = pytest.mark.usefixtures("embedded_cluster")


@kastor.remote
def echo(*args, **kwargs):
    return args, kwargs


@kastor.remote
def square(x):
    return x * x


@kastor.remote
def return_lock():
    return threading.Lock()


@kastor.remote
def wrong_count():
    return 1, 2, 3


@kastor.remote
class Box:
    def __init__(self, value=None):
        self.value = value

    def get(self):
        return self.value

    def set(self, value):
        self.value = value
        return True


# ---- unpicklable values ----

def test_unpicklable_positional_argument_named_at_call_site():
    with pytest.raises(TypeError, match=r"argument 1") as info:
        echo.remote(1, threading.Lock())
    assert "lock" in str(info.value).lower()


def test_unpicklable_keyword_argument_named_at_call_site():
    with pytest.raises(TypeError, match=r"'guard'"):
        echo.remote(1, guard=threading.Lock())


def test_unpicklable_actor_arguments_named_at_call_site():
    box = Box.remote(0)
    with pytest.raises(TypeError, match=r"argument 0"):
        box.set.remote(threading.Lock())
    with pytest.raises(TypeError, match=r"argument 0"):
        Box.remote(threading.Lock())
    assert kastor.get(box.get.remote(), timeout=DEADLINE_S) == 0


def test_remote_function_capturing_an_unpicklable_value():
    lock = threading.Lock()

    @kastor.remote
    def uses_lock():
        with lock:
            return 1

    with pytest.raises(TypeError, match="uses_lock"):
        uses_lock.remote()


def test_unpicklable_return_value_fails_the_get_not_the_cluster():
    with pytest.raises(exceptions.TaskError) as info:
        kastor.get(return_lock.remote(), timeout=DEADLINE_S)
    assert "serializ" in str(info.value).lower()
    assert "return_lock" in str(info.value)
    assert kastor.get(square.remote(9), timeout=DEADLINE_S) == 81


def test_wrong_number_of_return_values():
    refs = wrong_count.options(num_returns=2).remote()
    for ref in refs:
        with pytest.raises(ValueError, match="num_returns"):
            kastor.get(ref, timeout=DEADLINE_S)


# ---- invalid options ----

BAD_TASK_OPTIONS = [
    ({"num_cpus": -1}, "num_cpus"),
    ({"num_gpus": "one"}, "num_gpus"),
    ({"num_returns": "x"}, "num_returns"),
    ({"num_returns": -1}, "num_returns"),
    ({"max_retries": -2}, "max_retries"),
    ({"max_retries": 1.5}, "max_retries"),
    ({"retry_exceptions": "yes"}, "retry_exceptions"),
    ({"resources": {"CPU": 1}}, "CPU"),
    ({"resources": {"custom": -1}}, "custom"),
    ({"not_an_option": 1}, "not_an_option"),
    ({"max_restarts": 1}, "max_restarts"),  # an actor option, not a task option
]


@pytest.mark.parametrize(("options", "name"), BAD_TASK_OPTIONS, ids=[n for _, n in BAD_TASK_OPTIONS])
def test_invalid_task_options(options, name):
    with pytest.raises((ValueError, TypeError), match=name):
        square.options(**options)

    with pytest.raises((ValueError, TypeError), match=name):
        @kastor.remote(**options)
        def f():
            return 1


BAD_ACTOR_OPTIONS = [
    ({"num_cpus": -1}, "num_cpus"),
    ({"max_restarts": -2}, "max_restarts"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"lifetime": "forever"}, "lifetime"),
    ({"resources": {"CPU": 1}}, "CPU"),
    ({"num_returns": 2}, "num_returns"),  # a task option, not an actor option
]


@pytest.mark.parametrize(("options", "name"), BAD_ACTOR_OPTIONS, ids=[n for _, n in BAD_ACTOR_OPTIONS])
def test_invalid_actor_options(options, name):
    with pytest.raises((ValueError, TypeError), match=name):
        Box.options(**options)


def test_remote_decorator_with_positional_options():
    with pytest.raises(TypeError):
        kastor.remote(1, 2)


# ---- calling things the wrong way ----

def test_calling_a_remote_function_directly():
    with pytest.raises(TypeError, match=r"square\.remote"):
        square(3)


def test_instantiating_an_actor_class_directly():
    with pytest.raises(TypeError, match=r"Box\.remote"):
        Box()


def test_calling_an_actor_method_directly():
    box = Box.remote(1)
    with pytest.raises(TypeError, match=r"\.remote"):
        box.get()
    assert kastor.get(box.get.remote(), timeout=DEADLINE_S) == 1


def test_unknown_actor_method_fails_at_call_site():
    box = Box.remote(1)
    with pytest.raises(AttributeError, match="no_such_method"):
        box.no_such_method.remote()
    assert kastor.get(box.get.remote(), timeout=DEADLINE_S) == 1


@pytest.mark.parametrize("value", [42, "ref", None, [1, 2]])
def test_get_on_a_non_ref(value):
    with pytest.raises(TypeError):
        kastor.get(value)


def test_get_on_a_list_mixing_refs_and_values():
    with pytest.raises(TypeError):
        kastor.get([kastor.put(1), 2])


def test_wait_rejects_bad_input():
    ref = kastor.put(1)
    with pytest.raises(ValueError):
        kastor.wait([ref, ref])
    with pytest.raises(TypeError):
        kastor.wait(ref)
    with pytest.raises(ValueError):
        kastor.wait([ref], num_returns=2)
    with pytest.raises(ValueError):
        kastor.wait([ref], num_returns=0)
    assert kastor.wait([ref], timeout=DEADLINE_S) == ([ref], [])


def test_negative_get_timeout():
    with pytest.raises(ValueError):
        kastor.get(kastor.put(1), timeout=-1)


def test_init_twice():
    with pytest.raises(RuntimeError):
        kastor.init()
    with pytest.raises(RuntimeError):
        kastor.init(num_cpus=2)
    assert kastor.is_initialized()
    kastor.init(ignore_reinit_error=True)  # allowed, and keeps the running cluster
    assert kastor.get(square.remote(2), timeout=DEADLINE_S) == 4


def test_cluster_still_serves_after_bad_input():
    refs = [square.remote(i) for i in range(10)]
    assert kastor.get(refs, timeout=DEADLINE_S) == [i * i for i in range(10)]
    box = Box.remote("ok")
    assert kastor.get(box.get.remote(), timeout=DEADLINE_S) == "ok"
    assert kastor.get(kastor.put({"still": "fine"}), timeout=DEADLINE_S) == {"still": "fine"}
