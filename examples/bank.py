"""A bank account as an actor.

Why this exists: it is the smallest program that shows what an actor is for.
An actor owns state (a balance) and handles one call at a time, so concurrent
deposits and withdrawals never race. It also shows:

* an application error (``InsufficientFunds``) raised inside the actor and
  caught by the caller as that very class, through ``kastor.get``;
* the actor carrying on serving calls after such an error;
* a named actor, looked up again with ``kastor.get_actor``;
* a detached actor (``lifetime="detached"``), which outlives its creator and
  so must be killed explicitly.

Run it with ``python examples/bank.py``.
"""

import kastor


class InsufficientFunds(Exception):
    """Raised when a withdrawal is larger than the balance.

    The error crosses from the actor's process to the caller's by pickling,
    which re-creates it as ``InsufficientFunds(*err.args)``. So ``args`` must
    be exactly what ``__init__`` takes: pass the fields to ``super().__init__``
    and build the message in ``__str__``.
    """

    def __init__(self, balance: int, amount: int):
        super().__init__(balance, amount)
        self.balance = balance
        self.amount = amount

    def __str__(self) -> str:
        return f"cannot withdraw {self.amount}: balance is only {self.balance}"


@kastor.remote
class Account:
    def __init__(self, owner: str, balance: int = 0):
        self.owner = owner
        self._balance = balance

    def deposit(self, amount: int) -> int:
        if amount <= 0:
            raise ValueError("deposit must be positive")
        self._balance += amount
        return self._balance

    def withdraw(self, amount: int) -> int:
        if amount > self._balance:
            raise InsufficientFunds(self._balance, amount)
        self._balance -= amount
        return self._balance

    def balance(self) -> int:
        return self._balance


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def basic_account() -> None:
    print("== an account actor ==")
    account = Account.remote("ada", balance=100)
    print("deposit 50    ->", kastor.get(account.deposit.remote(50)))
    print("withdraw 30   ->", kastor.get(account.withdraw.remote(30)))
    check(kastor.get(account.balance.remote()) == 120, "balance should be 120")

    # Calls from one caller run in the order they were sent, so ten deposits
    # sent without waiting all land, one after the other.
    refs = [account.deposit.remote(1) for _ in range(10)]
    print("ten deposits  ->", kastor.get(refs)[-1])
    check(kastor.get(account.balance.remote()) == 130, "balance should be 130")

    # The actor raises InsufficientFunds; kastor.get re-raises it here, and it
    # is still an InsufficientFunds (with its attributes), so a plain except works.
    try:
        kastor.get(account.withdraw.remote(1_000))
    except InsufficientFunds as err:
        print(f"withdraw 1000 -> refused: {err.amount} > {err.balance}")
        check(err.amount == 1_000 and err.balance == 130, "error should carry its fields")
    else:
        raise AssertionError("withdrawing 1000 should have failed")

    # A failed call does not kill the actor: its state is intact and it keeps serving.
    print("after error   ->", kastor.get(account.withdraw.remote(30)))
    check(kastor.get(account.balance.remote()) == 100, "balance should be 100 after the refused withdrawal")


def named_account() -> None:
    print("== a named actor ==")
    # Keep the handle alive: a non-detached actor lives as long as its handles do.
    savings = Account.options(name="savings").remote("grace")
    kastor.get(savings.deposit.remote(500))

    # Anywhere else in the program (or in a task) the actor can be found by name.
    found = kastor.get_actor("savings")
    print("found 'savings', balance ->", kastor.get(found.balance.remote()))
    kastor.get(found.withdraw.remote(200))
    check(kastor.get(savings.balance.remote()) == 300, "both handles should reach the same actor")
    print("via the original handle  ->", kastor.get(savings.balance.remote()))


def detached_account() -> None:
    print("== a detached actor ==")
    # A detached actor is not tied to this driver: it would survive the script
    # ending (until the cluster stops), so we kill it ourselves when done.
    vault = Account.options(name="vault", lifetime="detached").remote("bank", balance=1_000_000)
    check(kastor.get(vault.balance.remote()) == 1_000_000, "vault should start with a million")
    print("vault balance ->", kastor.get(kastor.get_actor("vault").balance.remote()))

    kastor.kill(vault)
    try:
        kastor.get(vault.balance.remote())
    except kastor.exceptions.ActorDiedError:
        print("vault killed  -> further calls raise ActorDiedError")
    else:
        raise AssertionError("calling a killed actor should fail")


def main() -> None:
    kastor.init()
    try:
        basic_account()
        named_account()
        detached_account()
    finally:
        kastor.shutdown()
    print("bank example OK")


if __name__ == "__main__":
    main()
