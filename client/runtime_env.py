"""`kastor.runtime_env.RuntimeEnv` and `RuntimeEnvConfig`, Ray's typed forms of a runtime_env dict.

They are dicts, so they go wherever a runtime_env dict goes (`init`, `.options`, `@remote`).
The fields Kastor implements are `env_vars`, `working_dir`, `py_modules`, `excludes`, `pip` and
`uv` (installed with pip); see kastor.runtime.runtime_env. `RuntimeEnvConfig` is accepted
and not used: Kastor's setup timeout is fixed at Ray's default of 600 s.
"""

from __future__ import annotations

from typing import Any


class RuntimeEnvConfig(dict):
    def __init__(self, setup_timeout_seconds: int = 600, eager_install: bool = True, **kwargs: Any):
        super().__init__(setup_timeout_seconds=setup_timeout_seconds, eager_install=eager_install, **kwargs)


class RuntimeEnv(dict):
    """A runtime_env as keyword arguments, checked as soon as it is made (unknown fields raise)."""

    def __init__(self, *, py_modules: list | None = None, working_dir: str | None = None,
                 pip: Any = None, uv: Any = None, env_vars: dict[str, str] | None = None,
                 config: dict | RuntimeEnvConfig | None = None, **kwargs: Any):
        from kastor.runtime import runtime_env
        given = {"py_modules": py_modules, "working_dir": working_dir, "pip": pip, "uv": uv,
                 "env_vars": env_vars, "config": config, **kwargs}
        super().__init__({k: v for k, v in given.items() if v is not None})
        runtime_env.validate(dict(self))

    def to_dict(self) -> dict[str, Any]:
        return dict(self)


__all__ = ["RuntimeEnv", "RuntimeEnvConfig"]
