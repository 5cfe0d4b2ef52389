"""Validating `label_selector` and `fallback_strategy` as Ray does, so a program that passes a
malformed selector fails at the call site here too.

Label keys and values follow Kubernetes' label syntax (a key is an optional DNS-subdomain
prefix and a name of up to 63 characters; a value is up to 63 characters), and a selector
value may carry Ray's operators: `!value`, `in(a,b)`, `!in(a,b)`. Kastor nodes carry no labels
yet, so the options are checked and then ignored (with a warning, see `kastor.options`).
"""

from __future__ import annotations

import re
from typing import Any

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
_KEY = re.compile(rf"(?:(?P<prefix>{_PREFIX})/)?(?P<name>{_NAME})")
_SELECTOR = re.compile(rf"!?(?:{_NAME}|in\(\s*{_NAME}(?:\s*,\s*{_NAME})*\s*\))")
_SYNTAX = ("63 characters or less, beginning and ending with an alphanumeric character ([a-z0-9A-Z]) with "
           "dashes (-), underscores (_), dots (.) and alphanumerics between")
FALLBACK_KEYS = ("label_selector",)


def check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise TypeError(f"Label keys must be strings, got {type(key).__name__} {key!r}.")
    match = _KEY.fullmatch(key)
    if match is None:
        name = key.rsplit("/", 1)[-1]
        if not re.fullmatch(_NAME, name):
            raise ValueError(f"Invalid label key name `{name}`. Name must be {_SYNTAX}.")
        raise ValueError(f"Invalid label key prefix `{key.rsplit('/', 1)[0]}`. The prefix must be a DNS "
                         f"subdomain: lowercase alphanumerics, dashes and dots, at most 253 characters.")
    if match.group("prefix") and len(match.group("prefix")) > 253:
        raise ValueError(f"Invalid label key prefix `{match.group('prefix')}`: longer than 253 characters.")


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
        if value and not _SELECTOR.fullmatch(value):
            raise ValueError(f"Invalid label selector value `{value}` for key `{key}`. A selector value is a "
                             f"label value, optionally with the operators ! and in(...), e.g. 'A100', '!A100', "
                             f"'in(A100,H100)'. A label value must be {_SYNTAX}.")


def check_fallback_strategy(strategy: Any) -> None:
    """A `fallback_strategy`: a list of option dicts tried in order when the first choice cannot
    be placed; each holds a `label_selector` today."""
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
