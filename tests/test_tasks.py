"""Remote functions on a real two-CPU local cluster, checked against Ray 2.x semantics.

Covers submitting and getting tasks, fan-out, several return values, nested tasks (which
must not deadlock: a task blocked in `get` lends its CPU back), tasks that create actors,
how ObjectRef arguments are passed, error propagation, retries after worker crashes and
application errors, `get` timeouts, `wait`, `cancel` and the runtime context.

Attempts are counted in files under pytest's tmp_path (the workers share this machine's
file system), and "task has started" is signalled the same way, so no test sleeps to
synchronise.
"""

import os
import signal
import sys
import time

import cloudpickle
import kastor
import numpy as np
import pytest
from kastor import exceptions

# The workers cannot import this test module; ship its functions and classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

DEADLINE_S = 60  # generous bound for any get that should succeed


pytestmark = pytest.mark.usefixtures("embedded_cluster")


# ---- helpers (run inside workers too) ----

def _bump(path) -> int:
    """Appends one mark to the file and returns how many marks it holds: the attempt number."""
    with open(path, "a") as f:
        f.write("x")
    with open(path) as f:
        return len(f.read())


def _marks(path) -> int:
    try:
        with open(path) as f:
            return len(f.read())
    except FileNotFoundError:
        return 0


def _wait_for_file(path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path} to appear")
        time.sleep(0.02)  # polling with a deadline, not synchronising by sleeping


class InsufficientFunds(Exception):
    """A user exception whose constructor takes more than a message."""

    def __init__(self, account: str, amount: int):
        super().__init__(account, amount)
        self.account = account
        self.amount = amount


@kastor.remote
def square(x):
    return x * x


@kastor.remote
def add(a, b):
    return a + b


@kastor.remote
def type_name(x):
    return type(x).__name__


@kastor.remote
def divide(a, b):
    return a / b


@kastor.remote
def withdraw(account, amount):
    raise InsufficientFunds(account, amount)


@kastor.remote
def sleep_for(seconds):
    time.sleep(seconds)  # the task is slow on purpose
    return seconds


@kastor.remote
def spin(marker, seconds):
    """Signals it started, then loops in short sleeps (interruptible by cancel)."""
    with open(marker, "w"):
        pass
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
    return "finished"


@kastor.remote
def crash_until(path, crashes):
    """SIGKILLs its own worker process on the first `crashes` attempts."""
    attempt = _bump(path)
    if attempt <= crashes:
        os.kill(os.getpid(), signal.SIGKILL)
    return attempt


@kastor.remote
def crash_then_sum(path, crashes, arr):
    attempt = _bump(path)
    if attempt <= crashes:
        os.kill(os.getpid(), signal.SIGKILL)
    return attempt, int(arr.sum())


@kastor.remote
def flaky(path, failures, error_name):
    attempt = _bump(path)
    if attempt <= failures:
        raise {"ValueError": ValueError, "KeyError": KeyError}[error_name](f"attempt {attempt}")
    return attempt


@kastor.remote
def fan_in(n):
    """A parent task: submits children and blocks on them."""
    return sum(kastor.get([square.remote(i) for i in range(n)]))


@kastor.remote
def fan_in_with_wait(n):
    """A parent that blocks in `wait` rather than `get`."""
    refs = [square.remote(i) for i in range(n)]
    ready, not_ready = kastor.wait(refs, num_returns=n, timeout=60)
    return len(ready), len(not_ready)


@kastor.remote
def divide_in_child(a, b):
    return kastor.get(divide.remote(a, b))


@kastor.remote
def chain(depth):
    """Nests `depth` levels of blocked parents."""
    if depth == 0:
        return 0
    return 1 + kastor.get(chain.remote(depth - 1))


@kastor.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def incr(self):
        self.value += 1
        return self.value


@kastor.remote
def count_with_actor(start, n):
    counter = Counter.remote(start)
    refs = [counter.incr.remote() for _ in range(n)]
    return kastor.get(refs)


@kastor.remote
def inspect_nested(items, mapping):
    kinds = [isinstance(r, kastor.ObjectRef) for r in items] + [isinstance(mapping["k"], kastor.ObjectRef)]
    return kinds, kastor.get(items), kastor.get(mapping["k"])


@kastor.remote
def record_and_add(marker, a, b):
    with open(marker, "w"):
        pass
    return a + b


@kastor.remote
def whoami():
    ctx = kastor.get_runtime_context()
    return ctx.get_job_id(), ctx.get_task_id(), ctx.get_node_id()


def _cancel_and_confirm(ref) -> None:
    """Cleans up a slow task so it does not hold a CPU for the next test."""
    kastor.cancel(ref, force=True)
    with pytest.raises(exceptions.TaskCancelledError):
        kastor.get(ref, timeout=DEADLINE_S)


# ---- submit and get ----

def test_remote_and_get():
    ref = square.remote(7)
    assert isinstance(ref, kastor.ObjectRef)
    assert kastor.get(ref, timeout=DEADLINE_S) == 49
    assert kastor.get(add.remote("a", "b"), timeout=DEADLINE_S) == "ab"
    assert kastor.get(add.remote(a=2, b=3), timeout=DEADLINE_S) == 5


def test_fan_out_keeps_order():
    refs = [square.remote(i) for i in range(50)]
    assert kastor.get(refs, timeout=DEADLINE_S) == [i * i for i in range(50)]


def test_num_returns_option_and_decorator():
    @kastor.remote(num_returns=3)
    def three(x):
        return x, x + 1, x + 2

    def two(x):
        return x, -x

    two_remote = kastor.remote(two)
    a, b = two_remote.options(num_returns=2).remote(5)
    assert kastor.get([a, b], timeout=DEADLINE_S) == [5, -5]
    refs = three.remote(10)
    assert len(refs) == 3 and all(isinstance(r, kastor.ObjectRef) for r in refs)
    assert kastor.get(refs, timeout=DEADLINE_S) == [10, 11, 12]
    # Options do not stick to the function: a plain call still has one return value.
    assert kastor.get(two_remote.remote(1), timeout=DEADLINE_S) == (1, -1)


# ---- nested tasks and actors in tasks ----

def test_nested_tasks_do_not_deadlock_on_two_cpus():
    # Four parents on two CPUs, each blocked on its own children: only CPU lending lets
    # the children run.
    parents = [fan_in.remote(4) for _ in range(4)]
    assert kastor.get(parents, timeout=DEADLINE_S) == [0 + 1 + 4 + 9] * 4


def test_parents_blocked_in_wait_do_not_deadlock():
    parents = [fan_in_with_wait.remote(3) for _ in range(4)]
    assert kastor.get(parents, timeout=DEADLINE_S) == [(3, 0)] * 4


def test_deep_nesting_does_not_deadlock():
    assert kastor.get(chain.remote(4), timeout=DEADLINE_S) == 4


def test_task_creates_and_uses_an_actor():
    assert kastor.get(count_with_actor.remote(10, 3), timeout=DEADLINE_S) == [11, 12, 13]


# ---- ObjectRef arguments ----

def test_top_level_refs_are_resolved_before_the_call():
    put_ref = kastor.put(2)
    task_ref = square.remote(3)
    assert kastor.get(type_name.remote(put_ref), timeout=DEADLINE_S) == "int"
    assert kastor.get(type_name.remote(task_ref), timeout=DEADLINE_S) == "int"
    assert kastor.get(add.remote(put_ref, task_ref), timeout=DEADLINE_S) == 11
    assert kastor.get(add.remote(a=put_ref, b=1), timeout=DEADLINE_S) == 3
    # Chained tasks: each receives the previous task's value.
    ref = square.remote(2)
    for _ in range(3):
        ref = square.remote(ref)
    assert kastor.get(ref, timeout=DEADLINE_S) == 2 ** 16


def test_refs_nested_in_containers_arrive_as_refs():
    items = [kastor.put(1), square.remote(3)]
    kinds, values, mapped = kastor.get(inspect_nested.remote(items, {"k": kastor.put("v")}), timeout=DEADLINE_S)
    assert kinds == [True, True, True]
    assert values == [1, 9]
    assert mapped == "v"


def test_dependency_error_propagates_without_running_the_dependent(tmp_path):
    marker = tmp_path / "ran"
    ref = record_and_add.remote(str(marker), divide.remote(1, 0), 1)
    with pytest.raises(ZeroDivisionError) as info:
        kastor.get(ref, timeout=DEADLINE_S)
    assert isinstance(info.value, exceptions.TaskError)
    assert "divide" in str(info.value)
    assert not marker.exists(), "the dependent task must not run when an argument failed"


# ---- retries ----

def test_worker_crash_is_retried(tmp_path):
    path = tmp_path / "attempts"
    ref = crash_until.options(max_retries=2).remote(str(path), 2)
    assert kastor.get(ref, timeout=DEADLINE_S) == 3
    assert _marks(path) == 3


def test_worker_crash_retried_by_default(tmp_path):
    # Ray's default for tasks is max_retries=3.
    path = tmp_path / "attempts"
    assert kastor.get(crash_until.remote(str(path), 1), timeout=DEADLINE_S) == 2


def test_worker_crash_retry_rereads_a_large_argument(tmp_path):
    # The argument (over the inline limit) lives in the store; a retry must still find it.
    path = tmp_path / "attempts"
    arr = np.ones(4 * 1024 * 1024 // 8, dtype=np.int64)
    ref = crash_then_sum.options(max_retries=2).remote(str(path), 1, arr)
    assert kastor.get(ref, timeout=DEADLINE_S) == (2, arr.size)


def test_worker_crash_without_retries_raises(tmp_path):
    path = tmp_path / "attempts"
    ref = crash_until.options(max_retries=0).remote(str(path), 1)
    with pytest.raises(exceptions.WorkerCrashedError):
        kastor.get(ref, timeout=DEADLINE_S)
    assert _marks(path) == 1
    # The cluster replaces the dead worker.
    assert kastor.get(square.remote(4), timeout=DEADLINE_S) == 16


def test_worker_crash_runs_out_of_retries(tmp_path):
    path = tmp_path / "attempts"
    ref = crash_until.options(max_retries=1).remote(str(path), 5)
    with pytest.raises(exceptions.WorkerCrashedError):
        kastor.get(ref, timeout=DEADLINE_S)
    assert _marks(path) == 2


def test_application_errors_are_not_retried_by_default(tmp_path):
    path = tmp_path / "attempts"
    with pytest.raises(ValueError):
        kastor.get(flaky.options(max_retries=3).remote(str(path), 1, "ValueError"), timeout=DEADLINE_S)
    assert _marks(path) == 1


def test_retry_exceptions_true(tmp_path):
    path = tmp_path / "attempts"
    ref = flaky.options(max_retries=3, retry_exceptions=True).remote(str(path), 2, "ValueError")
    assert kastor.get(ref, timeout=DEADLINE_S) == 3


def test_retry_exceptions_true_runs_out_of_retries(tmp_path):
    path = tmp_path / "attempts"
    ref = flaky.options(max_retries=1, retry_exceptions=True).remote(str(path), 5, "ValueError")
    with pytest.raises(ValueError, match="attempt 2"):
        kastor.get(ref, timeout=DEADLINE_S)
    assert _marks(path) == 2


def test_retry_exceptions_list(tmp_path):
    retried = tmp_path / "retried"
    ref = flaky.options(max_retries=3, retry_exceptions=[ValueError]).remote(str(retried), 2, "ValueError")
    assert kastor.get(ref, timeout=DEADLINE_S) == 3

    not_listed = tmp_path / "not_listed"
    ref = flaky.options(max_retries=3, retry_exceptions=[ValueError]).remote(str(not_listed), 2, "KeyError")
    with pytest.raises(KeyError):
        kastor.get(ref, timeout=DEADLINE_S)
    assert _marks(not_listed) == 1


# ---- errors ----

def test_task_error_is_also_the_original_exception():
    with pytest.raises(ZeroDivisionError) as info:
        kastor.get(divide.remote(1, 0), timeout=DEADLINE_S)
    err = info.value
    assert isinstance(err, exceptions.TaskError)
    assert isinstance(err, exceptions.RayTaskError)
    assert isinstance(err.cause, ZeroDivisionError)
    text = str(err)
    assert "divide" in text
    assert "ZeroDivisionError" in text
    assert "Traceback" in err.traceback_str
    assert "return a / b" in err.traceback_str


def test_custom_exception_with_extra_constructor_args():
    with pytest.raises(InsufficientFunds) as info:
        kastor.get(withdraw.remote("acc-1", 250), timeout=DEADLINE_S)
    err = info.value
    assert isinstance(err, exceptions.TaskError)
    assert err.account == "acc-1" and err.amount == 250
    assert isinstance(err.cause, InsufficientFunds)
    assert "withdraw" in str(err)
    # `except TaskError` also catches it.
    try:
        kastor.get(withdraw.remote("acc-2", 1), timeout=DEADLINE_S)
    except exceptions.TaskError as e:
        assert e.amount == 1
    else:
        pytest.fail("no error raised")


def test_error_in_a_nested_task_reaches_the_driver():
    with pytest.raises(ZeroDivisionError) as info:
        kastor.get(divide_in_child.remote(1, 0), timeout=DEADLINE_S)
    assert isinstance(info.value, exceptions.TaskError)
    assert "divide" in str(info.value)


def test_get_timeout_on_a_slow_task():
    ref = sleep_for.remote(60)
    start = time.monotonic()
    with pytest.raises(exceptions.GetTimeoutError) as info:
        kastor.get(ref, timeout=0.5)
    assert isinstance(info.value, TimeoutError)
    assert 0.4 < time.monotonic() - start < 10
    # A ready value comes back even with timeout=0 once it is there.
    fast = square.remote(3)
    assert kastor.get(fast, timeout=DEADLINE_S) == 9
    assert kastor.get(fast, timeout=0) == 9
    _cancel_and_confirm(ref)


# ---- wait ----

def test_wait_num_returns_and_timeout():
    slow = sleep_for.remote(60)
    fast = square.remote(2)
    ready, not_ready = kastor.wait([slow, fast], num_returns=1, timeout=DEADLINE_S)
    assert ready == [fast] and not_ready == [slow]

    start = time.monotonic()
    ready, not_ready = kastor.wait([slow, fast], num_returns=2, timeout=0.5)
    assert 0.4 < time.monotonic() - start < 10
    assert ready == [fast] and not_ready == [slow]

    ready, not_ready = kastor.wait([slow], timeout=0)
    assert ready == [] and not_ready == [slow]
    _cancel_and_confirm(slow)


def test_wait_returns_refs_in_input_order():
    later = sleep_for.remote(0.5)
    sooner = square.remote(5)
    refs = [later, sooner] + [square.remote(i) for i in range(4)]
    ready, not_ready = kastor.wait(refs, num_returns=len(refs), timeout=DEADLINE_S)
    assert ready == refs and not_ready == []

    ready, not_ready = kastor.wait(refs, num_returns=3, timeout=DEADLINE_S)
    assert ready == refs[:3] and not_ready == refs[3:]


# ---- cancel ----

def test_cancel_queued_task(tmp_path):
    blockers = [spin.remote(str(tmp_path / f"blocker{i}"), 60) for i in range(2)]
    for i in range(2):
        _wait_for_file(tmp_path / f"blocker{i}")
    queued_marker = tmp_path / "queued"
    queued = spin.remote(str(queued_marker), 60)  # both CPUs are busy: this one waits
    kastor.cancel(queued)
    with pytest.raises(exceptions.TaskCancelledError):
        kastor.get(queued, timeout=10)
    for ref in blockers:
        kastor.cancel(ref)
    for ref in blockers:
        with pytest.raises(exceptions.TaskCancelledError):
            kastor.get(ref, timeout=DEADLINE_S)
    assert not queued_marker.exists(), "a task cancelled while queued must never run"
    assert kastor.get(square.remote(6), timeout=DEADLINE_S) == 36


def test_cancel_task_waiting_for_its_argument(tmp_path):
    marker = tmp_path / "started"
    slow = spin.remote(str(marker), 60)
    _wait_for_file(marker)
    dependent = square.remote(slow)
    kastor.cancel(dependent)
    with pytest.raises(exceptions.TaskCancelledError):
        kastor.get(dependent, timeout=10)  # cancelled at once, not when the argument is ready
    _cancel_and_confirm(slow)


def test_cancel_finished_task_keeps_its_value():
    ref = square.remote(11)
    assert kastor.get(ref, timeout=DEADLINE_S) == 121
    kastor.cancel(ref)
    assert kastor.get(ref, timeout=DEADLINE_S) == 121


@pytest.mark.parametrize("force", [False, True])
def test_cancel_running_task(tmp_path, force):
    marker = tmp_path / "started"
    ref = spin.remote(str(marker), 60)
    _wait_for_file(marker)
    start = time.monotonic()
    kastor.cancel(ref, force=force)
    with pytest.raises(exceptions.TaskCancelledError):
        kastor.get(ref, timeout=DEADLINE_S)
    assert time.monotonic() - start < 20
    assert kastor.get(square.remote(8), timeout=DEADLINE_S) == 64


# ---- runtime context ----

def test_runtime_context_inside_tasks():
    driver_ctx = kastor.get_runtime_context()
    assert driver_ctx.get_task_id() is None
    (job1, task1, node1), (job2, task2, node2) = kastor.get([whoami.remote(), whoami.remote()], timeout=DEADLINE_S)
    assert job1 == job2 == driver_ctx.get_job_id()
    assert task1 and task2 and task1 != task2
    node_ids = {n["NodeID"] for n in kastor.nodes()}
    assert node1 in node_ids and node2 in node_ids


# ---- max_calls ----


@kastor.remote(max_calls=2)
def worker_with_max_calls() -> tuple[str, int]:
    return kastor.get_runtime_context().get_worker_id(), os.getpid()


def test_max_calls_retires_a_worker_after_that_many_calls():
    """Workers are told apart by worker id: a busy machine (pid_max 32768) may give a new
    worker the pid of one that retired a moment ago."""
    from collections import Counter

    from support import process_gone, wait_until

    sequential = [kastor.get(worker_with_max_calls.remote(), timeout=60) for _ in range(6)]
    together = kastor.get([worker_with_max_calls.remote() for _ in range(8)], timeout=60)
    calls = Counter(worker for worker, _ in sequential + together)
    assert max(calls.values()) <= 2, f"a worker ran the function more than max_calls=2 times: {calls}"
    retired = {pid for worker, pid in sequential if calls[worker] == 2}
    assert retired, f"no worker reached max_calls in the sequential calls: {calls}"
    for pid in retired:
        wait_until(lambda pid=pid: process_gone(pid), f"worker {pid} to exit after its second call")


def test_a_max_calls_worker_leaves_when_its_lease_ends_with_calls_left():
    """The owner counts max_calls per lease; a worker handed back after one of its three calls
    (its lease idle past KASTOR_LEASE_LINGER_S) would start its next lease with three again, so
    it leaves instead (Ray's max_calls: at most that many calls per worker)."""
    from support import process_gone, wait_until

    _, pid = kastor.get(worker_with_max_calls.options(max_calls=3).remote(), timeout=60)
    wait_until(lambda: process_gone(pid), f"worker {pid} to exit when its lease ended, with 2 of 3 calls left")


def test_max_calls_is_checked():
    with pytest.raises(ValueError, match="max_calls"):
        worker_with_max_calls.options(max_calls=-1)
    from kastor.runtime.submission import max_calls as _max_calls
    assert (_max_calls({}), _max_calls({"num_gpus": 1}), _max_calls({"num_gpus": 1, "max_calls": 0})) == (0, 1, 0), \
        "as in Ray: no limit, but one call per worker for GPU tasks unless set"
