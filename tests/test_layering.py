"""The import layering (pyproject.toml's [tool.importlinter] contracts) and the rule that no
module reads another object's private attributes.

`lint-imports` (import-linter) needs the package's folders where their import names say:
the checkout maps client/, runtime/ and operator/ onto `kastor`, `kastor.runtime` and
`kastor.operator` (see pyproject.toml), so the test copies them into that shape first.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {"client": "kastor", "runtime": "kastor/runtime", "operator": "kastor/operator"}

# `x._name` reads that are fine, each with why.
ALLOWED_PRIVATE = {
    "os._exit",  # documented public API despite its name: leave without cleanup (a forked or doomed process)
    "atexit._run_exitfuncs",  # an actor's graceful exit runs the atexit handlers before os._exit; no public way
}


def test_import_contracts_hold(tmp_path):
    for folder, target in FOLDERS.items():
        shutil.copytree(REPO / folder, tmp_path / target, ignore=shutil.ignore_patterns("__pycache__"))
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _names_a_module_defines(tree: ast.Module) -> set[str]:
    """Attributes, functions, classes, globals and __slots__ entries a module defines itself:
    reading `other._x` where `_x` is one of them stays inside the module that owns `_x`."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            names.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    return names


def test_no_module_reads_another_objects_private_attributes():
    offenders = []
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            if "_pb2" in path.name:
                continue
            tree = ast.parse(path.read_text(), str(path))
            own = _names_a_module_defines(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.endswith("__"):
                    continue
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                text = ast.unparse(node)
                if node.attr in own or text in ALLOWED_PRIVATE:
                    continue
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {text}")
    assert not offenders, ("these read another module's private attribute; add a public method or function "
                           "to the module that owns it instead:\n" + "\n".join(offenders))


SUBMITTERS = ("runtime/task_submitter.py", "runtime/actor_submitter.py", "runtime/pending.py")
CORE_NAMES = {"core", "CoreWorker", "SubmitterCore"}


def _mentions_of_the_core(tree: ast.Module) -> list[str]:
    """Where a module names the core: a `core` variable, parameter or attribute, or its class."""
    found = []
    for node in ast.walk(tree):
        name = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute)
                else node.arg if isinstance(node, ast.arg) else None)
        if name in CORE_NAMES:
            found.append(f"line {node.lineno}: {name}")
    return found


def test_the_submitters_receive_their_parts_not_the_core():
    """The submitters get the parts of the core they use, built in core.py, never the core:
    runtime/peers.py's Peers (channels, stubs, the head's call, the two addresses) and
    runtime/owned_values.py's OwnedValues (the object table, decode, wait for a value, free)."""
    for path in SUBMITTERS:
        found = _mentions_of_the_core(ast.parse((REPO / path).read_text()))
        assert not found, (f"{path} names the core ({', '.join(found)}): pass it the part it needs instead "
                           f"(Peers, OwnedValues, or a new part that core.py builds)")

    from kastor.runtime.actor_submitter import ActorSubmitter
    from kastor.runtime.owned_values import OwnedValues
    from kastor.runtime.peers import Peers
    from kastor.runtime.task_submitter import TaskSubmitter

    for submitter in (TaskSubmitter, ActorSubmitter):
        hints = typing.get_type_hints(submitter.__init__)
        hints.pop("return", None)
        assert hints == {"peers": Peers, "owned": OwnedValues}, f"{submitter.__name__}.__init__ takes {hints}"
