"""runtime_env beyond `env_vars`: checked at the call site, packed, merged and inherited as in Ray 2.x.

A runtime_env's `working_dir` and `py_modules` name local paths of the driver. They are packed
and uploaded to the head here (runtime_env_packaging), and replaced by their URIs; `pip` (and
`uv`) become a normalized list of requirements. The result, "resolved", is what travels in a
TaskSpec / ActorSpec / LeaseRequest as canonical JSON: equal environments give equal strings,
so the string (with the resources) keys worker reuse. Node agents set the environment up
(runtime_env_agent) and start the work's worker in it.

Merging follows Ray: a task's or actor's runtime_env replaces the job's (or the parent's) field
by field; `env_vars` are merged (kept apart, in TaskSpec.env_vars, as before). Nested work
inherits the runtime_env of the worker it is submitted from, which was started for exactly
that environment (its KASTOR_RUNTIME_ENV variable).

A task's or actor's runtime_env is packed once per process and re-packed only when its local
files changed (names, sizes, mtimes; checked at most once a second), so a notebook's edited
module reaches the next call without re-zipping on every call; `init(runtime_env=)` always
packs afresh.
"""

from __future__ import annotations

import json
import os
import time
import types
import weakref
from dataclasses import dataclass
from typing import Any

from kastor.runtime import runtime_env_packaging as packaging
from kastor.runtime import settings
from kastor.runtime.protocol import kastor_pb2 as pb

ENV_RUNTIME_ENV = settings.RUNTIME_ENV.name  # a worker's resolved runtime_env (set by its node agent)
SUPPORTED = ("env_vars", "working_dir", "py_modules", "excludes", "pip", "uv", "config")
# Ray fields Kastor does not implement: an error rather than a silently different environment.
NOT_SUPPORTED = ("conda", "container", "image_uri", "java_jars", "nsight", "mpi", "worker_process_setup_hook")

_cache: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Any]]] = weakref.WeakKeyDictionary()


def validate(runtime_env: Any) -> None:
    """Raises ValueError/TypeError, naming the field and the fix, for what cannot work."""
    if runtime_env is None:
        return
    if not isinstance(runtime_env, dict):
        raise TypeError(f"The 'runtime_env' option must be a dict, got {type(runtime_env).__name__}.")
    for key in runtime_env:
        if key in NOT_SUPPORTED:
            raise ValueError(f"runtime_env[{key!r}] is not supported by Kastor (it supports "
                             f"{', '.join(SUPPORTED)}). Build the environment into the nodes' image instead.")
        if key not in SUPPORTED:
            raise ValueError(f"Unknown runtime_env field {key!r}; the fields are {', '.join(SUPPORTED)}.")
    wd = runtime_env.get("working_dir")
    if wd is not None:
        if not isinstance(wd, str | os.PathLike):
            raise TypeError(f"runtime_env['working_dir'] must be a path (str), got {type(wd).__name__}.")
        wd = os.fspath(wd)
        if not packaging.is_package_uri(wd) and not (os.path.isdir(wd) or (os.path.isfile(wd) and wd.endswith(".zip"))):
            raise ValueError(f"runtime_env['working_dir'] {wd!r} does not exist or is not a directory (or a local "
                             f".zip file). Give the path of a local directory.")
    modules = runtime_env.get("py_modules")
    if modules is not None:
        if not isinstance(modules, list | tuple):
            raise TypeError("runtime_env['py_modules'] must be a list of local paths or imported modules, got "
                            f"{type(modules).__name__}.")
        for m in modules:
            _module_path(m)
    excludes = runtime_env.get("excludes")
    if excludes is not None and (not isinstance(excludes, list | tuple) or
                                 not all(isinstance(e, str) for e in excludes)):
        raise TypeError("runtime_env['excludes'] must be a list of gitignore-style patterns (str).")
    if runtime_env.get("pip") is not None and runtime_env.get("uv") is not None:
        raise ValueError("runtime_env may give 'pip' or 'uv', not both.")
    for key in ("pip", "uv"):
        if runtime_env.get(key) is not None:
            _requirements(key, runtime_env[key])
    config = runtime_env.get("config")
    if config is not None:
        if not isinstance(config, dict):
            raise TypeError("runtime_env['config'] must be a dict, e.g. {'setup_timeout_seconds': 600}.")
        timeout = config.get("setup_timeout_seconds", 600)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or (timeout <= 0 and timeout != -1):
            raise ValueError(f"runtime_env['config']['setup_timeout_seconds'] must be a positive int or -1 (no "
                             f"timeout), got {timeout!r}.")


def _module_path(entry: Any) -> str:
    if isinstance(entry, types.ModuleType):
        file = getattr(entry, "__file__", None)
        if not file:
            raise ValueError(f"py_modules entry {entry.__name__!r} has no file to ship (a namespace package?); "
                             f"give its directory instead.")
        return os.path.dirname(file) if os.path.basename(file) == "__init__.py" else file
    if not isinstance(entry, str | os.PathLike):
        raise TypeError(f"runtime_env['py_modules'] entries must be paths or modules, got {type(entry).__name__}.")
    path = os.fspath(entry)
    if packaging.is_package_uri(path):
        return path
    if not (os.path.isdir(path) or (os.path.isfile(path) and path.endswith((".py", ".whl")))):
        raise ValueError(f"runtime_env['py_modules'] entry {path!r} does not exist or is not a directory, .py file "
                         f"or .whl file.")
    return path


def _requirements(key: str, value: Any) -> dict[str, Any]:
    """`pip`/`uv` as Ray accepts it (a list, a requirements file, or a dict), normalized."""
    options: list[str] = []
    if isinstance(value, dict):
        unknown = set(value) - {"packages", "pip_check", "pip_version", "pip_install_options", "uv_version",
                                "uv_check", "uv_pip_install_options"}
        if unknown:
            raise ValueError(f"Unknown runtime_env[{key!r}] field(s) {', '.join(sorted(unknown))}.")
        options = list(value.get("pip_install_options") or value.get("uv_pip_install_options") or [])
        value = value.get("packages", [])
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        if not os.path.isfile(path):
            raise ValueError(f"runtime_env[{key!r}] {path!r} is not a requirements file here. Give a list of "
                             f"requirements, e.g. ['requests==2.31'], or the path of a requirements.txt.")
        with open(path, encoding="utf-8") as f:
            value = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"runtime_env[{key!r}] must be a list of requirement strings, a requirements file, or "
                        f"{{'packages': [...]}}.")
    return {"packages": list(value), "pip_install_options": options}


def resolve(core: Any, runtime_env: dict[str, Any] | None) -> dict[str, Any]:
    """`runtime_env` without env_vars, its local paths packed and uploaded: what a node needs."""
    if not runtime_env:
        return {}
    validate(runtime_env)
    excludes = list(runtime_env.get("excludes") or [])
    out: dict[str, Any] = {}

    def has(uri: str) -> bool:
        return core.head_call("HasPackage", pb.PackageKey(uri=uri)).found

    def put(package: packaging.Package) -> None:
        core.head_call("PutPackage", pb.Package(uri=package.uri, data=package.data), timeout=600)

    wd = runtime_env.get("working_dir")
    if wd is not None:
        wd = os.fspath(wd)
        out["working_dir"] = wd if packaging.is_package_uri(wd) else \
            packaging.upload(packaging.pack_working_dir(wd, excludes), has, put)
    if runtime_env.get("py_modules") is not None:
        uris = []
        for m in runtime_env["py_modules"]:
            path = _module_path(m)
            uris.append(path if packaging.is_package_uri(path) else
                        packaging.upload(packaging.pack_py_module(path, excludes), has, put))
        out["py_modules"] = uris
    for key in ("pip", "uv"):
        if runtime_env.get(key) is not None:
            out[key] = _requirements(key, runtime_env[key])
    timeout = (runtime_env.get("config") or {}).get("setup_timeout_seconds")
    if timeout is not None:
        out["config"] = {"setup_timeout_seconds": timeout}
    return out


def merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Ray's rule: the child's fields replace the parent's, field by field (pip replaces uv and back)."""
    merged = dict(parent)
    if "pip" in child or "uv" in child:
        merged.pop("pip", None)
        merged.pop("uv", None)
    merged.update(child)
    return merged


def encode(resolved: dict[str, Any]) -> str:
    """Canonical JSON, "" for none: equal environments give equal strings."""
    return json.dumps(resolved, sort_keys=True, separators=(",", ":")) if resolved else ""


def decode(text: str) -> dict[str, Any]:
    return json.loads(text) if text else {}


def current(core: Any) -> dict[str, Any]:
    """The runtime_env new work inherits: the worker's own (it was started in it), or the job's."""
    if core.engine is not None:
        return decode(settings.RUNTIME_ENV.get() or "")
    return dict(core.runtime_env)


def for_call(core: Any, runtime_env: dict[str, Any] | None) -> str:
    """The resolved runtime_env (JSON) a task or actor created here with `runtime_env` runs in."""
    own = {k: v for k, v in (runtime_env or {}).items() if k != "env_vars"}
    if not own:
        return encode(current(core))
    key = json.dumps(own, sort_keys=True, default=str)
    per_core = _cache.setdefault(core, {})
    entry = per_core.get(key)
    now = time.monotonic()
    if entry is None or now - entry.checked_at > RECHECK_S:
        files = _local_files_signature(own)
        if entry is None or files != entry.files:
            entry = per_core[key] = _Packed(resolve(core, own), files, now)
        entry.checked_at = now
    return encode(merge(current(core), entry.resolved))


RECHECK_S = 1.0  # how stale a packed runtime_env may be: local files edited since are re-packed after this


@dataclass
class _Packed:
    resolved: dict[str, Any]
    files: tuple
    checked_at: float


def _local_files_signature(runtime_env: dict[str, Any]) -> tuple:
    """Names, sizes and mtimes of the local files a runtime_env ships: a cheap test for edits."""
    excludes = list(runtime_env.get("excludes") or [])
    roots = [os.fspath(runtime_env["working_dir"])] if runtime_env.get("working_dir") is not None else []
    roots += [_module_path(m) for m in runtime_env.get("py_modules") or []]
    return tuple(packaging.signature(root, excludes) for root in roots if not packaging.is_package_uri(root))
