"""Polling helpers shared by the tests: they wait on a condition with a deadline, never a bare sleep."""

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

DEADLINE_S = 30.0


def _bench_module(name: str):
    """A module of bench/ (not a package, and not on the tests' path), loaded once by file."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


proctree = _bench_module("proctree")  # the process tree below a pid, from /proc (one reader for bench and tests)


def wait_until(predicate, what: str, timeout: float = DEADLINE_S) -> None:
    """Polls `predicate` until it is true; fails the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.05)


def process_gone(pid: int) -> bool:
    """True once `pid` no longer exists (reaped or never existed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class PersistedSeqs:
    """The state of the fault-injection suites' actors (test_fencing's Ledger, the reliability
    ledger's PersistingCounter): every sequence number a call applied, persisted atomically after
    each call (a checkpoint the constructor reloads, so a restarted instance resumes from it),
    plus one line per call in a windows file, `<instance> <start> <end>` on the monotonic clock
    (one clock for every process on the host), so that two live instances show up both as
    overlapping windows and as acknowledged calls missing from the persisted list."""

    def __init__(self, state_path: str, windows_path: str, instance: str):
        self.state_path, self.windows_path, self.instance = state_path, windows_path, instance
        try:
            with open(state_path) as f:
                self.seqs: list[int] = json.load(f)
        except FileNotFoundError:
            self.seqs = []

    def apply(self, seq: int) -> int:
        """Appends `seq`, persists the whole list, logs the call's window; returns how many are held."""
        start = time.monotonic()
        self.seqs.append(seq)
        tmp = f"{self.state_path}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.seqs, f)
        os.replace(tmp, self.state_path)
        end = time.monotonic()
        with open(self.windows_path, "a") as f:
            f.write(f"{self.instance} {start} {end}\n")
        return len(self.seqs)


class SerialLog:
    """A serial actor's state (the default kind: the one whose calls take a caller's lane and run
    on its worker's main thread) that logs what it was given. A plain class: each module makes
    its actor with `@kastor.remote class Log(SerialLog)` (an actor class cannot be subclassed),
    adding the methods only it needs."""

    def __init__(self):
        self.seen = []

    def add(self, x):
        self.seen.append(x)
        return x

    def items(self):
        return self.seen

    def pid(self):
        return os.getpid()

    def data_address(self) -> str:
        """Its worker's data port, host:port."""
        from kastor.runtime import context
        host = context.core.address.rpartition(":")[0]
        return f"{host}:{context.core.data_port()}"

    def addresses(self):
        """Its worker's gRPC address and data port."""
        from kastor.runtime import context
        return context.core.address, self.data_address()

    def hold(self, gate: str, x):
        """Marks that it runs, then runs until the file `gate` exists (or it is interrupted)."""
        open(gate + ".started", "w").close()
        while not os.path.exists(gate):
            time.sleep(0.005)
        self.seen.append(x)
        return x

    def once(self, gate: str):
        """Holds for ever on its first run (it is killed there); answers on the retry."""
        if os.path.exists(gate + ".ran"):
            return "retried"
        open(gate + ".ran", "w").close()
        return self.hold(gate, "first run")


def kill_once_started(gate: str, pid: int) -> threading.Thread:
    """SIGKILLs `pid` once SerialLog.hold's call on `gate` started, from a thread (started; join it)."""
    def kill() -> None:
        wait_until(lambda: os.path.exists(gate + ".started"), "the held call to start")
        os.kill(pid, signal.SIGKILL)
    t = threading.Thread(target=kill)
    t.start()
    return t


class Captured:
    """Everything this process has written to stdout and stderr so far in a test (from capsys)."""

    def __init__(self, capsys):
        self._capsys = capsys
        self.out = self.err = ""

    def read(self) -> "Captured":
        got = self._capsys.readouterr()
        self.out += got.out
        self.err += got.err
        return self

    def wait_out(self, text: str) -> None:
        self._wait(text, "out")

    def wait_err(self, text: str) -> None:
        self._wait(text, "err")

    def _wait(self, text: str, stream: str) -> None:
        try:
            wait_until(lambda: text in getattr(self.read(), stream), f"{text!r} on std{stream}")
        except pytest.fail.Exception as e:
            pytest.fail(f"{e}; it has {getattr(self, stream)[-2000:]!r}")


@contextlib.contextmanager
def cli_head(session_root, token: str, *args: str, **env_extra: str) -> Iterator[dict]:
    """`kastor start --head --block` as a pod runs it (a head and a 2-CPU node, on a free port);
    yields its control address, its process and its environment, and stops it afterwards."""
    from kastor.runtime import launcher

    port = launcher.free_port()
    env = dict(os.environ, KASTOR_TOKEN=token, KASTOR_SESSION_ROOT=str(session_root), **env_extra)
    env.pop("KASTOR_ADDRESS", None)
    head = subprocess.Popen([sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--block", "--port",
                             str(port), "--num-cpus", "2", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = head.stdout.readline()
        assert "started" in line, line + head.stdout.read()
        yield {"head": f"127.0.0.1:{port}", "proc": head, "env": env}
    finally:
        head.terminate()
        head.wait(30)


@contextlib.contextmanager
def embedded_cluster_with_receive_timeout(seconds: float) -> Iterator[dict]:
    """`kastor.init()` whose processes drop a stalled request or frame after `seconds` (they read
    KASTOR_RECEIVE_TIMEOUT_S when they start); the variable is put back at once."""
    import kastor
    from kastor.runtime import receive_deadline

    old = os.environ.get(receive_deadline.ENV_RECEIVE_TIMEOUT)
    os.environ[receive_deadline.ENV_RECEIVE_TIMEOUT] = str(seconds)
    try:
        info = kastor.init(num_cpus=2)
    finally:
        if old is None:
            del os.environ[receive_deadline.ENV_RECEIVE_TIMEOUT]
        else:
            os.environ[receive_deadline.ENV_RECEIVE_TIMEOUT] = old
    try:
        yield info
    finally:
        kastor.shutdown()
