"""Arguments that do not fit a signature raise TypeError at `.remote()`, in the caller, as in
Ray: for remote functions, actor constructors and actor methods, including methods called
through handles that were looked up by name or passed to another process."""

import kastor
import pytest


@kastor.remote
def add(a, b=1, *, scale=1):
    return (a + b) * scale


@kastor.remote
def anything(*args, **kwargs):
    return len(args), sorted(kwargs)


@kastor.remote
def positional_only(a, /, b):
    return a - b


@kastor.remote
class Account:
    def __init__(self, owner, balance=0):
        self.owner = owner
        self.balance = balance

    def deposit(self, amount, *, note=""):
        self.balance += amount
        return self.balance

    def varargs(self, *amounts):
        return sum(amounts)

    @staticmethod
    def rate(years):
        return 1.01 ** years

    @classmethod
    def bank(cls, suffix=""):
        return cls.__name__ + suffix


@kastor.remote
class Bare:
    def ping(self):
        return "pong"


@kastor.remote
def deposit_through(handle, amount):
    try:
        handle.deposit.remote()  # missing amount: checked in this worker too
    except TypeError as e:
        return f"TypeError: {e}"
    return kastor.get(handle.deposit.remote(amount))


def test_remote_functions_check_their_signature(embedded_cluster):
    assert kastor.get(add.remote(1, 2, scale=3)) == 9
    with pytest.raises(TypeError, match=r"add\(a, b=1, \*, scale=1\): too many positional arguments"):
        add.remote(1, 2, 3)
    with pytest.raises(TypeError, match="missing a required argument: 'a'"):
        add.remote()
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        add.options(num_returns=1).remote(1, c=2)
    with pytest.raises(TypeError, match="positional"):
        positional_only.remote(a=1, b=2)
    assert kastor.get(anything.remote(1, 2, x=3)) == (2, ["x"])


def test_actor_constructors_and_methods_check_their_signature(embedded_cluster):
    with pytest.raises(TypeError, match=r"Account\(owner, balance=0\): missing a required argument: 'owner'"):
        Account.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        Bare.remote(1)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        Account.options(name="not-created").remote("ann", balanse=3)
    with pytest.raises(ValueError):
        kastor.get_actor("not-created")  # the bad call created nothing
    acct = Account.remote("ann", balance=10)
    assert kastor.get(acct.deposit.remote(5, note="x")) == 15
    with pytest.raises(TypeError, match=r"Account.deposit\(amount, \*, note=...\): missing a required argument"):
        acct.deposit.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        acct.deposit.options(name="d").remote(1, "x")
    assert kastor.get(acct.varargs.remote(1, 2, 3)) == 6
    assert kastor.get(acct.rate.remote(0)) == 1.0
    with pytest.raises(TypeError, match="missing a required argument: 'years'"):
        acct.rate.remote()
    assert kastor.get(acct.bank.remote("!")) == "Account!"
    with pytest.raises(TypeError, match="too many positional arguments"):
        acct.bank.remote(1, 2)
    assert kastor.get(acct.deposit.remote(1)) == 16, "the refused calls never reached the actor"


def test_handles_from_names_and_other_processes_check_too(embedded_cluster):
    _keeper = Account.options(name="checked").remote("bob")  # a named actor lives while a handle does
    by_name = kastor.get_actor("checked")
    with pytest.raises(TypeError, match="unexpected keyword argument 'amount_'"):
        by_name.deposit.remote(1, amount_=1)
    message = kastor.get(deposit_through.remote(by_name, 0))
    assert message.startswith("TypeError: Account.deposit(amount, *, note=...): missing a required argument")
    assert kastor.get(by_name.deposit.remote(7)) == 7
