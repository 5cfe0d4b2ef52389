"""MkDocs hook: the pages' generated sections, made from the files they describe at build time.

A page asks for a generated section with a marker line of its own, for example
``<!-- generate: crd crds/kastor.dev_actorclusters.yaml -->``. Generating at build time (rather
than checking in rendered tables) means the CRD field reference, the Helm values, the
environment-variable table and the CLI's help cannot drift from ``crds/``, ``charts/``, the
settings module and the CLI itself.

Every problem fails the build with a ``PluginError`` that names the marker, the file and the
fix: an unknown generator, a missing file, or a settings module that cannot be imported. The
build is strict, so a page is never published with a hole where a table should be.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import re
import subprocess
import sys
from typing import Any

import yaml
from mkdocs.exceptions import PluginError

ROOT = pathlib.Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- generate: (?P<kind>[a-z-]+)(?: (?P<arg>\S+))? -->$", re.MULTILINE)
SETTINGS_MODULE = "kastor.runtime.settings"


def _cell(value: object) -> str:
    """A Markdown table cell: pipes escaped, newlines folded, code quoted."""
    text = str(value).replace("|", "\\|").replace("\n", " ").strip()
    return text


def prose(text: object) -> str:
    """A description as a table cell: Markdown's emphasis and HTML characters outside `code` kept literal.

    Descriptions name identifiers such as ``__ray_shutdown__``, which Markdown would turn bold.
    """
    parts = re.split(r"(`[^`]*`)", str(text).replace("\n", " ").strip())
    escaped = "".join(part if part.startswith("`") else re.sub(r"([*_\[\]])", r"\\\1", part).replace("<", "&lt;")
                      for part in parts)
    return escaped.replace("|", "\\|")


def _code(value: object) -> str:
    if value is None or value == "":
        return ""
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("\n...").strip()
    return "`" + _cell(text) + "`"


def _load_yaml(relative: str, marker: str) -> Any:
    path = ROOT / relative
    if not path.is_file():
        raise PluginError(f"{marker}: {relative} does not exist (paths are relative to the repository root)")
    return yaml.safe_load(path.read_text())


# ---------------------------------------------------------------------------------------------
# CRD field reference


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    for key, word in (("minimum", "≥"), ("maximum", "≤")):
        if key in schema:
            parts.append(f"{word} {schema[key]}")
    for key, word in (("minLength", "min length"), ("maxLength", "max length")):
        if key in schema:
            parts.append(f"{word} {schema[key]}")
    if "pattern" in schema:
        parts.append(f"pattern `{_cell(schema['pattern'])}`")
    if "format" in schema:
        parts.append(f"format {schema['format']}")
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        parts.append("free-form")
    if "x-kubernetes-list-map-keys" in schema:
        parts.append("a map keyed by " + ", ".join(f"`{k}`" for k in schema["x-kubernetes-list-map-keys"]))
    for rule in schema.get("x-kubernetes-validations", []):
        parts.append(f"rule: {_cell(rule.get('message', rule['rule']))}")
    return "; ".join(parts)


def _type(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "")
    if kind == "array":
        return f"array of {schema.get('items', {}).get('type', 'any')}"
    if kind == "object" and "additionalProperties" in schema:
        return f"map of {schema['additionalProperties'].get('type', 'any')}"
    return kind


def _walk(schema: dict[str, Any], path: str, required: bool, rows: list[str]) -> None:
    description = schema.get("description", "")
    rows.append(f"| `{path}` | {_type(schema)} | {'yes' if required else ''} | {_code(schema.get('default'))} "
                f"| {_cell(_constraints(schema))} | {prose(description)} |")
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        item = schema["items"]
        needed = set(item.get("required", []))
        for rule in item.get("x-kubernetes-validations", []):
            rows.append(f"| `{path}[]` | object | | | rule: {_cell(rule.get('message', rule['rule']))} | |")
        for name, sub in item.get("properties", {}).items():
            _walk(sub, f"{path}[].{name}", name in needed, rows)
        return
    needed = set(schema.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        _walk(sub, f"{path}.{name}", name in needed, rows)


def crd_reference(relative: str, marker: str) -> str:
    """Every field of a CRD's spec and status: type, required, default, constraints, description."""
    crd = _load_yaml(relative, marker)
    try:
        names = crd["spec"]["names"]
        versions = crd["spec"]["versions"]
    except (KeyError, TypeError) as err:
        raise PluginError(f"{marker}: {relative} is not a CustomResourceDefinition (no spec.{err})") from err
    out = []
    for version in versions:
        root = version["schema"]["openAPIV3Schema"]
        short = ", ".join(f"`{s}`" for s in names.get("shortNames", []))
        out.append(f"### {names['kind']} (`{crd['spec']['group']}/{version['name']}`)\n")
        out.append(f"Plural `{names['plural']}`" + (f", short names {short}" if short else "")
                   + f", {crd['spec']['scope'].lower()}. Generated from `{relative}`.\n")
        whole = root.get("x-kubernetes-validations", [])
        if whole:  # rules on the object as a whole (its name, say), checked at admission
            out.append("Admission rules on the whole object:\n\n"
                       + "\n".join(f"- {_cell(r.get('message', r['rule']))}" for r in whole) + "\n")
        for part in ("spec", "status"):
            if part not in root.get("properties", {}):
                continue
            rows = ["| field | type | required | default | constraints | description |",
                    "| --- | --- | --- | --- | --- | --- |"]
            schema = root["properties"][part]
            needed = set(schema.get("required", []))
            for rule in schema.get("x-kubernetes-validations", []):
                rows.append(f"| `{part}` | object | | | rule: {_cell(rule.get('message', rule['rule']))} | |")
            for name, sub in schema.get("properties", {}).items():
                _walk(sub, f"{part}.{name}", name in needed, rows)
            out.append(f"#### `{part}`\n\n" + "\n".join(rows) + "\n")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Helm values


def _leaves(value: Any, path: str, rows: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            _leaves(sub, f"{path}.{key}" if path else str(key), rows)
    else:
        rows.append((path, value))


def helm_values(relative: str, marker: str) -> str:
    """A chart's values: a table of every key and its default, then the commented file itself."""
    values = _load_yaml(relative, marker)
    if not isinstance(values, dict):
        raise PluginError(f"{marker}: {relative} is not a mapping of Helm values")
    rows: list[tuple[str, Any]] = []
    _leaves(values, "", rows)
    table = ["| key | default |", "| --- | --- |"]
    empty = '`""`'
    table += [f"| `{key}` | {_code(default) or empty} |" for key, default in rows]
    text = (ROOT / relative).read_text()
    return (f"Generated from `{relative}`.\n\n" + "\n".join(table)
            + f"\n\nThe file, with its comments:\n\n```yaml\n{text.rstrip()}\n```\n")


# ---------------------------------------------------------------------------------------------
# Environment variables


def _env_default(default: object) -> str:
    """A default as Python reads it back from the environment's string: `60.0`, `kastor`, `""`."""
    if default is None:
        return "unset"
    return "`" + _cell(str(default)) + "`" if str(default) else '`""`'


def load_settings(marker: str) -> list[Any]:
    """``all_settings()`` of the settings module, or a build error that says how to fix it."""
    try:
        module = importlib.import_module(SETTINGS_MODULE)
        return list(module.all_settings())
    except ImportError as err:
        raise PluginError(
            f"{marker}: cannot import {SETTINGS_MODULE} ({err}). The environment-variable table is "
            "generated from it: install Kastor into the environment that runs mkdocs "
            '(pip install -e ".[docs]") and make sure runtime/settings.py exists with all_settings().') from err
    except AttributeError as err:
        raise PluginError(f"{marker}: {SETTINGS_MODULE} has no all_settings() ({err}); the table needs it") from err


def env_table(_arg: str | None, marker: str) -> str:
    """The ``KASTOR_*`` variables declared in ``kastor.runtime.settings``, public ones first."""
    settings = load_settings(marker)
    if not settings:
        raise PluginError(f"{marker}: {SETTINGS_MODULE}.all_settings() returned no settings")
    out = []
    for internal, title in ((False, ""), (True, "### Internal\n\nSet by Kastor for the processes it starts; "
                                                 "listed for debugging, not for users to set.\n")):
        chosen = [s for s in settings if bool(s.internal) == internal]
        if not chosen:
            continue
        rows = ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
        rows += [f"| `{s.name}` | {_cell(s.type_name)} | {_env_default(s.default)} | {prose(s.description)} |"
                 for s in chosen]
        out.append((title + "\n" if title else "") + "\n".join(rows) + "\n")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# The CLI's help


def cli_help(command: str, marker: str) -> str:
    """``kastor COMMAND --help`` as a real process prints it (``-`` for ``kastor --help``).

    Run, not imported, so the page shows exactly what a user sees, at a fixed width.
    """
    argv = [] if command == "-" else [command]
    code = "import sys; from kastor.cli import main; sys.exit(main())"
    env = {**os.environ, "COLUMNS": "100"}
    try:
        result = subprocess.run([sys.executable, "-c", code, *argv, "--help"], capture_output=True, text=True,
                                timeout=120, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as err:
        raise PluginError(f"{marker}: `kastor {' '.join(argv)} --help` did not finish in 120 s") from err
    if result.returncode != 0:
        raise PluginError(f"{marker}: `kastor {' '.join(argv)} --help` exited {result.returncode}: "
                          f"{result.stderr.strip()[-2000:]} (is Kastor installed in mkdocs' environment?)")
    return f"```text\n$ kastor {' '.join(argv + ['--help'])}\n{result.stdout.rstrip()}\n```\n"


GENERATORS = {"crd": crd_reference, "helm-values": helm_values, "env-table": env_table, "cli-help": cli_help}


def on_startup(**_: Any) -> None:
    """Keep the ``kastor`` console script from shadowing the package for mkdocstrings (MkDocs event).

    Run as the ``mkdocs`` script, Python puts the scripts folder first on ``sys.path``, and
    griffe, which searches ``sys.path`` for ``kastor``, would take the ``kastor`` CLI script
    there for the package and find none of the API. The handler copies ``sys.path`` in the
    ``config`` event, which every plugin runs after every ``startup``.
    """
    sys.path[:] = [p for p in sys.path if not (p and pathlib.Path(p, "kastor").is_file())]


def on_pre_build(**_: Any) -> None:
    """Check the settings module before any page is read (MkDocs event).

    The API reference imports ``kastor``, which imports the settings module, and pages are read
    in nav order: without this check a missing module would surface as mkdocstrings' "could not
    collect" on the API page instead of the message that says what to fix.
    """
    load_settings("reference/environment.md (checked before the build: its env-table needs it)")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace each marker line with its generated section (MkDocs event)."""

    def replace(match: re.Match[str]) -> str:
        marker = f"{page.file.src_uri}: {match.group(0)}"
        kind, arg = match.group("kind"), match.group("arg")
        generator = GENERATORS.get(kind)
        if generator is None:
            raise PluginError(f"{marker}: unknown generator {kind!r}; known: {', '.join(sorted(GENERATORS))}")
        if arg is None and kind != "env-table":
            raise PluginError(f"{marker}: {kind} needs a file, e.g. <!-- generate: {kind} path/from/repo/root -->")
        return generator(arg, marker)

    return MARKER.sub(replace, markdown)
