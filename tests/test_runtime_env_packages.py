"""runtime_env working_dir, py_modules and pip, as in Ray 2.x, on a Redis-backed two-node cluster.

Local code is shipped from the driver: zipped, uploaded to the head once by content hash,
unpacked once per node; workers start in it (cwd, sys.path) and are reused only for work in the
same environment. Modules are loaded here from files in tmp_path that no sys.path entry
names, so a worker can only import them if the runtime_env shipped them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import cloudpickle
import kastor
import pytest
from gcs_cluster import TOKEN, driven_cluster
from kastor.exceptions import ActorDiedError, RuntimeEnvSetupError, TaskError
from kastor.runtime import runtime_env_packaging as packaging
from kastor.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from redis_server import RedisServer
from support import wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])

DEADLINE_S = 120  # a pip install on a loaded machine
NODES = ("n1", "n2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("renv")
    redis = RedisServer(tmp / "redis-data")
    redis.data_dir.mkdir()
    redis.start()
    mp = pytest.MonkeyPatch()
    try:
        with driven_cluster(tmp, redis, mp, nodes=NODES) as c:
            yield c
    finally:
        mp.undo()
        redis.stop()


def on(node: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node, soft=False)


def make_module(directory, name: str, value: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(f"VALUE = {value!r}\n")
    return str(path)


@kastor.remote(max_retries=0)
def import_value(name: str) -> tuple[str, str]:
    import importlib
    module = importlib.import_module(name)
    return module.VALUE, module.__file__


@kastor.remote(max_retries=0)
def where_am_i(name: str) -> dict:
    import importlib
    return {"cwd": os.getcwd(), "data": open("data.txt").read(), "secret": os.path.exists("secret.txt"),
            "git": os.path.exists(".git"), "ignored": os.path.exists("build"),
            "module": importlib.import_module(name).VALUE}


@kastor.remote(max_retries=0)
def nested_import(name: str) -> tuple[str, str]:
    return kastor.get(import_value.remote(name))


@kastor.remote
class Importer:
    def __init__(self, name: str):
        import importlib
        self.value = importlib.import_module(name).VALUE

    def values(self, name: str) -> tuple[str, tuple[str, str]]:
        return self.value, kastor.get(import_value.remote(name))


# ---- packing, without a cluster ----

def test_a_package_leaves_out_git_excludes_and_gitignored_files_and_is_keyed_by_content(tmp_path):
    wd = tmp_path / "wd"
    (wd / ".git").mkdir(parents=True)
    (wd / ".git" / "HEAD").write_text("ref")
    (wd / "sub" / "build").mkdir(parents=True)
    (wd / "sub" / "build" / "out.o").write_text("x")
    (wd / "sub" / "keep.py").write_text("k = 1")
    (wd / "secret.txt").write_text("s")
    (wd / "notes.log").write_text("l")
    (wd / ".gitignore").write_text("*.log\nbuild/\n")
    (wd / "sub" / "loop").symlink_to(wd / "sub")  # walked once, not for ever
    first = packaging.pack_working_dir(str(wd), ["secret.txt"])
    names = sorted(zipfile.ZipFile(__import__("io").BytesIO(first.data)).namelist())
    assert names == [".gitignore", "sub/keep.py"]
    assert packaging.pack_working_dir(str(wd), ["secret.txt"]) == first, "same content, same URI and bytes"
    (wd / "sub" / "keep.py").write_text("k = 2")
    assert packaging.pack_working_dir(str(wd), ["secret.txt"]).uri != first.uri


def test_an_oversized_package_names_the_limit_and_its_largest_file(tmp_path, monkeypatch):
    wd = tmp_path / "big"
    wd.mkdir()
    (wd / "data.bin").write_bytes(os.urandom(4096))
    monkeypatch.setenv("KASTOR_RUNTIME_ENV_MAX_PACKAGE_BYTES", "1024")
    with pytest.raises(ValueError, match=r"over the .* limit .*data\.bin"):
        packaging.pack_working_dir(str(wd), [])


# ---- on the cluster ----

def test_working_dir_is_the_cwd_and_on_sys_path_on_every_node(cluster, tmp_path):
    wd = tmp_path / "project"
    make_module(wd, "renv_wd_helper", "from-working-dir")
    (wd / "data.txt").write_text("payload")
    (wd / "secret.txt").write_text("do not ship")
    (wd / "build").mkdir()
    (wd / "build" / "x").write_text("x")
    (wd / ".git").mkdir()
    (wd / ".gitignore").write_text("build/\n")
    env = {"working_dir": str(wd), "excludes": ["secret.txt"]}
    seen = kastor.get([where_am_i.options(runtime_env=env, scheduling_strategy=on(n)).remote("renv_wd_helper")
                       for n in NODES], timeout=DEADLINE_S)
    for node, got in zip(NODES, seen, strict=True):
        assert got["data"] == "payload" and got["module"] == "from-working-dir"
        assert not got["secret"] and not got["git"] and not got["ignored"]
        assert f"session-{node}" in got["cwd"] and "runtime_resources" in got["cwd"], got
    assert os.path.basename(seen[0]["cwd"]) == os.path.basename(seen[1]["cwd"]), "one content hash on all nodes"


def test_py_modules_reach_the_task_and_workers_are_reused_only_in_the_same_env(cluster, tmp_path):
    module = make_module(tmp_path / "mods", "renv_pymod_probe", "shipped")
    env = {"py_modules": [module]}
    refs = [import_value.options(runtime_env=env if i % 2 == 0 else None, scheduling_strategy=on("n1"))
            .remote("renv_pymod_probe") for i in range(6)]
    for i, ref in enumerate(refs):
        if i % 2 == 0:
            value, file = kastor.get(ref, timeout=DEADLINE_S)
            assert value == "shipped" and "runtime_resources" in file
        else:
            with pytest.raises(TaskError, match="renv_pymod_probe"):
                kastor.get(ref, timeout=DEADLINE_S)


def test_an_edited_module_reaches_the_next_calls(cluster, tmp_path):
    """As a notebook user expects: edit the module, call again, the new code runs."""
    module = make_module(tmp_path / "mods", "renv_edited_probe", "v1")
    env = {"py_modules": [module]}
    assert kastor.get(import_value.options(runtime_env=env).remote("renv_edited_probe"), timeout=DEADLINE_S)[0] == "v1"
    make_module(tmp_path / "mods", "renv_edited_probe", "v2-longer")
    wait_until(lambda: kastor.get(import_value.options(runtime_env=env).remote("renv_edited_probe"),
                                  timeout=DEADLINE_S)[0] == "v2-longer", "the edited module to be shipped")


def test_a_package_directory_in_py_modules_keeps_its_name(cluster, tmp_path):
    pkg = tmp_path / "lib" / "renv_pkg_probe"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("VALUE = 'package'\n")
    got = kastor.get(import_value.options(runtime_env={"py_modules": [str(pkg)]}).remote("renv_pkg_probe"),
                     timeout=DEADLINE_S)
    assert got[0] == "package"


def test_actors_and_nested_work_inherit_the_runtime_env(cluster, tmp_path):
    module = make_module(tmp_path / "mods", "renv_inherit_probe", "inherited")
    env = {"py_modules": [module]}
    assert kastor.get(nested_import.options(runtime_env=env).remote("renv_inherit_probe"),
                      timeout=DEADLINE_S)[0] == "inherited"
    actor = Importer.options(runtime_env=env).remote("renv_inherit_probe")
    value, (nested, _) = kastor.get(actor.values.remote("renv_inherit_probe"), timeout=DEADLINE_S)
    assert value == nested == "inherited"


def test_the_runtime_context_reports_the_shipped_uris(cluster, tmp_path):
    module = make_module(tmp_path / "mods", "renv_ctx_probe", "x")

    @kastor.remote
    def runtime_env_string() -> str:
        return kastor.get_runtime_context().get_runtime_env_string()

    import json
    got = json.loads(kastor.get(runtime_env_string.options(
        runtime_env={"py_modules": [module], "env_vars": {"A": "1"}}).remote(), timeout=DEADLINE_S))
    assert got["env_vars"] == {"A": "1"}
    assert len(got["py_modules"]) == 1 and got["py_modules"][0].startswith(packaging.URI_SCHEME)

    @kastor.remote
    def typed_runtime_env() -> dict:
        return kastor.get_runtime_context().runtime_env.to_dict()

    typed = kastor.get(typed_runtime_env.options(runtime_env={"py_modules": [module]}).remote(), timeout=DEADLINE_S)
    assert typed == {"py_modules": got["py_modules"]}, "the same package, by the same URI"


def test_rays_typed_runtime_env_works_as_the_dict(cluster, tmp_path):
    from kastor.runtime_env import RuntimeEnv, RuntimeEnvConfig
    module = make_module(tmp_path / "mods", "renv_typed_probe", "typed")
    env = RuntimeEnv(py_modules=[module], config=RuntimeEnvConfig(setup_timeout_seconds=60))
    got = kastor.get(import_value.options(runtime_env=env).remote("renv_typed_probe"), timeout=DEADLINE_S)
    assert got[0] == "typed"
    with pytest.raises(ValueError, match="Unknown runtime_env field 'wrking_dir'"):
        RuntimeEnv(wrking_dir=str(tmp_path))


def test_bad_runtime_envs_fail_at_the_call_site(cluster, tmp_path):
    with pytest.raises(ValueError, match="working_dir.*does not exist"):
        import_value.options(runtime_env={"working_dir": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="Unknown runtime_env field 'wrking_dir'"):
        import_value.options(runtime_env={"wrking_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="conda.*not supported"):
        Importer.options(runtime_env={"conda": "env"})
    with pytest.raises(ValueError, match="py_modules.*does not exist"):
        import_value.options(runtime_env={"py_modules": [str(tmp_path / "nope.py")]})


def test_an_oversized_working_dir_fails_at_remote(cluster, tmp_path, monkeypatch):
    wd = tmp_path / "big"
    wd.mkdir()
    (wd / "huge.bin").write_bytes(os.urandom(8192))
    monkeypatch.setenv("KASTOR_RUNTIME_ENV_MAX_PACKAGE_BYTES", "4096")
    with pytest.raises(ValueError, match=r"huge\.bin"):
        import_value.options(runtime_env={"working_dir": str(wd)}).remote("x")


def build_wheel(directory, name: str, value: str) -> str:
    """A pure-Python wheel made by hand, so installing it needs no network and no build backend."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {f"{name}/__init__.py": f"VALUE = {value!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: kastor-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for n, text in files.items():
            z.writestr(n, text)
    return str(path)


@kastor.remote(max_retries=0)
def import_with_python(name: str) -> tuple[str, str, str | None]:
    import importlib
    import shutil
    return importlib.import_module(name).VALUE, sys.executable, shutil.which("python")


def test_pip_installs_into_a_per_node_virtualenv(cluster, tmp_path):
    wheel = build_wheel(tmp_path / "wheels", "kastor_renv_wheel_probe", "from-pip")
    env = {"pip": [wheel]}
    value, python, on_path = kastor.get(import_with_python.options(runtime_env=env, scheduling_strategy=on("n2"))
                                        .remote("kastor_renv_wheel_probe"), timeout=DEADLINE_S)
    assert value == "from-pip" and "runtime_resources" in python and python != sys.executable
    assert on_path == python, "the virtualenv is first on PATH, as if activated"
    with pytest.raises(TaskError, match="kastor_renv_wheel_probe"):
        kastor.get(import_with_python.options(scheduling_strategy=on("n2")).remote("kastor_renv_wheel_probe"),
                   timeout=DEADLINE_S)


def test_a_wheel_in_py_modules_is_importable_without_pip(cluster, tmp_path):
    wheel = build_wheel(tmp_path / "wheels", "kastor_renv_pymod_wheel", "from-wheel")
    value, file = kastor.get(import_value.options(runtime_env={"py_modules": [wheel]})
                             .remote("kastor_renv_pymod_wheel"), timeout=DEADLINE_S)
    assert value == "from-wheel" and "runtime_resources" in file


def test_a_failed_pip_install_is_a_runtime_env_setup_error_naming_the_package(cluster, tmp_path):
    missing = str(tmp_path / "kastor_no_such_pkg-1.0-py3-none-any.whl")
    with pytest.raises(RuntimeEnvSetupError, match=r"(?s)kastor_no_such_pkg.*pip said"):
        kastor.get(import_value.options(runtime_env={"pip": [missing]}).remote("x"), timeout=DEADLINE_S)
    actor = Importer.options(runtime_env={"pip": [missing]}).remote("x")
    with pytest.raises(ActorDiedError, match="(?s)runtime_env of actor Importer could not be set up.*pip said"):
        kastor.get(actor.values.remote("x"), timeout=DEADLINE_S)


def test_a_setup_that_outlasts_setup_timeout_seconds_fails_naming_it(cluster, tmp_path):
    import socket
    with socket.socket() as silent:  # a package index that accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        index = f"http://127.0.0.1:{silent.getsockname()[1]}/simple"
        env = {"pip": {"packages": ["kastor-renv-never-served"], "pip_install_options": ["--index-url", index]},
               "config": {"setup_timeout_seconds": 3}}
        with pytest.raises(RuntimeEnvSetupError, match=r"did not finish within 3s .*setup_timeout_seconds"):
            kastor.get(import_value.options(runtime_env=env).remote("x"), timeout=DEADLINE_S)
    with pytest.raises(ValueError, match="setup_timeout_seconds"):
        import_value.options(runtime_env={"config": {"setup_timeout_seconds": 0}})


JOB_DRIVER = """
import os, sys, kastor
kastor.init(sys.argv[1], token=sys.argv[2], runtime_env={"working_dir": sys.argv[3]})

@kastor.remote
def read():
    import renv_job_helper
    return renv_job_helper.VALUE + ":" + open("data.txt").read()

@kastor.remote
def both():
    import renv_job_extra
    return kastor.get(read.remote()) + "+" + renv_job_extra.VALUE

print(kastor.get(read.remote(), timeout=120))
print(kastor.get(both.options(runtime_env={"py_modules": [sys.argv[4]]}).remote(), timeout=120))
"""


def test_a_jobs_working_dir_reaches_all_its_work_and_a_tasks_fields_add_to_it(cluster, tmp_path):
    wd = tmp_path / "job"
    make_module(wd, "renv_job_helper", "job-module")
    (wd / "data.txt").write_text("job-data")
    extra = make_module(tmp_path / "extra", "renv_job_extra", "extra")
    env = dict(os.environ, KASTOR_TOKEN=TOKEN)
    out = subprocess.run([sys.executable, "-c", JOB_DRIVER, cluster.address, TOKEN, str(wd), extra],
                         capture_output=True, text=True, timeout=DEADLINE_S, env=env, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    # The task's py_modules replace nothing of the job's working_dir (Ray merges field by field),
    # and the nested task inherits both.
    assert out.stdout.split() == ["job-module:job-data", "job-module:job-data+extra"]


def test_the_head_refuses_what_is_not_a_package_uri(cluster):
    import grpc
    from kastor.api import _core
    from kastor.runtime.protocol import kastor_pb2 as pb
    with pytest.raises(grpc.RpcError, match="not a package URI"):
        _core().head_call("PutPackage", pb.Package(uri="file:///etc/passwd", data=b""))



LOCAL_DRIVER = """
import os, sys, kastor
kastor.init(num_cpus=1, runtime_env={"working_dir": sys.argv[1]})

@kastor.remote
def read():
    import renv_local_helper
    return renv_local_helper.VALUE + ":" + os.path.basename(os.path.dirname(os.getcwd()))

print(kastor.get(read.remote(), timeout=120))
"""


def test_a_notebooks_embedded_cluster_gets_its_working_dir_too(tmp_path):
    wd = tmp_path / "nb"
    make_module(wd, "renv_local_helper", "local")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KASTOR_")}
    env["KASTOR_SESSION_ROOT"] = str(tmp_path / "sessions")
    out = subprocess.run([sys.executable, "-c", LOCAL_DRIVER, str(wd)], capture_output=True, text=True,
                         timeout=DEADLINE_S, env=env, cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["local:packages"]


CONTEXT_DRIVER = """
import sys, kastor
kastor.init(sys.argv[1], token=sys.argv[2])

@kastor.remote
def env_string():
    return kastor.get_runtime_context().get_runtime_env_string()

print(kastor.get(env_string.remote(), timeout=120))
"""


def test_a_node_started_from_inside_a_worker_does_not_pass_that_workers_env_on(tmp_path):
    from support import cli_head
    inherited = '{"py_modules":["kastor-pkg://0000.zip"]}'
    with cli_head(tmp_path / "sessions", TOKEN, KASTOR_RUNTIME_ENV=inherited) as head:
        env = {k: v for k, v in head["env"].items() if k != "KASTOR_RUNTIME_ENV"}
        out = subprocess.run([sys.executable, "-c", CONTEXT_DRIVER, head["head"], TOKEN], capture_output=True,
                             text=True, timeout=DEADLINE_S, env=env, cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["{}"]
