"""Polling helpers shared by the tests: they wait on a condition with a deadline, never a bare sleep."""

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

DEADLINE_S = 30.0


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
