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


def _core_attributes_used(tree: ast.Module) -> set[str]:
    """The attributes read off the core: `self.core.x`, or `core.x` where a function got it as `core`."""
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = node.value
            if (isinstance(base, ast.Attribute) and base.attr == "core" and isinstance(base.value, ast.Name)
                    and base.value.id == "self") or (isinstance(base, ast.Name) and base.id == "core"):
                used.add(node.attr)
    return used


def test_the_submitters_use_only_the_named_interface_of_the_core():
    """The submitters receive the core but are typed against runtime/submitter_core.py's
    SubmitterCore: anything else they read of the core must be added there first."""
    from kastor.runtime.submitter_core import SubmitterCore

    named = set()
    for cls in SubmitterCore.__mro__:
        named |= set(vars(cls)) | set(vars(cls).get("__annotations__", {}))
    for path in SUBMITTERS:
        used = _core_attributes_used(ast.parse((REPO / path).read_text()))
        assert used, f"{path} no longer reads the core: drop it from SUBMITTERS"
        assert used <= named, (f"{path} uses {sorted(used - named)} of the core, which SubmitterCore "
                               f"(runtime/submitter_core.py) does not name: add them there, or pass them in")
