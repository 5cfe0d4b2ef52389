"""Ending an actor on purpose, as Ray 2.x does (its test_actor_failures.py exit_actor and
__ray_shutdown__ tests): `exit_actor()` from a constructor, a method, a threaded or an async
actor or an asyncio task of one, even when the caller catches its SystemExit; atexit handlers
and `__ray_shutdown__` run on a graceful exit and not on `kill`; a hanging `__ray_shutdown__`
cannot keep the process past the graceful-shutdown timeout."""

import asyncio
import atexit
import os
import pathlib

import kastor
import pytest
from kastor.actor import exit_actor
from kastor.exceptions import ActorDiedError
from support import process_gone, wait_until


@pytest.fixture(autouse=True, scope="module")
def _cluster(embedded_cluster):
    yield


def _touch_at_exit(path: str) -> None:
    atexit.register(lambda: pathlib.Path(path).write_text("atexit"))


@kastor.remote
class Exiter:
    def __init__(self, atexit_file: str, exit_in_constructor: bool = False):
        _touch_at_exit(atexit_file)
        if exit_in_constructor:
            exit_actor()

    def pid(self) -> int:
        return os.getpid()

    def exit(self, after_file: str) -> None:
        exit_actor()
        pathlib.Path(after_file).write_text("ran on")  # never reached

    def exit_and_catch(self) -> str:
        try:
            exit_actor()
        except SystemExit:
            pass
        return "caught"


@kastor.remote
class AsyncExiter:
    def __init__(self, atexit_file: str, exit_in_constructor: bool = False, exit_in_task: bool = False):
        _touch_at_exit(atexit_file)
        if exit_in_constructor:
            exit_actor()
        if exit_in_task:
            asyncio.get_running_loop().create_task(self._exit_later())

    async def _exit_later(self) -> None:
        exit_actor()

    async def pid(self) -> int:
        return os.getpid()

    async def exit(self, after_file: str) -> None:
        exit_actor()
        pathlib.Path(after_file).write_text("ran on")

    async def exit_and_catch(self) -> str:
        try:
            exit_actor()
        except SystemExit:
            pass
        return "caught"

    async def exit_in_a_task(self) -> str:
        asyncio.get_running_loop().create_task(self._exit_later())
        return "started"


def _paths(tmp_path) -> tuple[str, str]:
    return str(tmp_path / "atexit"), str(tmp_path / "after")


@pytest.mark.parametrize("cls", [Exiter, AsyncExiter, Exiter.options(max_concurrency=4)],
                         ids=["sync", "async", "threaded"])
def test_exit_actor_runs_atexit_handlers_and_nothing_after_it(cls, tmp_path):
    atexit_file, after_file = _paths(tmp_path)
    a = cls.remote(atexit_file)
    pid = kastor.get(a.pid.remote(), timeout=30)
    with pytest.raises(ActorDiedError, match=r"exit_actor\(\)"):
        kastor.get(a.exit.remote(after_file), timeout=30)
    wait_until(lambda: os.path.exists(atexit_file), "the actor's atexit handler to run")
    wait_until(lambda: process_gone(pid), "the actor's process to exit")
    assert not os.path.exists(after_file), "code after exit_actor() ran"
    with pytest.raises(ActorDiedError):
        kastor.get(a.pid.remote(), timeout=30)


@pytest.mark.parametrize("cls", [Exiter, AsyncExiter], ids=["sync", "async"])
def test_exit_actor_in_the_constructor_ends_the_actor(cls, tmp_path):
    atexit_file, _ = _paths(tmp_path)
    a = cls.remote(atexit_file, exit_in_constructor=True)
    wait_until(lambda: os.path.exists(atexit_file), "the actor's atexit handler to run")
    with pytest.raises(ActorDiedError, match=r"exit_actor\(\) was called in the constructor") as info:
        kastor.get(a.pid.remote(), timeout=30)
    assert info.value.actor_id == a._actor_id.hex()


@pytest.mark.parametrize("cls", [Exiter, AsyncExiter], ids=["sync", "async"])
def test_a_caught_exit_actor_still_ends_the_actor(cls, tmp_path):
    atexit_file, _ = _paths(tmp_path)
    a = cls.remote(atexit_file)
    with pytest.raises(ActorDiedError, match=r"exit_actor\(\)"):
        kastor.get(a.exit_and_catch.remote(), timeout=30)
    with pytest.raises(ActorDiedError):
        kastor.get(a.pid.remote(), timeout=30)
    wait_until(lambda: os.path.exists(atexit_file), "the actor's atexit handler to run")


def test_exit_actor_in_an_asyncio_task_of_a_method_ends_the_actor(tmp_path):
    atexit_file, _ = _paths(tmp_path)
    a = AsyncExiter.remote(atexit_file)
    pid = kastor.get(a.pid.remote(), timeout=30)
    assert kastor.get(a.exit_in_a_task.remote(), timeout=30) == "started"
    wait_until(lambda: os.path.exists(atexit_file), "the actor's atexit handler to run")
    wait_until(lambda: process_gone(pid), "the actor's process to exit")
    with pytest.raises(ActorDiedError, match=r"exit_actor\(\)"):
        kastor.get(a.pid.remote(), timeout=30)


def test_exit_actor_in_an_asyncio_task_of_the_constructor_ends_the_actor(tmp_path):
    atexit_file, _ = _paths(tmp_path)
    a = AsyncExiter.remote(atexit_file, exit_in_task=True)
    wait_until(lambda: os.path.exists(atexit_file), "the actor's atexit handler to run")
    with pytest.raises(ActorDiedError):
        kastor.get(a.pid.remote(), timeout=30)


@kastor.remote
def calls_exit_actor() -> None:
    exit_actor()


def test_exit_actor_outside_an_actor_is_a_type_error():
    with pytest.raises(TypeError, match="non-actor worker"):
        exit_actor()
    with pytest.raises(TypeError, match="non-actor worker"):
        kastor.get(calls_exit_actor.remote(), timeout=30)


@kastor.remote
class ShutsDown:
    def __init__(self, log_file: str, fail: bool = False, hang: bool = False):
        self.log_file, self.fail, self.hang = log_file, fail, hang
        atexit.register(self._log, "atexit")

    def _log(self, what: str) -> None:
        with open(self.log_file, "a") as f:
            f.write(what + "\n")

    def __ray_shutdown__(self) -> None:
        self._log("shutdown")
        if self.fail:
            raise ValueError("cleanup failed")
        if self.hang:
            import threading
            threading.Event().wait()  # buggy cleanup that never returns

    def pid(self) -> int:
        return os.getpid()


def _lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize("fail", [False, True], ids=["clean", "raising"])
def test_ray_terminate_runs_ray_shutdown_then_atexit(tmp_path, fail):
    log_file = tmp_path / "log"
    a = ShutsDown.remote(str(log_file), fail=fail)
    pid = kastor.get(a.pid.remote(), timeout=30)
    a.__ray_terminate__.remote()
    wait_until(lambda: process_gone(pid), "the actor's process to exit")
    assert _lines(log_file) == ["shutdown", "atexit"]
    with pytest.raises(ActorDiedError, match="__ray_terminate__"):
        kastor.get(a.pid.remote(), timeout=30)


def test_kill_runs_neither_ray_shutdown_nor_atexit(tmp_path):
    log_file = tmp_path / "log"
    a = ShutsDown.remote(str(log_file))
    pid = kastor.get(a.pid.remote(), timeout=30)
    kastor.kill(a)
    wait_until(lambda: process_gone(pid), "the killed actor's process to exit")
    assert _lines(log_file) == []


def test_a_hanging_ray_shutdown_is_cut_off_by_the_graceful_timeout(tmp_path):
    log_file = tmp_path / "log"
    a = ShutsDown.options(runtime_env={"env_vars": {"KASTOR_ACTOR_GRACEFUL_SHUTDOWN_TIMEOUT_S": "1"}}).remote(
        str(log_file), hang=True)
    pid = kastor.get(a.pid.remote(), timeout=30)
    a.__ray_terminate__.remote()
    wait_until(lambda: process_gone(pid), "the actor's process to exit despite its hanging __ray_shutdown__")
    assert _lines(log_file) == ["shutdown"], "the cleanup started, and was cut off before the atexit handlers"
