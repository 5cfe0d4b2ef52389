"""`kastor.get_runtime_context()`: who and where the calling code is."""

from __future__ import annotations

import json
from typing import Any

from kastor.runtime import context


class RuntimeContext:
    """What `get_runtime_context()` returns: the job, node, worker, task and actor of the calling code."""

    def __init__(self, core):
        self._core = core

    def _task(self):
        return context.current_task.get()

    def get_job_id(self) -> str:
        return self._core.current_job_id().hex()

    def get_node_id(self) -> str:
        return self._core.node_id

    def get_node_labels(self) -> dict[str, str]:
        """The labels of the node this runs on (label_selector= picks nodes by them), as Ray's."""
        from kastor.runtime import submission
        for node in submission.list_nodes(self._core):
            if node.node_id == self._core.node_id:
                return dict(node.labels)
        return {}

    def get_worker_id(self) -> str:
        return self._core.worker_id.hex()

    def get_task_id(self) -> str | None:
        task = self._task()
        return task.task_id.hex() if task and task.task_id else None

    def get_task_name(self) -> str | None:
        task = self._task()
        return task.name or None if task and task.task_id else None

    def get_runtime_env_string(self) -> str:
        """The runtime_env in force here, as JSON: its `env_vars`, and its working_dir and py_modules
        as the URIs of their uploaded packages (as Ray reports them), pip as its requirements."""
        from kastor.runtime import runtime_env
        env_vars = self._core.current_env_vars()
        resolved = runtime_env.current(self._core)
        return json.dumps({**({"env_vars": env_vars} if env_vars else {}), **resolved})

    @property
    def runtime_env(self):
        """The runtime_env in force here, as Ray's RuntimeEnv (a dict; packages as their URIs)."""
        from kastor.runtime_env import RuntimeEnv
        return RuntimeEnv(**json.loads(self.get_runtime_env_string()))

    def get_actor_id(self) -> str | None:
        task = self._task()
        return task.actor_id.hex() if task and task.actor_id else None

    def get_actor_name(self) -> str | None:
        engine = self._core.engine
        spec = getattr(engine, "actor_spec", None)
        return spec.name or None if spec is not None else None

    @property
    def namespace(self) -> str:
        return self._core.current_namespace()

    def get(self) -> dict[str, Any]:
        """This context as a dict, as Ray's (deprecated there, kept for old programs): the job,
        node and namespace, plus the task and actor ids inside a task or actor."""
        info: dict[str, Any] = {"job_id": self.get_job_id(), "node_id": self.get_node_id(),
                                "namespace": self.namespace}
        if self.get_task_id() is not None:
            info["task_id"] = self.get_task_id()
        if self.get_actor_id() is not None:
            info["actor_id"] = self.get_actor_id()
        return info

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        task = self._task()
        return {"GPU": [str(i) for i in (task.gpu_ids if task else ())]}

    def get_assigned_resources(self) -> dict[str, Any]:
        task = self._task()
        return {"GPU": float(len(task.gpu_ids))} if task and task.gpu_ids else {}

    @property
    def current_actor(self):
        from kastor.actor import ActorHandle
        engine = self._core.engine
        spec = engine.running_actor() if engine is not None else None
        if spec is None:
            raise RuntimeError("current_actor is only available inside an actor.")
        # A weak handle, as Ray's: it keeps nothing alive, here or wherever it is sent.
        return ActorHandle(spec.actor_id, spec.class_name, list(spec.methods), spec.max_task_retries)

    @property
    def was_current_actor_reconstructed(self) -> bool:
        return bool(getattr(self._core.engine, "restarted", False))
