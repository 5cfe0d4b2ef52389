"""kastor.util.multiprocessing.Pool: the standard library's Pool API, its processes being actors."""

import os
import sys
import threading

import cloudpickle
import kastor
import pytest
from kastor.exceptions import ActorDiedError
from kastor.util.multiprocessing import Pool

cloudpickle.register_pickle_by_value(sys.modules[__name__])

DEADLINE_S = 60
pytestmark = pytest.mark.usefixtures("embedded_cluster")

def remember(value: str) -> None:
    # Process-wide state (this module travels by value, so its globals would not be shared).
    os.environ["KASTOR_POOL_TEST_SETTING"] = value


def square(x: int) -> int:
    return x * x


def add(x: int, y: int) -> int:
    return x + y


def setting_and_pid(_: int) -> tuple:
    return os.environ.get("KASTOR_POOL_TEST_SETTING"), os.getpid()


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def test_map_starmap_and_imaps():
    with Pool(processes=2) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        assert pool.map(square, range(7), chunksize=3) == [x * x for x in range(7)]
        assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert list(pool.imap(square, range(5))) == [0, 1, 4, 9, 16]
        assert sorted(pool.imap_unordered(square, range(5))) == [0, 1, 4, 9, 16]
        assert pool.apply(add, (2, 3)) == 5
        assert pool.map(square, []) == []


def test_initializer_runs_once_in_each_process():
    with Pool(processes=2, initializer=remember, initargs=("ready",)) as pool:
        results = pool.map(setting_and_pid, range(8), chunksize=1)
    assert {setting for setting, _ in results} == {"ready"}
    assert len({pid for _, pid in results}) == 2, "the work is spread over both processes"


def test_async_results_and_callbacks():
    with Pool(processes=2) as pool:
        called = threading.Event()
        got = []
        result = pool.map_async(square, range(4), callback=lambda v: (got.append(v), called.set()))
        assert result.get(timeout=DEADLINE_S) == [0, 1, 4, 9]
        assert called.wait(DEADLINE_S) and got == [[0, 1, 4, 9]]
        assert result.ready() and result.successful()
        failed = pool.apply_async(fail_on_three, (3,))
        with pytest.raises(ValueError, match="three is not allowed"):
            failed.get(timeout=DEADLINE_S)
        assert not failed.successful()


def test_an_error_in_map_is_raised_as_its_own_type():
    with Pool(processes=2) as pool:
        with pytest.raises(ValueError, match="three is not allowed"):
            pool.map(fail_on_three, range(5))
        assert pool.map(square, [2]) == [4], "the pool keeps working"


def test_close_join_and_terminate():
    pool = Pool(processes=1)
    pending = pool.map_async(square, range(3))
    pool.close()
    with pytest.raises(ValueError, match="not running"):
        pool.map(square, [1])
    pool.join()
    assert pending.get(timeout=DEADLINE_S) == [0, 1, 4]
    process = pool._processes[0]
    pool.terminate()
    with pytest.raises(ActorDiedError):
        kastor.get(process.__ray_ready__.remote(), timeout=DEADLINE_S)
    with pytest.raises(ValueError, match="processes"):
        Pool(processes=0)
