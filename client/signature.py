"""Call-site argument checks: arguments that do not fit a remote function's, an actor
constructor's or an actor method's signature raise `TypeError` at `.remote()`, in the
caller, before anything is sent, as Ray checks them.

Actor handles travel between processes (pickled, or looked up by name), so a method's
signature is kept in its `MethodMeta` as parameter names, kinds and whether each has a
default: that is all that binding arguments needs, and no default value (which may be
large or unpicklable) has to travel.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from kastor.runtime.protocol import kastor_pb2 as pb


class _Default:
    """Stands for a default value that stayed with the class: binding only asks whether there is one."""

    def __repr__(self) -> str:
        return "..."


_HAS_DEFAULT = _Default()
_KIND = type(inspect.Parameter.POSITIONAL_ONLY)  # the enum of parameter kinds


def of_callable(fn: Callable[..., Any]) -> inspect.Signature | None:
    """The signature to check calls against, or None where Python cannot tell (some builtins)."""
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def of_method(cls: type, name: str, member: Callable[..., Any]) -> inspect.Signature | None:
    """A method's signature as a caller sees it: without `self` for a plain method (a
    classmethod is already bound to its class, and a staticmethod has no receiver)."""
    sig = of_callable(member)
    if sig is None:
        return None
    if inspect.ismethod(member) or isinstance(inspect.getattr_static(cls, name, None), staticmethod):
        return sig
    params = list(sig.parameters.values())
    if params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        return sig.replace(parameters=params[1:])
    return sig  # (*args, **kwargs): the receiver hides in *args, and anything still fits


def to_params(sig: inspect.Signature | None) -> list[pb.MethodParam]:
    if sig is None:
        return []
    return [pb.MethodParam(name=p.name, kind=int(p.kind), has_default=p.default is not inspect.Parameter.empty)
            for p in sig.parameters.values()]


def from_params(params: Sequence[pb.MethodParam]) -> inspect.Signature:
    return inspect.Signature([
        inspect.Parameter(p.name, _KIND(p.kind),
                          default=_HAS_DEFAULT if p.has_default else inspect.Parameter.empty)
        for p in params])


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_EMPTY = inspect.Parameter.empty


def fits_positionally(sig: inspect.Signature, count: int) -> bool:
    """Whether `count` positional arguments and no keyword ones surely bind to `sig`: the
    common call (`a.f.remote()`, `a.f.remote(x)`) checked without `Signature.bind`, which cost
    as much as a tenth of submitting a call (bench/README.md, "Pipelined calls"). False means
    "not sure": `bind` then decides, and words the error."""
    taken = 0
    for param in sig.parameters.values():
        kind = param.kind
        if kind in _POSITIONAL:
            if taken < count:
                taken += 1
            elif param.default is _EMPTY:
                return False  # a required parameter left without a value
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            taken = count
        elif kind is inspect.Parameter.KEYWORD_ONLY and param.default is _EMPTY:
            return False
    return taken == count


def check(sig: inspect.Signature | None, args: tuple, kwargs: dict, name: str) -> None:
    """Raises TypeError, naming the callable and its signature, when the arguments cannot bind."""
    if sig is None or (not kwargs and fits_positionally(sig, len(args))):
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{name}{sig}: {e}. The arguments passed to .remote() must fit the signature.") from None
