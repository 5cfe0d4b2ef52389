"""OMP_NUM_THREADS for a task or actor, as Ray sets it.

numpy, torch and other OpenMP users start one thread per core by default, so two tasks on a
2-core node would each start one per core and fight. Ray sets OMP_NUM_THREADS in the worker
to the CPUs the task or actor asked for (1 by default, and for fractions), unless the user
set it: in the task's runtime_env, or in the environment the node (and so its workers)
started with.
"""

from __future__ import annotations

import os

NAME = "OMP_NUM_THREADS"
# Read once at import, in the worker, before any task ran: the node's own environment.
_PRESET = NAME in os.environ


def variables(num_cpus: float, user_env: dict[str, str] | None = None) -> dict[str, str]:
    """What to add to a call's environment: {} when the user already chose a value."""
    if _PRESET or (user_env and NAME in user_env):
        return {}
    return {NAME: str(max(1, int(num_cpus)))}


def apply_for_task(num_cpus: float, user_env: dict[str, str] | None = None) -> None:
    """Sets OMP_NUM_THREADS in this worker for a task that holds `num_cpus`, and leaves it set.

    A reused worker runs thousands of tasks a second, nearly all with the value the last one
    had: setting and restoring it around each (a putenv and an unsetenv) was a sixth of the
    worker's CPU per no-op task (bench/README.md, "Tasks"). So it is written only when it
    differs from what the environment holds, which also catches a task that changed it. Each
    task sets its own value before it runs, so none sees the one before's; a task whose
    runtime_env names the variable restores this value after it (worker._set_environ).
    """
    wanted = variables(num_cpus, user_env).get(NAME)
    if wanted is not None and os.environ.get(NAME) != wanted:
        os.environ[NAME] = wanted
