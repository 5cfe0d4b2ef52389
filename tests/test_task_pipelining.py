"""How the task submitter times tasks to decide whether to pipeline them (task_submitter.py).

Short tasks (under SHORT_TASK_S) go PIPELINE_DEPTH deep per lease; others one at a time. A
pipelined task waits at the worker behind the ones sent before it, so timing it from its own
send counts that wait: 32 no-op tasks in flight then looked like several milliseconds each, and
pipelining turned itself off for exactly the tasks it is for.
"""

from __future__ import annotations

import pytest
from kastor.runtime.task_submitter import PIPELINE_DEPTH, SHORT_TASK_S, per_task_runtime


def test_a_deep_pipeline_of_short_tasks_still_counts_as_short():
    # PIPELINE_DEPTH tasks sent at t=0; the worker runs each in 0.2 ms and answers in frames of 8.
    run_s, frame = 0.0002, 8
    last, seen = 0.0, []
    for k in range(PIPELINE_DEPTH // frame):
        now = (k + 1) * frame * run_s
        seen.append(per_task_runtime(0.0, last, now, frame))
        last = now
    assert seen == pytest.approx([run_s] * len(seen))
    assert max(seen) < SHORT_TASK_S
    timed_from_send = PIPELINE_DEPTH * run_s  # the last frame's tasks, timed from their own send
    assert timed_from_send > SHORT_TASK_S


def test_a_lone_task_is_timed_from_its_send():
    # The lease's previous results came long before this task was sent: they do not count.
    assert per_task_runtime(10.0, 2.0, 10.05, 1) == pytest.approx(0.05)
    assert per_task_runtime(10.0, 2.0, 10.05, 1) > SHORT_TASK_S  # so a 50 ms task is not pipelined
