"""The Kubernetes contract (runtime/k8s_contract.py) and the layering it allows.

The operator, `kastor actor-pod` and cluster discovery share names, exit codes and the
token-Secret rule through one plain module: the runtime must not import the operator, the
operator must not import the runtime's entry points, and the exit codes that end an actor
for good must not collide with the ones any Python program produces by accident.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kastor.operator import spec as operator_spec
from kastor.runtime import k8s_contract as contract
from kastor.runtime import redis_cleanup


def _modules_after(*imports: str) -> set[str]:
    """The kastor modules a fresh interpreter has loaded after these imports."""
    code = "import json, sys\n" + "".join(f"import {m}\n" for m in imports) + \
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('kastor'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_the_runtime_does_not_import_the_operator():
    loaded = _modules_after("kastor.cli", "kastor.kubernetes.actor_pod", "kastor.runtime.k8s_discovery")
    assert not {m for m in loaded if m.startswith("kastor.operator")}


def test_the_operator_does_not_import_the_runtime_entry_points():
    loaded = _modules_after("kastor.operator.handlers")
    entry_points = {"kastor.cli", "kastor.runtime.cli", "kastor.kubernetes.actor_pod", "kastor.runtime.head",
                    "kastor.runtime.node_agent", "kastor.runtime.worker"}
    assert not loaded & entry_points


def test_terminal_exit_codes_are_not_the_ones_python_and_argparse_use():
    assert contract.TERMINAL_EXIT_CODES == {contract.EXIT_BAD_SPEC, contract.EXIT_ACTOR_DEAD}
    assert not contract.TERMINAL_EXIT_CODES & {0, 1, 2}
    assert contract.EXIT_FAILED not in contract.TERMINAL_EXIT_CODES


def test_actor_pod_exits_with_the_contract_codes():
    """A usage error (exit 2, e.g. an image whose CLI differs) is not a verdict on the spec;
    an unimportable class is, and says so with EXIT_BAD_SPEC. Run as the pod runs it: the
    installed `kastor` script (kastor.cli, which adds `actor-pod` to the runtime's commands)."""
    script = Path(sys.executable).with_name("kastor")
    assert script.exists(), f"{script}: the `kastor` script is not installed (pip install -e .)"
    base = [str(script), "actor-pod", "--address", "127.0.0.1:1",
            "--name", "a", "--namespace", "n", "--resource", "r"]
    usage = subprocess.run([*base, "--class", "x:Y", "--no-such-flag"], capture_output=True, text=True, timeout=120,
                           cwd="/")
    assert usage.returncode == 2 and usage.returncode not in contract.TERMINAL_EXIT_CODES
    bad = subprocess.run([*base, "--class", "no_such_module_here:Thing"], capture_output=True, text=True,
                         timeout=120, cwd="/")
    assert bad.returncode == contract.EXIT_BAD_SPEC, bad.stdout + bad.stderr
    assert "ClassNotImportable" in bad.stdout


@pytest.mark.parametrize("auth,secret,key", [
    (None, "demo-token", "token"),
    ({}, "demo-token", "token"),
    ({"secretName": "mine"}, "mine", "token"),
    ({"secretName": "mine", "secretKey": "k"}, "mine", "k"),
])
def test_the_token_secret_rule_is_one_rule(auth, secret, key):
    """The operator (through its parsed spec) and discovery (from the raw spec) read the same Secret."""
    assert contract.token_secret("demo", auth) == secret and contract.token_key(auth) == key
    parsed = operator_spec.parse_cluster({"image": "kastor:dev", **({"auth": auth} if auth is not None else {})})
    assert (parsed.token_secret or contract.token_secret("demo"), parsed.token_key) == (secret, key)


def test_redis_cleanup_is_a_function_with_a_clear_error():
    with pytest.raises(redis_cleanup.CleanupError, match="cluster 'bad id'.*Invalid cluster id"):
        redis_cleanup.clean("127.0.0.1:1", "bad id")
