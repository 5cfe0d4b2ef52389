"""Validating `@remote(...)` and `.options(...)` keywords, the way Ray names them.

Bad values fail at the call site with the option's name and what it accepts, instead of
surfacing later as a scheduling mystery on some other process.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

from kastor import labels
from kastor.runtime import placement_context
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.submission import Scheduling

_COMMON = {"num_cpus", "num_gpus", "resources", "memory", "name", "scheduling_strategy", "runtime_env",
           "accelerator_type", "label_selector", "fallback_strategy", "enable_task_events", "_metadata",
           "placement_group",
           "placement_group_bundle_index", "placement_group_capture_child_tasks"}
TASK_OPTIONS = _COMMON | {"max_retries", "retry_exceptions", "num_returns", "max_calls"}
ACTOR_OPTIONS = _COMMON | {"namespace", "lifetime", "get_if_exists", "max_restarts", "max_task_retries",
                           "max_concurrency", "max_pending_calls", "concurrency_groups", "allow_out_of_order_execution",
                           "state"}
# Accepted for compatibility with Ray programs; they change nothing on Kastor today.
_IGNORED = {"accelerator_type", "enable_task_events", "_metadata", "allow_out_of_order_execution"}


def validate(options: dict[str, Any], for_actor: bool) -> dict[str, Any]:
    valid = ACTOR_OPTIONS if for_actor else TASK_OPTIONS
    kind = "actors" if for_actor else "remote functions"
    for key in options:
        if key not in valid:
            raise ValueError(f"Invalid option keyword '{key}' for {kind}. Valid ones are: {', '.join(sorted(valid))}.")
    if options.get("label_selector") is not None:
        labels.check_selector(options["label_selector"])
    if options.get("fallback_strategy") is not None:
        labels.check_fallback_strategy(options["fallback_strategy"])
    for key, value in options.items():
        if key in _IGNORED and value not in (None, "DEFAULT", {}):
            warnings.warn(f"Kastor accepts the option '{key}' for Ray compatibility but ignores it.", stacklevel=4)
    env_vars(options.get("runtime_env"))
    strategy = options.get("scheduling_strategy")
    if strategy is not None:
        from kastor.util.scheduling_strategies import placement
        placement(strategy)
    from kastor.util.placement_group import resolve
    resolve(options, None)  # a placement group of the wrong type, or a bundle index it does not have
    for key in ("num_cpus", "num_gpus", "memory"):
        if options.get(key) is not None:
            _non_negative_number(key, options[key])
    resources = options.get("resources")
    if resources is not None:
        if not isinstance(resources, dict):
            raise TypeError(f"The 'resources' option must be a dict of name -> amount, got {type(resources).__name__}.")
        for name, amount in resources.items():
            if name in ("CPU", "GPU", "memory"):
                raise ValueError(f"Use the '{name.lower() if name != 'CPU' else 'num_cpus'}' option instead of "
                                 f"resources={{'{name}': ...}}.".replace("'gpu'", "'num_gpus'"))
            if not isinstance(name, str):
                raise TypeError(f"Resource names must be strings, got {name!r}.")
            _non_negative_number(f"resources['{name}']", amount)
    for key in ("max_retries", "max_restarts", "max_task_retries"):
        if options.get(key) is not None:
            _int_at_least(key, options[key], -1, "-1 means retry forever")
    if options.get("num_returns") == "dynamic":
        raise ValueError("num_returns='dynamic' is not supported; use num_returns='streaming' (the default for a "
                         "function or method that yields), which returns an ObjectRefGenerator.")
    if isinstance(options.get("num_returns"), str) and options["num_returns"] != "streaming":
        raise ValueError(f"The 'num_returns' option must be an integer >= 0, or 'streaming' for a generator; "
                         f"got {options['num_returns']!r}.")
    if options.get("num_returns") not in (None, "streaming"):
        _int_at_least("num_returns", options["num_returns"], 0, "")
    if options.get("state") is not None:
        from kastor.state import Checkpoint
        if not isinstance(options["state"], Checkpoint):
            raise TypeError(f"The 'state' option takes a kastor.state.Checkpoint(...), "
                            f"got {type(options['state']).__name__}.")
    groups = options.get("concurrency_groups")
    if groups is not None:
        if not isinstance(groups, dict):
            raise TypeError(f"The 'concurrency_groups' option must be a dict of name -> max concurrency, "
                            f"got {type(groups).__name__}.")
        for name, limit in groups.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"Concurrency group names must be non-empty strings, got {name!r}.")
            _int_at_least(f"concurrency_groups['{name}']", limit, 1, "")
    if options.get("max_calls") is not None:
        _int_at_least("max_calls", options["max_calls"], 0, "0 means no limit")
    pending = options.get("max_pending_calls")
    if pending is not None and pending != -1:
        _int_at_least("max_pending_calls", pending, 1, "or -1 for no limit")
    if options.get("max_concurrency") is not None:
        _int_at_least("max_concurrency", options["max_concurrency"], 1, "")
    if options.get("lifetime") not in (None, "detached", "non_detached"):
        raise ValueError("The 'lifetime' option must be None, 'detached' or 'non_detached', "
                         f"got {options['lifetime']!r}.")
    for key in ("name", "namespace"):
        if options.get(key) is not None and not isinstance(options[key], str):
            raise TypeError(f"The '{key}' option must be a string, got {type(options[key]).__name__}.")
    if options.get("name") == "" and for_actor:
        raise ValueError("The 'name' option of an actor must be a non-empty string (or None for an unnamed actor).")
    if options.get("get_if_exists") and not options.get("name"):
        raise ValueError("The 'get_if_exists' option needs a 'name': only named actors can be looked up.")
    retry = options.get("retry_exceptions")
    if retry is not None and not isinstance(retry, bool):
        if not (isinstance(retry, (list, tuple)) and all(isinstance(t, type) and issubclass(t, BaseException)
                                                          for t in retry)):
            raise TypeError("The 'retry_exceptions' option must be a bool or a list of exception classes.")
    return options


def _non_negative_number(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"The '{key}' option must be a number, got {type(value).__name__}.")
    if value < 0:
        raise ValueError(f"The '{key}' option must be >= 0, got {value}.")


def _int_at_least(key: str, value: Any, low: int, note: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"The '{key}' option must be an integer, got {type(value).__name__}.")
    if value < low:
        raise ValueError(f"The '{key}' option must be >= {low}{' (' + note + ')' if note else ''}, got {value}.")


def env_vars(runtime_env: Any) -> dict[str, str]:
    """The `env_vars` of a runtime_env; the whole runtime_env is checked (kastor.runtime.runtime_env)."""
    if runtime_env is None:
        return {}
    from kastor.runtime import runtime_env as renv
    renv.validate(runtime_env)
    variables = runtime_env.get("env_vars") or {}
    if not isinstance(variables, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in variables.items()):
        raise TypeError("runtime_env['env_vars'] must be a dict of str -> str, e.g. {'OMP_NUM_THREADS': '1'}.")
    return dict(variables)


def task_resources(options: dict[str, Any]) -> dict[str, float]:
    """A task holds what it asks for; by default one CPU while it runs (as in Ray)."""
    num_cpus = options.get("num_cpus")
    required = {"CPU": float(1 if num_cpus is None else num_cpus)}
    _add_rest(required, options)
    return {k: v for k, v in required.items() if v}


def actor_resources(options: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """(needed to place, held while alive): by default 1 CPU to place and none held."""
    num_cpus = options.get("num_cpus")
    held: dict[str, float] = {} if num_cpus is None else {"CPU": float(num_cpus)}
    _add_rest(held, options)
    required = dict(held)
    if num_cpus is None:
        required["CPU"] = 1.0
    return ({k: v for k, v in required.items() if v}, {k: v for k, v in held.items() if v})


def _add_rest(out: dict[str, float], options: dict[str, Any]) -> None:
    if options.get("num_gpus"):
        out["GPU"] = float(options["num_gpus"])
    if options.get("memory"):
        out["memory"] = float(options["memory"])
    for name, amount in (options.get("resources") or {}).items():
        out[name] = float(amount)


def task_scheduling(options: dict[str, Any], name: str) -> Scheduling:
    """What validated task options mean for placing the task, as the runtime takes it (plain data)."""
    from kastor.util.placement_group import bundles_of, demand, resolve

    asked = task_resources(options)
    required = asked
    group = resolve(options, placement_context.current())
    if group is not None:  # it draws on its bundle's resources instead of the node's
        required = demand(asked, group, f"task {name}", bundles_of(options))
    return Scheduling(required=required, held=asked, placement=_placement(options), group=group,
                      env_vars=env_vars(options.get("runtime_env")))


def scheduling_is_fixed(options: dict[str, Any]) -> bool:
    """Whether task_scheduling(options, ...) depends on the options alone, so a function's
    `.remote()` may work it out once: not when the work may go into a placement group (its own,
    whose bundles a handle learns later, or the caller's, which captures child tasks)."""
    strategy = options.get("scheduling_strategy")
    return (placement_context.current() is None and (strategy is None or isinstance(strategy, str))
            and options.get("placement_group") in (None, "default"))


def actor_scheduling(options: dict[str, Any], class_name: str) -> Scheduling:
    """What validated actor options mean for placing the actor, as the runtime takes it (plain data)."""
    from kastor.util.placement_group import bundles_of, demand, resolve

    required, held = actor_resources(options)
    group = resolve(options, placement_context.current())
    if group is not None:  # it draws on its bundle's resources instead of the node's
        # The default actor's 1 CPU to be placed is not asked of a bundle: it runs on what it holds.
        required = held if options.get("num_cpus") is None else required
        required, held = demand(required, group, f"actor {class_name}", bundles_of(options)), demand(held, group)
    return Scheduling(required=required, held=held, placement=_placement(options), group=group,
                      env_vars=env_vars(options.get("runtime_env")))


def _placement(options: dict[str, Any]) -> pb.Placement | None:
    """The scheduling_strategy's placement, with the label_selector and fallback_strategy's selectors."""
    from kastor.util.scheduling_strategies import placement

    where = placement(options.get("scheduling_strategy"))
    chosen = labels.selectors(options)
    if chosen:
        where = where if where is not None else pb.Placement()
        where.labels.extend(chosen)
    return where
