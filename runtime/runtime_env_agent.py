"""A node agent's half of runtime_env: the per-node cache of packages and virtualenvs.

Given a resolved runtime_env (see runtime_env.py), it returns how to start a worker in it: the
python to run, the cwd and the sys.path entries. Each package URI is downloaded from the head
and unpacked once, into `<session>/runtime_resources/packages/<hash>`; each pip requirement set
gets one virtualenv, `<session>/runtime_resources/pip/<hash>`, made with
`python -m venv --system-site-packages` and pip. Both are built in a temporary directory and
renamed into place, so a crash mid-way never leaves a half-made entry that looks ready.
Concurrent requests for one environment share one setup.

The virtualenv sees the packages of the interpreter that runs Kastor (a `.pth` file adds that
interpreter's site directories after its own), so Kastor and its dependencies need not be
installed again, and what pip installs comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import site
import sys
import tempfile
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kastor.runtime import runtime_env as renv
from kastor.runtime import runtime_env_packaging as packaging

log = logging.getLogger("kastor.runtime_env")

DEFAULT_SETUP_TIMEOUT_S = 600.0  # Ray's setup_timeout_seconds default
_ERROR_TAIL_LINES = 25


class RuntimeEnvSetupFailed(Exception):
    """A runtime_env could not be set up on this node; the message says why and what to fix."""


@dataclass(frozen=True)
class WorkerEnv:
    """How to start a worker in one runtime_env."""
    key: str                                   # the resolved runtime_env's JSON: the worker pool key
    python: str = sys.executable
    cwd: str | None = None
    paths: tuple[str, ...] = ()                # prepended to PYTHONPATH, in this order
    env: dict[str, str] = field(default_factory=dict)

    def process_env(self, base: dict[str, str]) -> dict[str, str]:
        out = dict(base)
        out.update(self.env)
        if self.paths:
            old = base.get("PYTHONPATH", "")
            out["PYTHONPATH"] = os.pathsep.join([*self.paths, *([old] if old else [])])
        out.pop(renv.ENV_RUNTIME_ENV, None)  # never the agent's own (were it started from inside a worker)
        if self.key:
            out[renv.ENV_RUNTIME_ENV] = self.key
        return out


class RuntimeEnvAgent:
    def __init__(self, root: str, fetch: Callable[[str], Awaitable[bytes]]):
        self.root = root
        self._fetch = fetch
        self._ready: dict[str, WorkerEnv] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def setup(self, key: str) -> WorkerEnv:
        """The WorkerEnv of resolved runtime_env `key` ("" is the node's own environment)."""
        if not key:
            return WorkerEnv("")
        ready = self._ready.get(key)
        if ready is not None:
            return ready
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._ready:
                timeout = renv.decode(key).get("config", {}).get("setup_timeout_seconds", DEFAULT_SETUP_TIMEOUT_S)
                try:
                    self._ready[key] = await asyncio.wait_for(self._build(key), None if timeout == -1 else timeout)
                except TimeoutError:
                    raise RuntimeEnvSetupFailed(
                        f"setting it up did not finish within {timeout}s (runtime_env['config']"
                        f"['setup_timeout_seconds']); raise that, or check that this node can reach the package "
                        f"index") from None
        return self._ready[key]

    async def _build(self, key: str) -> WorkerEnv:
        spec = renv.decode(key)
        cwd = None
        paths: list[str] = []
        if spec.get("working_dir"):
            cwd = await self._package(spec["working_dir"])
            paths.append(cwd)
        for uri in spec.get("py_modules", []):
            paths.append(await self._package(uri))
        python, env = sys.executable, {}
        for tool in ("pip", "uv"):
            if spec.get(tool):
                python = await self._virtualenv(tool, spec[tool])
                # As an activated virtualenv: programs the work starts find its python and scripts.
                venv_bin = os.path.dirname(python)
                env = {"VIRTUAL_ENV": os.path.dirname(venv_bin),
                       "PATH": os.pathsep.join([venv_bin, *([os.environ["PATH"]] if os.environ.get("PATH") else [])])}
        return WorkerEnv(key, python=python, cwd=cwd, paths=tuple(paths), env=env)

    # ---- packages ----

    async def _package(self, uri: str) -> str:
        if not packaging.is_package_uri(uri):
            raise RuntimeEnvSetupFailed(f"unsupported package URI {uri!r} (Kastor ships local directories only)")
        name = uri.removeprefix(packaging.URI_SCHEME).split("/", 1)[0].removesuffix(".zip")
        target = os.path.join(self.root, "packages", name)
        if os.path.isdir(target):
            return target
        try:
            data = await self._fetch(uri)
        except Exception as e:
            raise RuntimeEnvSetupFailed(f"could not download package {uri} from the head: {e}") from e
        await asyncio.to_thread(_unpack, data, target)
        log.info("unpacked runtime_env package %s into %s", uri, target)
        return target

    # ---- pip ----

    async def _virtualenv(self, tool: str, requirements: dict) -> str:
        packages, options = list(requirements.get("packages", [])), list(requirements.get("pip_install_options", []))
        digest = hashlib.sha1(json.dumps([packages, options, sys.executable]).encode()).hexdigest()
        target = os.path.join(self.root, "pip", digest)
        python = os.path.join(target, "bin", "python")
        if os.path.exists(python):
            return python
        os.makedirs(os.path.dirname(target), exist_ok=True)
        building = tempfile.mkdtemp(prefix=f".{digest}-", dir=os.path.dirname(target))
        try:
            await _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", building],
                       f"creating a virtualenv for runtime_env[{tool!r}]", packages)
            _link_parent_site(building)
            if packages:
                await _run([sys.executable, "-m", "pip", "--python", os.path.join(building, "bin", "python"),
                            "install", "--disable-pip-version-check", "--no-input", *options, *packages],
                           f"pip install {' '.join(packages)}", packages)
            # venv scripts hard-code their directory; the python symlink does not, so renaming is safe.
            os.rename(building, target)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        log.info("runtime_env %s: installed %s into %s", tool, packages, target)
        return python


def _unpack(data: bytes, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    building = tempfile.mkdtemp(prefix=".unpack-", dir=os.path.dirname(target))
    try:
        import io
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            z.extractall(building)  # zipfile drops absolute paths and ".." parts
        try:
            os.rename(building, target)
        except OSError:  # another setup got there first: same content, keep theirs
            shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _link_parent_site(venv_dir: str) -> None:
    """Makes the interpreter running Kastor's site directories visible in the new virtualenv."""
    lib = os.path.join(venv_dir, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages")
    os.makedirs(lib, exist_ok=True)
    parents = [p for p in (*site.getsitepackages(), site.getusersitepackages()) if os.path.isdir(p)]
    with open(os.path.join(lib, "_kastor_parent_site.pth"), "w") as f:
        f.write("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in parents) + "\n")


async def _run(argv: list[str], what: str, packages: list[str]) -> None:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    # A session of its own: `pip --python` runs a second pip, which must end with the first.
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True)
    try:
        out, _ = await proc.communicate()
    except BaseException:  # the setup timed out (or the agent stops): the install must not go on
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        tail = "\n".join(out.decode(errors="replace").rstrip().splitlines()[-_ERROR_TAIL_LINES:])
        raise RuntimeEnvSetupFailed(f"{what} failed (exit code {proc.returncode}) for requirements {packages}. "
                                    f"Check the names and versions, and that this node can reach the package "
                                    f"index. pip said:\n{tail}")
