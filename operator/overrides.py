"""Merging a user's pod template overrides into a pod the operator built.

Dicts merge key by key; lists of named items (containers, env, volumes, volumeMounts,
ports) merge by name, as a strategic merge patch would (so an override can add an env var
or resources to the `kastor` container); any other list replaces the built one.
The operator's own labels win over template labels so its selectors keep matching.
"""

from __future__ import annotations

import copy
from typing import Any


def merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            if _named_list(value) and _named_list(out.get(key)):
                out[key] = _merge_named(out[key], value)
            else:
                out[key] = merge(out.get(key), value) if key in out else copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) and "name" in i for i in value)


def _merge_named(base: list[dict], override: list[dict]) -> list[dict]:
    out = [dict(c) for c in base]
    for item in override:
        for i, existing in enumerate(out):
            if existing.get("name") == item.get("name"):
                out[i] = merge(existing, item)
                break
        else:
            out.append(copy.deepcopy(item))
    return out


def apply_template(pod: dict[str, Any], template: dict[str, Any] | None) -> dict[str, Any]:
    """The pod with the template's metadata (labels, annotations) and spec merged in."""
    if not template:
        return pod
    out = copy.deepcopy(pod)
    meta = template.get("metadata") or {}
    for key in ("labels", "annotations"):
        if meta.get(key):
            out["metadata"][key] = {**meta[key], **out["metadata"].get(key, {})}
    if template.get("spec"):
        out["spec"] = merge(out["spec"], template["spec"])
    return out
