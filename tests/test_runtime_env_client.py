"""runtime_env working_dir / py_modules through the client port (kastor://): a notebook's modules.

The notebook runs in a process of its own that reaches the cluster only through the client
port; its local module lives in tmp_path, a directory no worker has on sys.path, and reaches
the workers only because the runtime_env ships it (uploaded through the gateway to the head).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from kastor.runtime import launcher
from support import DEADLINE_S, cli_head

TOKEN = "renv-client-" + os.urandom(8).hex()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    client_port = launcher.free_port()
    with cli_head(tmp_path_factory.mktemp("sessions"), TOKEN, "--client-port", str(client_port)) as head:
        yield {**head, "client": f"kastor://127.0.0.1:{client_port}"}


NOTEBOOK = """
import importlib.util, json, sys, kastor
address, token, module_path, how = sys.argv[1:5]
spec = importlib.util.spec_from_file_location("renv_notebook_mod", module_path)
mod = importlib.util.module_from_spec(spec)
sys.modules["renv_notebook_mod"] = mod
spec.loader.exec_module(mod)      # imported here, from a path no worker has on sys.path

env = {"py_modules": [module_path]} if how == "py_modules" else {"working_dir": module_path.rsplit("/", 1)[0]}
kastor.init(address, token=token, runtime_env=env if how == "job" else None)

@kastor.remote
def use():
    import renv_notebook_mod
    return renv_notebook_mod.greet("worker")

task = use.options(runtime_env=env) if how == "py_modules" else use
print(json.dumps(kastor.get(task.remote(), timeout=120)))
kastor.shutdown()
"""


def run_notebook(cluster, tmp_path, how: str) -> subprocess.CompletedProcess:
    nb = tmp_path / "notebook"
    nb.mkdir()
    (nb / "renv_notebook_mod.py").write_text("def greet(who):\n    return 'hello ' + who\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KASTOR_")}
    return subprocess.run([sys.executable, "-c", NOTEBOOK, cluster["client"], TOKEN,
                           str(nb / "renv_notebook_mod.py"), how],
                          capture_output=True, text=True, timeout=DEADLINE_S * 2, env=env, cwd="/")


@pytest.mark.parametrize("how", ["py_modules", "job"])
def test_a_notebooks_local_module_reaches_the_workers(cluster, tmp_path, how):
    out = run_notebook(cluster, tmp_path, how)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[-2] == '"hello worker"'


def test_without_a_runtime_env_the_module_is_missing(cluster, tmp_path):
    out = run_notebook(cluster, tmp_path, "none")
    assert out.returncode != 0 and "renv_notebook_mod" in out.stderr
