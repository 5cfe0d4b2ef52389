"""An account actor whose balance survives the actor's death.

Why this exists: an actor's state lives in one process, so it dies with that
process. The usual answer is to persist it. Here the ``Account`` actor takes a
``Store`` (a tiny protocol with ``load`` and ``save``), loads its balance in
``__init__`` and saves after every change. Two stores are given:

* ``MemoryStore`` keeps the balance inside the actor's own process, so it is
  lost when the actor is killed;
* ``JsonFileStore`` writes a JSON file, so a new actor created with the same
  file picks up where the old one stopped.

The same idea combines with ``max_restarts``: when an actor's process dies
unexpectedly, the runtime restarts it by running ``__init__`` again, which
reloads the saved balance. Finally ``kastor.actor.exit_actor()`` shows an actor
ending itself on purpose (an intentional exit is never restarted).

Run it with ``python examples/persistent_account.py``.
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Protocol

import kastor
from kastor.actor import exit_actor


class Store(Protocol):
    def load(self) -> int | None:
        """The saved balance, or None if nothing was saved yet."""

    def save(self, balance: int) -> None:
        """Remember the balance."""


class MemoryStore:
    """Keeps the balance in memory: in the actor's process, gone when it dies."""

    def __init__(self) -> None:
        self._balance: int | None = None

    def load(self) -> int | None:
        return self._balance

    def save(self, balance: int) -> None:
        self._balance = balance


class JsonFileStore:
    """Keeps the balance in a JSON file, written atomically (temp file + rename)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def load(self) -> int | None:
        try:
            return json.loads(self.path.read_text())["balance"]
        except FileNotFoundError:
            return None

    def save(self, balance: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"balance": balance}))
        tmp.replace(self.path)


@kastor.remote
class Account:
    def __init__(self, store: Store, opening_balance: int = 0):
        self.store = store
        saved = store.load()
        self._balance = opening_balance if saved is None else saved
        self.restored = saved is not None
        self.store.save(self._balance)

    def deposit(self, amount: int) -> int:
        self._balance += amount
        self.store.save(self._balance)
        return self._balance

    def withdraw(self, amount: int) -> int:
        if amount > self._balance:
            raise ValueError(f"cannot withdraw {amount}: balance is only {self._balance}")
        self._balance -= amount
        self.store.save(self._balance)
        return self._balance

    def balance(self) -> int:
        return self._balance

    def was_restored(self) -> bool:
        return self.restored

    def pid(self) -> int:
        return os.getpid()

    def crash(self) -> None:
        """Simulate a hard failure: the process dies without any cleanup."""
        os._exit(1)

    def close(self) -> None:
        """End this actor on purpose; it will not be restarted."""
        exit_actor()


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def survive_kill(label: str, make_store, expect_survives: bool) -> None:
    print(f"== kill and re-create, {label} ==")
    store = make_store()
    account = Account.remote(store, opening_balance=100)
    kastor.get(account.deposit.remote(25))
    kastor.get(account.withdraw.remote(5))
    check(kastor.get(account.balance.remote()) == 120, "balance should be 120")
    print("before kill:", kastor.get(account.balance.remote()))

    # kill() ends the actor at once and, by default, rules out any restart.
    kastor.kill(account)

    # The actor got a copy of the store when it was created; we hand the same
    # (driver-side) store to the new actor.
    again = Account.remote(store, opening_balance=100)
    balance = kastor.get(again.balance.remote())
    restored = kastor.get(again.was_restored.remote())
    print(f"after kill: {balance} ({'restored from the store' if restored else 'fresh start'})")
    if expect_survives:
        check(restored and balance == 120, "the file store should have kept the balance")
    else:
        check(not restored and balance == 100, "the memory store should have lost the balance")
    kastor.kill(again)


def restart_after_crash(path: Path) -> None:
    print("== max_restarts: the runtime restarts a crashed actor ==")
    # max_restarts=1: if the actor's process dies, start it again once.
    account = Account.options(max_restarts=1).remote(JsonFileStore(path))
    kastor.get(account.deposit.remote(42))
    first_pid = kastor.get(account.pid.remote())

    try:
        kastor.get(account.crash.remote())
    except (kastor.exceptions.ActorUnavailableError, kastor.exceptions.ActorDiedError) as err:
        # The actor is not dead for good (it will be restarted), so the call in
        # flight fails with ActorUnavailableError: the caller cannot tell whether
        # the call ran before the process died. (ActorDiedError is accepted too.)
        print(f"crash       -> the call in flight fails with {type(err).__name__}")
    else:
        raise AssertionError("the crashing call should have failed")

    # Calls made now wait for the restarted actor, whose __init__ reloads the file.
    balance = kastor.get(account.balance.remote())
    new_pid = kastor.get(account.pid.remote())
    print(f"restarted   -> new process ({first_pid} -> {new_pid}), balance {balance}")
    check(new_pid != first_pid, "the restarted actor should run in a new process")
    check(balance == 42, "the restarted actor should have reloaded its balance")

    print("== exit_actor: an intentional exit is final ==")
    account.close.remote()
    try:
        kastor.get(account.balance.remote())
    except kastor.exceptions.ActorDiedError:
        print("closed      -> later calls raise ActorDiedError (no restart)")
    else:
        raise AssertionError("a closed actor should not answer")


def main() -> None:
    kastor.init()
    try:
        with tempfile.TemporaryDirectory(prefix="kastor-bank-") as tmp:
            survive_kill("in-memory store", MemoryStore, expect_survives=False)
            survive_kill(
                "JSON file store", lambda: JsonFileStore(Path(tmp) / "account.json"), expect_survives=True
            )
            restart_after_crash(Path(tmp) / "restartable.json")
    finally:
        kastor.shutdown()
    print("persistent account example OK")


if __name__ == "__main__":
    main()
