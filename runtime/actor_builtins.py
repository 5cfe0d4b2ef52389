"""What every actor answers without its class defining it, and the graceful exit.

As in Ray: `get(a.__ray_ready__.remote())` waits until the actor is constructed,
`a.__ray_call__.remote(fn, *args)` runs `fn(actor, *args)` in it, and
`a.__ray_terminate__.remote()` ends it after the calls queued before; `exit_actor()` inside
a method or constructor ends it at once. The worker runs these, so they live in the runtime;
`kastor.actor` re-exports them for users.
"""

from __future__ import annotations

from collections.abc import Callable

from kastor.runtime import context


class ActorExit(SystemExit):
    """Raised by exit_actor(); the worker ends the actor on purpose, with no restart."""


ActorExit.__module__ = "kastor.actor"  # where users meet it (and pickles look it up)


def request_exit(cause: str) -> None:
    """Asks this process's actor to exit gracefully, then raises ActorExit; a TypeError outside an actor."""
    task = context.current_task.get()
    core = context.core
    if task is None or not task.actor_id or core is None or core.engine is None:
        raise TypeError("exit_actor API is called on a non-actor worker: exit_actor() ends the actor it runs in, "
                        "so call it inside an actor's constructor or method (to end an actor from outside, "
                        "use kastor.kill(actor) or actor.__ray_terminate__.remote()).")
    core.engine.request_exit(cause)
    raise ActorExit(0)


def _ready(instance: object) -> bool:
    return True


def _terminate(instance: object) -> None:
    """`actor.__ray_terminate__.remote()`: the graceful exit, after the calls queued before it."""
    request_exit("__ray_terminate__ was called")


def _call(instance: object, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
    """`actor.__ray_call__.remote(fn, *args)`: runs `fn(actor, *args)` in the actor, in call order
    with its methods (Ray's generic call, e.g. to read state no method exposes)."""
    if not callable(fn):
        raise TypeError(f"__ray_call__ runs fn(actor, *args, **kwargs): its first argument must be callable, "
                        f"got {type(fn).__name__}")
    return fn(instance, *args, **kwargs)


# Each takes the actor instance first; the worker binds it.
BUILTIN_METHODS: dict[str, Callable[..., object]] = {"__ray_ready__": _ready, "__ray_terminate__": _terminate,
                                                     "__ray_call__": _call}
