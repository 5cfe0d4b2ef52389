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


def test_a_borrowed_value_is_kept_until_its_last_borrower_lets_go():
    table, freed = _table()
    table.add_local_ref(b"a")
    table.own(b"a", _value("a"))
    table.add_borrow(b"a")
    table.add_borrow(b"a")
    table.remove_local_ref(b"a")
    table.drain_released()
    assert table.store.contains(b"a") and table.counts(b"a") == (0, 2) and table.serves_objects()
    table.remove_borrow(b"a")
    assert table.store.contains(b"a") and not freed, "one borrower is left"
    table.remove_borrow(b"a")
    assert not table.known(b"a") and freed == [_value("a")]


def test_a_borrower_that_dies_releases_all_it_held_at_once():
    table, freed = _table()
    table.own(b"a", _value("a"))
    table.add_borrow(b"a")
    table.add_borrow(b"a")
    table.remove_borrow(b"a", 2)
    assert not table.known(b"a") and freed == [_value("a")]


def test_a_ref_owned_elsewhere_is_borrowed_once_and_given_back_when_its_last_ref_goes():
    calls: list[tuple[str, bytes, str]] = []
    table = ObjectTable(lambda v: None, lambda oid, owner: calls.append(("borrow", oid, owner)),
                        lambda oid, owner: calls.append(("unborrow", oid, owner)))
    table.add_local_ref(b"b", "owner:1")
    table.add_local_ref(b"b", "owner:1")
    assert calls == [("borrow", b"b", "owner:1")], "the owner hears of this process once"
    table.remove_local_ref(b"b")
    table.drain_released()
    assert calls == [("borrow", b"b", "owner:1")]
    table.remove_local_ref(b"b")
    table.drain_released()
    assert calls[-1] == ("unborrow", b"b", "owner:1")


def test_a_kept_value_holds_the_refs_inside_it_until_it_goes():
    held: list[tuple[bytes, bool]] = []
    released: list[bytes] = []
    table = ObjectTable(lambda v: None, hold_nested=lambda oid, v, kept: held.append((oid, kept)),
                        release_nested=lambda v: released.append(v.nested[0].object_id))
    outer = pb.Value(data=b"x", nested=[pb.NestedRef(object_id=b"inner", owner="o:1")])
    table.add_local_ref(b"kept")
    table.store_returns([(b"kept", outer), (b"dropped", outer)])
    assert held == [(b"kept", True), (b"dropped", False)], "an unreferenced result lets its pins go at once"
    table.remove_local_ref(b"kept")
    table.drain_released()
    assert released == [b"inner"]
