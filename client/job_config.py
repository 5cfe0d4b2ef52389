"""`JobConfig`, as Ray's `ray.job_config.JobConfig`: job-wide settings passed to `init()`.

Kastor honours the namespace, the runtime_env (see kastor.runtime.runtime_env) and the metadata. The Java
options have no meaning here and are refused when set, rather than silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobConfig:
    """Job-wide settings for `init(job_config=...)`; explicit `init` arguments win over them."""

    runtime_env: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    ray_namespace: str | None = None
    default_actor_lifetime: str = "non_detached"
    jvm_options: list[str] | None = None
    code_search_path: list[str] | None = None
    client_job: bool = False

    def __post_init__(self) -> None:
        if self.jvm_options or self.code_search_path:
            raise ValueError("JobConfig: jvm_options and code_search_path are for Ray's Java workers, which Kastor "
                             "does not have; leave them unset.")
        if self.default_actor_lifetime not in ("non_detached", "detached"):
            raise ValueError(f"JobConfig: default_actor_lifetime must be 'detached' or 'non_detached', "
                             f"got {self.default_actor_lifetime!r}.")
        if self.default_actor_lifetime == "detached":
            raise ValueError("JobConfig: default_actor_lifetime='detached' is not supported by Kastor yet; pass "
                             "lifetime='detached' to the actors that must outlive the job.")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise TypeError("JobConfig: metadata must map strings to strings.")

    def set_runtime_env(self, runtime_env: dict[str, Any] | None) -> None:
        self.runtime_env = runtime_env

    def set_ray_namespace(self, ray_namespace: str) -> None:
        self.ray_namespace = ray_namespace

    def set_metadata(self, key: str, value: str) -> None:
        self.metadata[key] = value

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        self.default_actor_lifetime = default_actor_lifetime
        self.__post_init__()
