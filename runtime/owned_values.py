"""What the submitters use of the owner's objects, handed to them as one small value.

A submitter waits for a call's argument refs, stores its results (or its error) under its
return ids, frees a large argument once the call is done, and decodes an error to decide on a
retry. Those four operations are all it gets: the core builds an `OwnedValues` from its object
table and its own decode/wait/free (which fetch from other nodes through the core's loop), so
the submitters never hold the core (tests/test_layering.py holds them to that).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kastor.runtime.object_ref import ObjectRef
from kastor.runtime.ownership import ObjectTable
from kastor.runtime.protocol import kastor_pb2 as pb


@dataclass(frozen=True, slots=True)
class OwnedValues:
    """The owner's objects as a submitter sees them."""

    objects: ObjectTable  # the ownership table the results are stored in
    decode: Callable[[bytes, pb.Value], Any]  # (object id, value) -> the Python value; raises a stored error
    value_when_ready: Callable[[ObjectRef, Callable[[pb.Value], None]], None]  # calls back with a ref's value
    free_value: Callable[[pb.Value], None]  # deletes a stored value's file, wherever it lives
