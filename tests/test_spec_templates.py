"""Specs are copied from a template per call site (runtime/submission.py, `_from_template`):
whatever differs between two calls still reaches the worker as that call's own, never the
template's or a previous call's."""

from __future__ import annotations

import os

import kastor


@kastor.remote
class Echo:
    def f(self, *args: int) -> tuple:
        ctx = kastor.get_runtime_context()
        return args, ctx.get_task_id(), ctx.get_task_name()


@kastor.remote
def env(name: str = "KASTOR_TEMPLATE_PROBE") -> tuple:
    return os.environ.get(name), kastor.get_runtime_context().get_task_id()


@kastor.remote
def noargs() -> str | None:
    return os.environ.get("KASTOR_TEMPLATE_PROBE")


def test_calls_alike_but_for_one_field_each_get_their_own(embedded_cluster):
    a = Echo.remote()
    refs = [a.f.remote(), a.f.remote(1), a.f.remote(), a.f.options(name="named").remote(2), a.f.remote()]
    got = kastor.get(refs)
    assert [g[0] for g in got] == [(), (1,), (), (2,), ()]
    assert len({g[1] for g in got}) == 5  # every call its own task id
    assert [g[2] for g in got] == ["Echo.f", "Echo.f", "Echo.f", "named", "Echo.f"]


def test_a_tasks_env_vars_and_arguments_are_its_own(embedded_cluster):
    probe = {"runtime_env": {"env_vars": {"KASTOR_TEMPLATE_PROBE": "set"}}}
    got = kastor.get([noargs.remote(), noargs.options(**probe).remote(), noargs.remote(),
                      env.remote(), env.options(**probe).remote(), env.remote("PATH")])
    assert got[:3] == [None, "set", None]
    assert [g[0] for g in got[3:5]] == [None, "set"] and got[5][0]  # PATH: set in every worker
    assert len({g[1] for g in got[3:]}) == 3
