"""The owner's object table in-process (runtime/ownership.py): what is kept, what is freed."""

from __future__ import annotations

from kastor.runtime.ownership import ObjectTable
from kastor.runtime.protocol import kastor_pb2 as pb


def _table() -> tuple[ObjectTable, list[pb.Value]]:
    freed: list[pb.Value] = []
    return ObjectTable(freed.append), freed


def _value(name: str) -> pb.Value:
    return pb.Value(location=pb.ObjectLocation(path=f"/store/{name}"))


def test_an_owned_value_is_freed_when_its_last_local_ref_goes():
    table, freed = _table()
    table.add_local_ref(b"a")
    table.add_local_ref(b"a")
    table.own(b"a", _value("a"))
    table.remove_local_ref(b"a")
    table.drain_released()
    assert table.store.contains(b"a") and not freed, "one ref is left"
    table.remove_local_ref(b"a")
    table.drain_released()
    assert not table.store.contains(b"a") and freed == [_value("a")]
    assert not table.known(b"a")


def test_an_escaped_value_is_kept_for_good():
    table, freed = _table()
    table.add_local_ref(b"a")
    table.own(b"a", _value("a"))
    assert table.escape(b"a") and not table.escape(b"a"), "only the first escape counts"
    table.remove_local_ref(b"a")
    table.drain_released()
    assert table.store.contains(b"a") and not freed
    assert table.serves_objects()


def test_returns_nobody_refers_to_are_freed_at_once():
    table, freed = _table()
    table.add_local_ref(b"kept")
    error = pb.Value(data=b"x", is_error=True)
    table.store_returns([(b"kept", _value("kept")), (b"dropped", _value("dropped")), (b"err", error)])
    assert table.store.contains(b"kept") and table.known(b"kept")
    assert freed == [_value("dropped")], "an unreferenced value is freed; an error has no file to free"
    assert table.drop(b"kept") == _value("kept") and freed[-1] == _value("kept")
