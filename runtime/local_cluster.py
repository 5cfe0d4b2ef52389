"""The embedded single-machine cluster `kastor.init()` starts: a head and one node agent.

Both are real child processes, started side by side (the node agent retries until the
head answers) and tied to the driver: they exit when it does, however it ends.
"""

from __future__ import annotations

import json
import os

from kastor.runtime import auth, config, launcher, settings


class LocalCluster:
    def __init__(self, *, num_cpus: float | None = None, num_gpus: float | None = None,
                 memory: float | None = None, resources: dict[str, float] | None = None,
                 labels: dict[str, str] | None = None, object_spilling: bool | None = None,
                 object_spilling_directory: str | None = None):
        """`object_spilling` / `object_spilling_directory`: the node's spilling, when not left to its
        settings (from Ray's `_system_config`, see spilling.from_ray_system_config)."""
        self.session_dir = launcher.new_session_dir("local")
        self.token = auth.generate_token()
        env = dict(os.environ)
        if object_spilling is not None:
            env[settings.OBJECT_SPILLING.name] = "1" if object_spilling else "0"
        env[config.ENV_TOKEN] = self.token
        env.pop(config.ENV_TOKEN_FILE, None)
        self.head_address = f"127.0.0.1:{launcher.free_port()}"
        logs = os.path.join(self.session_dir, "logs")
        head_port = self.head_address.rsplit(":", 1)[1]
        self.head = launcher.Child("kastor.runtime.head", ["--port", head_port],
                                   env, os.path.join(logs, "head.log"))
        node_args = ["--address", self.head_address, "--session-dir", self.session_dir]
        if num_cpus is not None:
            node_args += ["--num-cpus", str(num_cpus)]
        if num_gpus:
            node_args += ["--num-gpus", str(num_gpus)]
        if memory:
            node_args += ["--memory", str(memory)]
        if resources:
            node_args += ["--resources", json.dumps(resources)]
        if labels:
            node_args += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
        if object_spilling_directory:
            node_args += ["--object-spilling-directory", object_spilling_directory]
        self.node = launcher.Child("kastor.runtime.node_agent", node_args, env, os.path.join(logs, "node.log"))
        try:
            self.head.wait_ready()
            self.node_address = self.node.wait_ready()
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        self.node.stop()
        self.head.stop()
