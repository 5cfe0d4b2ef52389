"""Typed errors a Kastor program can catch, named and shaped like Ray 2.x's (public as `kastor.exceptions`).

They live in the runtime, which raises them, so that the runtime never imports the public
package; `kastor.exceptions` re-exports them unchanged, and each class says `kastor.exceptions`
as its module, so tracebacks, reprs and pickles name them where users meet them.

`TaskError` is raised by `get` when the remote code raised. Like Ray's RayTaskError, the
instance `get` raises is also an instance of the original exception's class, so
`except ZeroDivisionError` works around a remote call exactly as around a local one.
The Ray names (RayError, RayTaskError, RayActorError, ...) are aliases, so code written
against `ray.exceptions` keeps working with `import kastor as ray`.
"""

from __future__ import annotations

import functools
import inspect
import traceback

PUBLIC_MODULE = "kastor.exceptions"  # where users import these from (client/exceptions.py)


class KastorError(Exception):
    """Base of every error Kastor raises on purpose."""

    def __reduce__(self):
        # Exception's own reduce calls cls(*args), which re-runs __init__ with the finished
        # message as its first field: "Task Task 2b6a.. was cancelled. was cancelled."
        return _rebuild_error, (type(self), self.args, self.__dict__)


def _rebuild_error(cls: type, args: tuple, state: dict) -> KastorError:
    err = cls.__new__(cls, *args)
    err.args = args
    err.__dict__.update(state)
    return err


class TaskError(KastorError):
    """The remote function or actor method raised; carries the remote traceback."""

    def __init__(self, function_name: str, traceback_str: str, cause: BaseException | None,
                 pid: int = 0, ip: str = ""):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        self.ip = ip
        super().__init__(self._message())

    def _message(self) -> str:
        return f"{self.function_name} (pid={self.pid}, ip={self.ip})\n{self.traceback_str.rstrip()}"

    def __str__(self) -> str:
        return self._message()

    def __getattr__(self, name: str):
        # Fields of the original exception (e.g. `err.amount`) read through, as in Ray.
        cause = self.__dict__.get("cause")
        if cause is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(cause, name)

    def __reduce__(self):
        return _rebuild_task_error, (self.function_name, self.traceback_str, self.cause, self.pid, self.ip)

    def as_instanceof_cause(self) -> TaskError:
        """This error re-typed to also be an instance of the cause's class, when possible.

        Works for every built-in exception, including those whose constructor is special
        (MemoryError's free list, the argument checks of ExceptionGroup and OSError)."""
        cause = self.cause
        if cause is None or isinstance(cause, TaskError):
            return self
        derived = _derived_class(type(cause))
        if derived is None:
            return self
        try:
            err = _instance(derived, cause, self)
        except Exception:  # a constructor that rejects the cause's own arguments: keep the plain TaskError
            return self
        err.__dict__.update(self.__dict__)
        err.args = (self._message(),)
        return err


@functools.lru_cache(maxsize=256)
def _derived_class(cause_cls: type) -> type | None:
    try:
        return type(f"TaskError({cause_cls.__name__})", (TaskError, cause_cls), {
            "__init__": _derived_init,
            "__str__": TaskError.__str__,
            "__reduce__": TaskError.__reduce__,
            "__module__": PUBLIC_MODULE,
        })
    except TypeError:  # layouts that cannot be combined (some C extension exceptions)
        return None


def _derived_init(self, *args, **kwargs) -> None:
    """Does nothing: `_instance` fills the fields, and user-defined __init__s must not run twice."""


def _instance(derived: type, cause: BaseException, error: TaskError) -> BaseException:
    # Calling the class runs its C-level __new__ (the one of the combined layout, which
    # `derived.__new__` would not find for MemoryError) with the arguments pickle would use
    # for the cause, which ExceptionGroup needs. The nearest built-in class's __init__ then
    # sets the C fields it owns (OSError.errno and .filename, UnicodeError.start,
    # SystemExit.code, ...); a user class's __init__ is not run again: its attributes read
    # through to the cause.
    args = _constructor_args(cause, error)
    err = derived(*args)
    builtin = next(c for c in type(cause).__mro__ if c.__module__ == "builtins")
    try:
        builtin.__init__(err, *args)
    except Exception:
        pass
    return err


def _constructor_args(cause: BaseException, error: TaskError) -> tuple:
    reduced = cause.__reduce__()
    args = tuple(reduced[1]) if isinstance(reduced, tuple) and reduced[0] is type(cause) else cause.args
    if isinstance(cause, BaseExceptionGroup) and not isinstance(cause, Exception):
        # A group made with TaskError (an Exception) may only hold Exceptions: each member that is
        # not one (KeyboardInterrupt, ...) is held as a TaskError that is also an instance of it,
        # so `except* KeyboardInterrupt` still matches it.
        members = [m if isinstance(m, Exception) else
                   TaskError(error.function_name, "".join(traceback.format_exception_only(m)), m,
                             error.pid, error.ip).as_instanceof_cause()
                   for m in args[1]]
        args = (args[0], members, *args[2:])
    return args


def _rebuild_task_error(function_name, traceback_str, cause, pid, ip) -> TaskError:
    return TaskError(function_name, traceback_str, cause, pid, ip).as_instanceof_cause()


class ActorError(KastorError):
    """The actor could not run the call (Ray's RayActorError)."""

    def __init__(self, message: str = "The actor died unexpectedly.", actor_id: str | None = None):
        self.actor_id = actor_id
        super().__init__(message)


class ActorDiedError(ActorError):
    """The actor is dead for good: killed, out of restarts, or its constructor raised."""


class ActorUnavailableError(ActorError):
    """The actor was unreachable (e.g. restarting); the call may or may not have run."""


class GetTimeoutError(KastorError, TimeoutError):
    """`get` or `wait`-style call ran out of time before the value was ready."""


class TaskCancelledError(KastorError):
    """The task was cancelled with `kastor.cancel` before it finished."""

    def __init__(self, task_id: str | None = None, message: str | None = None):
        self.task_id = task_id
        super().__init__(message or f"Task {task_id} was cancelled.")


class ObjectLostError(KastorError):
    """The object's value is gone (its owner or the node storing it died)."""

    def __init__(self, object_id: str = "", message: str | None = None):
        self.object_id = object_id
        super().__init__(message or f"Object {object_id} is lost: its owner or the node holding it is gone.")


class OwnerDiedError(ObjectLostError):
    """The process that owns the object (the one that created its ref) is gone, and the value with it."""


class ObjectStoreFullError(KastorError):
    """A large object could not be stored: the node's store is full and so is its spill directory
    on disk (or spilling is off, KASTOR_OBJECT_SPILLING=0), or the node is unreachable.

    Raised by `put()` (and `.remote()` for a large argument); a task whose return value does
    not fit fails, and its `get()` raises a TaskError that is also an ObjectStoreFullError."""


class OutOfMemoryError(KastorError):
    """Ray's error for work its memory monitor killed because the node ran low on memory.

    Kastor has no memory monitor, so it raises this nowhere yet: a worker that the kernel's
    OOM killer ends fails its task with WorkerCrashedError (retried per max_retries). The class
    is here, with Ray's base, so that `except ray.exceptions.OutOfMemoryError` keeps working.
    """


class WorkerCrashedError(KastorError):
    """The worker process running the task died, and no retries were left."""


class PendingCallsLimitExceeded(KastorError):
    """This handle already has the actor's `max_pending_calls` calls waiting for results."""


class TaskUnschedulableError(KastorError):
    """The task can never run where it must (pinned to a node that is not alive)."""


class RuntimeEnvSetupError(KastorError):
    """A task's or actor's runtime_env (working_dir, py_modules, pip) could not be set up on a node:
    the message names the step, the requirements and the tail of pip's output."""


class TaskPlacementGroupRemoved(KastorError):
    """The task's placement group was removed before the task could run (Ray's name)."""


class KastorSystemError(KastorError):
    """Kastor itself failed (a runtime fault, not the user's code)."""


# Ray's names, for `import kastor as ray` programs.
RayError = KastorError
RayTaskError = TaskError
RayActorError = ActorError
RaySystemError = KastorSystemError

__all__ = [
    "KastorError", "TaskError", "ActorError", "ActorDiedError", "ActorUnavailableError",
    "GetTimeoutError", "TaskCancelledError", "ObjectLostError", "OwnerDiedError", "ObjectStoreFullError",
    "OutOfMemoryError", "WorkerCrashedError", "TaskUnschedulableError", "PendingCallsLimitExceeded",
    "TaskPlacementGroupRemoved",
    "KastorSystemError", "RuntimeEnvSetupError", "RayError", "RayTaskError", "RayActorError", "RaySystemError",
]


def present_as(module: str, *classes: type) -> None:
    """Names `module` (the public one that re-exports them) as the home of `classes` and of
    their methods: tracebacks, reprs, pickles and the API reference (griffe's inspection) then
    show them where users import them from, though the runtime defines them."""
    for cls in classes:
        cls.__module__ = module
        for member in vars(cls).values():
            function = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            if inspect.isfunction(function):
                function.__module__ = module


present_as(PUBLIC_MODULE, *(globals()[name] for name in __all__))
