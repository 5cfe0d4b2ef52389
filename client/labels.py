"""Validating `label_selector` and `fallback_strategy` as Ray does, so a program that passes a
malformed selector fails at the call site here too, and turning them into the selectors the
head and the node agents place work by (see kastor.runtime.node_labels for the semantics).

Label keys and values follow Kubernetes' label syntax (a key is an optional DNS-subdomain
prefix and a name of up to 63 characters; a value is up to 63 characters), and a selector
value may carry Ray's operators: `!value`, `in(a,b)`, `!in(a,b)`.
"""

from __future__ import annotations

from typing import Any

from kastor.runtime.node_labels import NAME_SYNTAX, SELECTOR_VALUE, check_key
from kastor.runtime.protocol import kastor_pb2 as pb

FALLBACK_KEYS = ("label_selector",)

__all__ = ["check_key", "check_selector", "check_fallback_strategy", "selectors", "FALLBACK_KEYS"]


def check_selector(selector: Any, option: str = "label_selector") -> None:
    """A `label_selector`: a dict of label key -> value, `!value`, `in(a,b)` or `!in(a,b)`."""
    if not isinstance(selector, dict):
        raise TypeError(f"The '{option}' option must be a dict of label key -> selector value, "
                        f"got {type(selector).__name__}.")
    for key, value in selector.items():
        check_key(key)
        if not isinstance(value, str):
            raise TypeError(f"The value for label key `{key}` in '{option}' must be a string, "
                            f"got {type(value).__name__} {value!r}.")
        if value and not SELECTOR_VALUE.fullmatch(value):
            raise ValueError(f"Invalid label selector value `{value}` for key `{key}`. A selector value is a "
                             f"label value, optionally with the operators ! and in(...), e.g. 'A100', '!A100', "
                             f"'in(A100,H100)'. A label value must be {NAME_SYNTAX}.")


def check_fallback_strategy(strategy: Any) -> None:
    """A `fallback_strategy`: a list of option dicts tried in order when no node the work could
    fit matches the ones before; each holds a `label_selector`."""
    if not isinstance(strategy, list):
        raise TypeError(f"The 'fallback_strategy' option must be a list of dicts, got {type(strategy).__name__}.")
    for i, entry in enumerate(strategy):
        if not isinstance(entry, dict):
            raise TypeError(f"fallback_strategy[{i}] must be a dict of options, got {type(entry).__name__}.")
        unknown = set(entry) - set(FALLBACK_KEYS)
        if unknown:
            raise ValueError(f"fallback_strategy[{i}] has unsupported option(s) {sorted(unknown)}; a fallback "
                             f"may set: {', '.join(FALLBACK_KEYS)}.")
        if "label_selector" in entry:
            check_selector(entry["label_selector"], f"fallback_strategy[{i}].label_selector")


def selectors(options: dict[str, Any]) -> list[pb.LabelSelector]:
    """The validated `label_selector` and its `fallback_strategy` as the ordered selectors work is
    placed by; [] when there is no label_selector (an empty one matches every node, so no
    fallback would ever be tried)."""
    primary = options.get("label_selector")
    if not primary:
        return []
    out = [pb.LabelSelector(match=primary)]
    for entry in options.get("fallback_strategy") or ():
        out.append(pb.LabelSelector(match=entry.get("label_selector") or {}))
    return out
