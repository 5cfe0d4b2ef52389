"""A remote function works out where its tasks go once per options, not per `.remote()`,
and only while that depends on the options alone (client/remote_function.py, `_where`).

The cached answer must never leak into work whose placement depends on its context: a task
inside a placement group that captures child tasks puts its children in that group.
"""

from __future__ import annotations

from kastor import options as opts
from kastor.remote_function import _where
from kastor.runtime import placement_context
from kastor.runtime.protocol import kastor_pb2 as pb


def _options(**extra):
    return {"num_returns": 1, "max_retries": 3, "retry_exceptions": False, **opts.validate(extra, for_actor=False)}


def test_the_scheduling_of_fixed_options_is_worked_out_once():
    options, fixed = _options(num_cpus=0.5), []
    first = _where(options, "f", fixed)
    assert first.required == {"CPU": 0.5} and first.group is None
    assert _where(options, "f", fixed) is first


def test_a_capturing_group_still_takes_the_child_tasks():
    options, fixed = _options(), []
    outside = _where(options, "f", fixed)  # the cache is filled outside any group
    group = pb.PlacementGroupRef(placement_group_id=b"g" * 16, bundle_index=-1, capture_child_tasks=True)
    token = placement_context.enter_task(group)
    try:
        inside = _where(options, "f", fixed)
    finally:
        placement_context.leave_task(token)
    assert outside.group is None
    assert inside.group is not None and inside.group.placement_group_id == b"g" * 16
    assert _where(options, "f", fixed) is outside  # and outside again, the cached answer


def test_a_placement_group_strategy_is_never_cached():
    from kastor.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    assert not opts.scheduling_is_fixed({"scheduling_strategy": PlacementGroupSchedulingStrategy(None)})
    assert opts.scheduling_is_fixed({"scheduling_strategy": "SPREAD"})
