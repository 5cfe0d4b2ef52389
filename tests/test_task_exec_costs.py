"""What a task sees of its worker, kept while the worker's per-task costs were cut (issue 16):
OMP_NUM_THREADS is written only when it changes between consecutive tasks, plain return values
skip cloudpickle and the borrow collector, and the task's context is built without copies of
empty fields. Each test pins a behaviour those shortcuts could break."""

import os

import kastor
import pytest
from kastor.runtime import omp

NO_USER_OMP = pytest.mark.skipif("OMP_NUM_THREADS" in os.environ,
                                 reason="the user's OMP_NUM_THREADS wins in every worker")


@NO_USER_OMP
def test_omp_follows_each_task_in_one_process(monkeypatch):
    """The worker's sequence, in this process: consecutive tasks with the same, then different
    CPUs, a task that changed the variable itself, and a runtime_env that names it."""
    monkeypatch.setenv(omp.NAME, "unset")  # records its absence: removed again when the test ends
    monkeypatch.delenv(omp.NAME)
    seen = []
    for num_cpus, user_env, tamper in ((1, None, None), (1, None, None), (2, None, None), (0.5, None, "9"),
                                       (0.5, None, None), (3, {omp.NAME: "7"}, None), (3, None, None)):
        omp.apply_for_task(num_cpus, user_env)
        if user_env is None:
            seen.append(os.environ[omp.NAME])
        if tamper is not None:
            os.environ[omp.NAME] = tamper  # the task's own code
    assert seen == ["1", "1", "2", "1", "1", "3"]


def _define():
    @kastor.remote
    def omp_of_task(set_to=None):
        value = os.environ.get("OMP_NUM_THREADS")
        if set_to is not None:
            os.environ["OMP_NUM_THREADS"] = set_to
        return os.getpid(), value

    @kastor.remote
    def whoami():
        ctx = kastor.get_runtime_context()
        return ctx.get_task_id(), ctx.get_task_name(), ctx.get_actor_id(), ctx.get_runtime_env_string()

    @kastor.remote
    def echo(value):
        return value

    return omp_of_task, whoami, echo


omp_of_task, whoami, echo = _define()


@NO_USER_OMP
def test_omp_right_for_consecutive_tasks_on_reused_workers(embedded_cluster):
    mine = {"env_vars": {"OMP_NUM_THREADS": "7"}}
    plan = [({}, "1"), ({}, "1"), ({"num_cpus": 2}, "2"), ({}, "1"), ({"num_cpus": 2}, "2"),
            ({"num_cpus": 2}, "2"), ({"runtime_env": mine}, "7"), ({}, "1"), ({"num_cpus": 0.5}, "1")] * 3
    by_pid: dict[int, set] = {}
    for options, expected in plan:
        pid, value = kastor.get(omp_of_task.options(**options).remote())
        assert value == expected, (options, value)
        by_pid.setdefault(pid, set()).add(expected)
    # A task that sets the variable itself leaves no trace in the next one with the same CPUs.
    kastor.get(omp_of_task.remote("9"))
    assert [kastor.get(omp_of_task.remote())[1] for _ in range(5)] == ["1"] * 5
    assert kastor.get(omp_of_task.options(num_cpus=2).remote("5"))[1] == "2"
    assert kastor.get(omp_of_task.options(num_cpus=2).remote())[1] == "2"


def test_runtime_context_inside_each_task(embedded_cluster):
    refs = [whoami.remote() for _ in range(20)]
    named = whoami.options(name="custom", runtime_env={"env_vars": {"TASK_CONTEXT_PROBE": "1"}}).remote()
    for ref, (task_id, name, actor_id, env) in zip(refs, kastor.get(refs), strict=True):
        assert task_id == ref.task_id().hex()
        assert name.endswith("whoami")
        assert actor_id is None
        assert '"env_vars"' not in env
    task_id, name, actor_id, env = kastor.get(named)
    assert (task_id, name, actor_id) == (named.task_id().hex(), "custom", None)
    assert '"TASK_CONTEXT_PROBE": "1"' in env


class Point:
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return type(other) is Point and other.x == self.x


@pytest.mark.parametrize("value", [None, 0, 7, -1.5, True, "text", b"bytes", (1, "a"), [1, [2, 3]],
                                   {"k": (None, 2.0)}, list(range(200)), Point(3), [Point(1), 2],
                                   b"x" * (1 << 20)], ids=lambda v: type(v).__name__)
def test_plain_and_other_return_values_round_trip(embedded_cluster, value):
    got = kastor.get(echo.remote(value))
    assert got == value and type(got) is type(value)


def test_a_returned_ref_inside_a_plain_looking_list_is_still_borrowed(embedded_cluster):
    """A list holding an ObjectRef is not plain: the worker pins the ref until the owner holds it."""
    inner = kastor.put("payload")
    outer = echo.remote([inner, 1])
    del inner
    got = kastor.get(outer)
    assert kastor.get(got[0]) == "payload" and got[1] == 1


@pytest.mark.parametrize("value", [None, 0, 2**100, -1.5, 1j, True, "", "é\ud800", b"", (1, ("a", None)),
                                   [1, [2, 3]], {"k": (None, 2.0), 3: [b"x"]}, list(range(60))],
                         ids=lambda v: type(v).__name__)
def test_a_plain_frame_is_the_serialized_frame(value):
    """The worker packs a plain return with plain_frame: the same bytes as the general path."""
    from kastor.runtime import pickler, serialization
    assert pickler.is_plain(value)
    assert serialization.plain_frame(value) == serialization.serialize(value).to_bytes()
    assert serialization.loads(serialization.plain_frame(value)) == value
