"""runtime_env env_vars, as in Ray: for a task, an actor, or a whole job; inherited by nested work.

(working_dir, py_modules and pip: test_runtime_env_packages.py.)
"""

import json
import os
import subprocess
import sys

import cloudpickle
import kastor
import pytest

cloudpickle.register_pickle_by_value(sys.modules[__name__])

DEADLINE_S = 60
VAR = "KASTOR_TEST_RUNTIME_VAR"
pytestmark = pytest.mark.usefixtures("embedded_cluster")


@kastor.remote
def read_var() -> str | None:
    return os.environ.get(VAR)


@kastor.remote
def runtime_env_string() -> str:
    return kastor.get_runtime_context().get_runtime_env_string()


@kastor.remote
def read_var_nested() -> tuple[str | None, str | None]:
    inherited = kastor.get(read_var.remote())
    overridden = kastor.get(read_var.options(runtime_env={"env_vars": {VAR: "child"}}).remote())
    return inherited, overridden


@kastor.remote
class Configured:
    def __init__(self) -> None:
        self.at_init = os.environ.get(VAR)

    def seen(self) -> tuple[str | None, str | None, str | None]:
        return self.at_init, os.environ.get(VAR), kastor.get(read_var.remote())


def with_var(value: str) -> dict:
    return {"env_vars": {VAR: value}}


def test_a_tasks_variables_are_set_for_it_alone():
    results = kastor.get([read_var.options(runtime_env=with_var(f"v{i}")).remote() if i % 2 else read_var.remote()
                          for i in range(8)], timeout=DEADLINE_S)
    assert results == [None, "v1", None, "v3", None, "v5", None, "v7"], "reused workers must not leak them"


def test_an_actor_keeps_its_variables_and_its_tasks_inherit_them():
    actor = Configured.options(runtime_env=with_var("actor")).remote()
    assert kastor.get(actor.seen.remote(), timeout=DEADLINE_S) == ("actor", "actor", "actor")


def test_nested_tasks_inherit_unless_they_override():
    outer = read_var_nested.options(runtime_env=with_var("parent")).remote()
    assert kastor.get(outer, timeout=DEADLINE_S) == ("parent", "child")


JOB_DRIVER = """
import os, sys, kastor
name = sys.argv[3]
kastor.init(sys.argv[1], token=sys.argv[2], runtime_env={"env_vars": {name: "job"}})

@kastor.remote
def read():
    return os.environ.get(name)

print(kastor.get(read.remote()), kastor.get(read.options(runtime_env={"env_vars": {name: "task"}}).remote()))
"""


def test_a_jobs_variables_reach_all_its_work():
    from kastor.api import _core
    core = _core()
    out = subprocess.run([sys.executable, "-c", JOB_DRIVER, core.head_address, core.token, VAR],
                         capture_output=True, text=True, timeout=DEADLINE_S)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["job", "task"]


def test_bad_runtime_env_is_named():
    with pytest.raises(TypeError, match="env_vars"):
        read_var.options(runtime_env={"env_vars": {VAR: 1}})
    with pytest.raises(TypeError, match="runtime_env"):
        read_var.options(runtime_env="env")
    with pytest.raises(ValueError, match="Unknown runtime_env field 'pipp'"):
        read_var.options(runtime_env={"pipp": ["requests"]})


def test_the_runtime_context_reports_the_runtime_env():
    got = kastor.get(runtime_env_string.options(runtime_env=with_var("seen")).remote(), timeout=DEADLINE_S)
    assert json.loads(got) == {"env_vars": {VAR: "seen"}}
    assert json.loads(kastor.get(runtime_env_string.remote(), timeout=DEADLINE_S)) == {}
