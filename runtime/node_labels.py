"""Node labels and label selectors, as Ray 2.x has them (its "label-based scheduling").

A node carries labels: string key -> string value pairs, with Kubernetes' label syntax. Every
node has `kastor.io/node-id` (its id, as Ray's `ray.io/node-id`); the others come from
`kastor start --labels k=v,...` (KASTOR_NODE_LABELS), `kastor.init(labels=...)`, or, in
Kubernetes, a worker group's `labels` (the operator also sets `kastor.io/node-group`). Ray's
reserved `ray.io/` keys and Kastor's `kastor.io/` ones stand for each other: a selector's
`ray.io/node-id` reads the node's `kastor.io/node-id`, and a node started with
`ray.io/accelerator-type=H100` (as a Ray cluster's `rayStartParams` would say) matches
`{"kastor.io/accelerator-type": "H100"}` too, so a Ray program runs unchanged.

Work asks for nodes by `label_selector` (every key must match: `value`, `!value`,
`in(a,b)`, `!in(a,b)`; the negative forms also match a node without the key, as in
Kubernetes) and `fallback_strategy` (further selectors, tried in order). As in Ray, the
first selector that some node able to ever fit the work matches is the one used (it may be
busy now: the work then waits for it); when no selector matches any such node the work stays
pending (reported to the autoscaler with its selector) until a node that matches joins.

Everything here is plain data: the head, the node agents and the public package share it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

# A label name (a key's part after the optional prefix, and a label value).
NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
PREFIX = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
KEY = re.compile(rf"(?:(?P<prefix>{PREFIX})/)?(?P<name>{NAME})")
SELECTOR_VALUE = re.compile(rf"!?(?:{NAME}|in\(\s*{NAME}(?:\s*,\s*{NAME})*\s*\))")
NAME_SYNTAX = ("63 characters or less, beginning and ending with an alphanumeric character ([a-z0-9A-Z]) with "
               "dashes (-), underscores (_), dots (.) and alphanumerics between")

OWN_PREFIX = "kastor.io/"
RAY_PREFIX = "ray.io/"
NODE_ID = OWN_PREFIX + "node-id"
NODE_GROUP = OWN_PREFIX + "node-group"

N = TypeVar("N")


def check_key(key: Any) -> None:
    """A label key: an optional DNS-subdomain prefix and `/`, then a name (TypeError/ValueError)."""
    if not isinstance(key, str):
        raise TypeError(f"Label keys must be strings, got {type(key).__name__} {key!r}.")
    match = KEY.fullmatch(key)
    if match is None:
        name = key.rsplit("/", 1)[-1]
        if not re.fullmatch(NAME, name):
            raise ValueError(f"Invalid label key name `{name}`. Name must be {NAME_SYNTAX}.")
        raise ValueError(f"Invalid label key prefix `{key.rsplit('/', 1)[0]}`. The prefix must be a DNS "
                         f"subdomain: lowercase alphanumerics, dashes and dots, at most 253 characters.")
    if match.group("prefix") and len(match.group("prefix")) > 253:
        raise ValueError(f"Invalid label key prefix `{match.group('prefix')}`: longer than 253 characters.")


def check_node_labels(labels: Any, where: str) -> dict[str, str]:
    """A node's own labels (`where` names their source in errors); its id label is the node's to set."""
    if not isinstance(labels, Mapping):
        raise TypeError(f"{where}: node labels must be a dict of str -> str, got {type(labels).__name__}.")
    out = {}
    for key, value in labels.items():
        check_key(key)
        if key in (NODE_ID, RAY_PREFIX + "node-id"):
            raise ValueError(f"{where}: the label `{key}` is the node's id, which Kastor sets itself; "
                             f"choose another key.")
        if not isinstance(value, str):
            raise TypeError(f"{where}: the value of label `{key}` must be a string, got {type(value).__name__}.")
        if value and not re.fullmatch(NAME, value):
            raise ValueError(f"{where}: invalid value `{value}` for label `{key}`. A label value must be "
                             f"{NAME_SYNTAX}.")
        out[key] = value
    return out


def parse_node_labels(text: str | None, where: str) -> dict[str, str]:
    """`k=v,k2=v2` (the form of `kastor start --labels` and KASTOR_NODE_LABELS), checked."""
    labels: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{where}: `{item}` is not a label: write key=value pairs separated by commas, "
                             f"e.g. 'region=us-west,cpu-family=amd'.")
        labels[key.strip()] = value.strip()
    return check_node_labels(labels, where)


def with_defaults(labels: Mapping[str, str], node_id: str) -> dict[str, str]:
    """A node's labels as it registers them: its own plus `kastor.io/node-id`."""
    return {**labels, NODE_ID: node_id}


def _label(labels: Mapping[str, str], key: str) -> str | None:
    if key in labels:
        return labels[key]
    for mine, other in ((RAY_PREFIX, OWN_PREFIX), (OWN_PREFIX, RAY_PREFIX)):  # the two stand for each other
        if key.startswith(mine):
            return labels.get(other + key[len(mine):])
    return None


def _values(expr: str) -> set[str]:
    return {v.strip() for v in expr[expr.index("(") + 1:-1].split(",")}


def value_matches(have: str | None, expr: str) -> bool:
    """One selector value against a node's label value (None: the node has no such label)."""
    negated = expr.startswith("!")
    body = expr[1:] if negated else expr
    hit = have is not None and (have in _values(body) if body.startswith("in(") and body.endswith(")")
                                else have == body)
    return not hit if negated else hit


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """Whether a node with `labels` satisfies every key of `selector` (an empty one: any node)."""
    return all(value_matches(_label(labels, key), expr) for key, expr in selector.items())


def choose(selectors: Sequence[Mapping[str, str]], nodes: Iterable[N],
           labels_of: Callable[[N], Mapping[str, str]]) -> tuple[int, list[N]]:
    """The first selector that some of `nodes` match, and those nodes: (index, matching nodes).

    `nodes` are the ones that could ever fit the work; no selectors at all match every node.
    (-1, []) when no selector matches any of them."""
    nodes = list(nodes)
    if not selectors:
        return 0, nodes
    for i, selector in enumerate(selectors):
        matching = [n for n in nodes if matches(labels_of(n), selector)]
        if matching:
            return i, matching
    return -1, []


def describe(selectors: Sequence[Mapping[str, str]]) -> str:
    """The selectors for messages: `{'region': 'us-west'}, then {'region': 'us-east'}`."""
    return ", then ".join(str(dict(s)) for s in selectors)
