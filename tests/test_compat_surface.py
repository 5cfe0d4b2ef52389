"""Small parts of Ray's public surface: `import ray.cloudpickle`, `ray.ObjectID`,
`ray.util.inspect_serializability` and `ray --version`, under Kastor's names."""

import importlib
import io
import subprocess
import sys
import threading

import kastor


def test_cloudpickle_is_a_module():
    module = importlib.import_module("kastor.cloudpickle")
    assert module is kastor.cloudpickle
    from kastor.cloudpickle import dumps, loads
    assert loads(dumps(lambda x: x + 1))(1) == 2


def test_object_id_is_object_ref():
    assert kastor.ObjectID is kastor.ObjectRef


class Holder:
    def __init__(self):
        self.fine = [1, 2]
        self.lock = threading.Lock()


def test_inspect_serializability_finds_the_innermost_culprit():
    lock = threading.Lock()

    def uses_lock():
        return lock

    out = io.StringIO()
    ok, failures = kastor.util.inspect_serializability(uses_lock, name="uses_lock", print_file=out)
    assert not ok
    assert {(f.name, f.parent) for f in failures} == {("lock", "uses_lock")}
    assert "cannot pickle '_thread.lock' object" in out.getvalue()

    ok, failures = kastor.util.inspect_serializability(Holder(), name="holder", print_file=out)
    assert not ok and {f.name for f in failures} == {"lock"}

    ok, failures = kastor.util.inspect_serializability({"a": [1, 2]}, print_file=out)
    assert ok and failures == set()


def test_cli_version():
    out = subprocess.run([sys.executable, "-m", "kastor.runtime.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"kastor {kastor.__version__}"
