"""Actor classes as Ray has them: class and static attributes reachable through the decorated
name, class methods usable locally, no inheritance from an actor class, `dir()` for
autocompletion, and the lower-level `_remote(args=, kwargs=, **options)`."""

import kastor
import pytest


class Grandparent:
    GRANDPARENT = 2

    @staticmethod
    def grandparent_static():
        return 1


class Parent(Grandparent):
    PARENT = 6


@kastor.remote
class Child(Parent):
    X = 3

    def __init__(self, x=0):
        self.x = x

    @staticmethod
    def static_four():
        assert Child.GRANDPARENT == 2 and Child.PARENT == 6 and Child.X == 3
        return 4

    @classmethod
    def build(cls, x):
        return cls(x)

    def uses_class_attributes(self):
        return Child.X + Child.static_four() + Child.grandparent_static() + Child.PARENT

    def get_x(self):
        return self.x


def test_class_and_static_attributes_reach_methods(embedded_cluster):
    assert Child.X == 3 and Child.GRANDPARENT == 2
    actor = Child.remote()
    assert kastor.get(actor.uses_class_attributes.remote()) == 3 + 4 + 1 + 6
    assert kastor.get(actor.static_four.remote()) == 4
    with pytest.raises(AttributeError, match="actor class 'Child' has no attribute 'nope'"):
        Child.nope  # noqa: B018


def test_class_methods_build_plain_local_instances():
    local = Child.build(5)
    assert local.get_x() == 5 and not isinstance(local, kastor.ActorClass)


def test_an_actor_class_cannot_be_inherited_from():
    from kastor.actor import ActorClassInheritanceException
    assert issubclass(ActorClassInheritanceException, TypeError)  # `except TypeError` keeps working, as in Ray
    with pytest.raises(ActorClassInheritanceException, match="Inheriting from actor classes is not currently"):
        class Derived(Child):
            pass
    with pytest.raises(TypeError, match="cannot be instantiated directly|Actors cannot be instantiated"):
        Child()


def test_dir_lists_what_completes(embedded_cluster):
    assert {name for name in dir(Child) if not name.startswith("_")} >= {"options", "remote", "get_x", "build"}
    handle = Child.remote(1)
    assert [name for name in dir(handle) if not name.startswith("_")] == [
        "build", "get_x", "grandparent_static", "static_four", "uses_class_attributes"]
    assert {name for name in dir(handle.get_x) if not name.startswith("_")} == {"bind", "options", "remote"}


@kastor.remote
def count_to(n):
    return tuple(range(n)) if n != 1 else 0


def test_the_lower_level_remote(embedded_cluster):
    assert count_to._remote([0], num_returns=0) is None
    one, two = count_to._remote(args=[2], num_returns=2)
    assert kastor.get([one, two]) == [0, 1]
    assert kastor.get(count_to._remote(kwargs={"n": 1})) == 0
    actor = Child._remote(args=[7], name="lower-level")
    assert kastor.get(kastor.get_actor("lower-level").get_x.remote()) == 7
    kastor.kill(actor)
    with pytest.raises(ValueError, match="num_returns"):
        count_to._remote(args=[1], num_returns="many")


def test_empty_decorator_parentheses_are_refused():
    with pytest.raises(TypeError, match="bare"):
        @kastor.remote()
        class Actor:
            pass
