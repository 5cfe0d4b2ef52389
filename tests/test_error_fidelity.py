"""Errors reach the caller intact: the remote traceback with real files and source lines,
every built-in exception type, and messages that say what happened.

On a real two-CPU local cluster; a `__main__` script runs as its own process and cluster.
"""

import builtins
import linecache
import os
import pickle
import signal
import subprocess
import sys
import time

import cloudpickle
import kastor
import pytest
from kastor import exceptions
from support import wait_until

# The workers cannot import this test module; ship its functions and classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

DEADLINE_S = 60

pytestmark = pytest.mark.usefixtures("embedded_cluster")


# ---- remote tracebacks keep file names and source lines ----

@kastor.remote
def fails_in_test_module():
    raise ValueError("raised in a test module")  # this line must be in the remote traceback


def test_traceback_of_a_function_from_a_test_module():
    with pytest.raises(ValueError) as info:
        kastor.get(fails_in_test_module.remote(), timeout=DEADLINE_S)
    tb = info.value.traceback_str
    assert f'File "{__file__}"' in tb, tb
    assert "<dynamic-code>" not in tb
    assert 'raise ValueError("raised in a test module")  # this line must be in the remote traceback' in tb


NOTEBOOK_CELL = '''\
import kastor

def helper(x):
    return 1 / x  # the helper's line

@kastor.remote
def cell_task(x):
    return helper(x) + 1  # the cell's line
'''


def test_traceback_of_a_notebook_cell_shows_its_source():
    # What IPython does with a cell: compile it under a made-up file name that exists on no
    # disk, keep its lines in linecache, run it in __main__'s namespace (so by value).
    filename = "<ipython-input-7-0123456789ab>"
    linecache.cache[filename] = (len(NOTEBOOK_CELL), None, NOTEBOOK_CELL.splitlines(keepends=True), filename)
    namespace = {"__name__": "__main__"}
    exec(compile(NOTEBOOK_CELL, filename, "exec"), namespace)
    with pytest.raises(ZeroDivisionError) as info:
        kastor.get(namespace["cell_task"].remote(0), timeout=DEADLINE_S)
    tb = info.value.traceback_str
    assert f'File "{filename}", line 8, in cell_task' in tb, tb
    assert "return helper(x) + 1  # the cell's line" in tb
    assert f'File "{filename}", line 4, in helper' in tb
    assert "return 1 / x  # the helper's line" in tb


MAIN_SCRIPT = '''\
import kastor

@kastor.remote
def script_task():
    raise KeyError("raised in a __main__ script")  # the script's line

kastor.init(num_cpus=1)
try:
    kastor.get(script_task.remote(), timeout=120)
except KeyError as e:
    print(e.traceback_str)
finally:
    kastor.shutdown()
'''


def test_traceback_of_a_main_script(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(MAIN_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f'File "{script}", line 5, in script_task' in result.stdout, result.stdout
    assert 'raise KeyError("raised in a __main__ script")  # the script\'s line' in result.stdout


def test_code_passed_as_an_argument_keeps_its_file():
    def inner():
        raise RuntimeError("from a function passed as an argument")

    @kastor.remote
    def call(fn):
        return fn()

    with pytest.raises(RuntimeError) as info:
        kastor.get(call.remote(inner), timeout=DEADLINE_S)
    tb = info.value.traceback_str
    assert f'File "{__file__}"' in tb and "in inner" in tb, tb
    assert 'raise RuntimeError("from a function passed as an argument")' in tb



# ---- every built-in exception comes back as a TaskError that is an instance of it ----

def _builtin_exceptions() -> list[BaseException]:
    """One instance of every built-in exception class, made with the arguments it needs."""
    special = {
        UnicodeDecodeError: ("utf-8", b"\xff", 0, 1, "invalid start byte"),
        UnicodeEncodeError: ("ascii", "\xe9", 0, 1, "ordinal not in range"),
        UnicodeTranslateError: ("\xe9", 0, 1, "no mapping"),
        ExceptionGroup: ("several failed", [ValueError(1), TypeError(2)]),
        BaseExceptionGroup: ("several failed", [KeyboardInterrupt(), ValueError(3)]),
    }
    found = []
    for name in dir(builtins):
        cls = getattr(builtins, name)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls(*special.get(cls, (f"a {name}",))))
    return found


@kastor.remote
def raise_it(error):
    raise error


def test_every_builtin_exception_arrives_as_an_instance_of_its_class():
    # KeyboardInterrupt is how a cancelled task is interrupted, so in a task it means
    # TaskCancelledError (as in Ray); every other built-in travels as itself.
    errors = [e for e in _builtin_exceptions() if type(e) is not KeyboardInterrupt]
    assert len(errors) > 60
    refs = [raise_it.remote(e) for e in errors]
    wrong = []
    for error, ref in zip(errors, refs, strict=True):
        try:
            kastor.get(ref, timeout=DEADLINE_S)
        except BaseException as got:  # noqa: B036 - SystemExit and GeneratorExit are what is tested
            cls = type(error)
            if not (isinstance(got, exceptions.TaskError) and isinstance(got, cls) and type(got.cause) is cls
                    and "raise_it" in str(got)):
                wrong.append(f"{cls.__name__} -> {type(got).__name__}: {got}")
        else:
            wrong.append(f"{type(error).__name__}: nothing raised")
    assert not wrong, "\n".join(wrong)


def test_builtin_fields_read_as_on_the_original():
    with pytest.raises(FileNotFoundError) as info:
        kastor.get(raise_it.remote(FileNotFoundError(2, "No such file", "/nowhere")), timeout=DEADLINE_S)
    assert (info.value.errno, info.value.strerror, info.value.filename) == (2, "No such file", "/nowhere")
    with pytest.raises(SystemExit) as exit_info:
        kastor.get(raise_it.remote(SystemExit(3)), timeout=DEADLINE_S)
    assert exit_info.value.code == 3


def test_memory_error_in_a_task():
    @kastor.remote
    def allocate_too_much():
        raise MemoryError("cannot allocate the buffer")

    with pytest.raises(MemoryError) as info:
        kastor.get(allocate_too_much.remote(), timeout=DEADLINE_S)
    assert isinstance(info.value, exceptions.TaskError)
    assert "cannot allocate the buffer" in info.value.traceback_str


def test_base_exception_group_keeps_its_members_for_except_star():
    group = BaseExceptionGroup("two failed", [KeyboardInterrupt("inner"), ValueError("bad value")])
    caught = {}
    try:
        kastor.get(raise_it.remote(group), timeout=DEADLINE_S)
    except* KeyboardInterrupt as g:
        caught["interrupt"] = g.exceptions
    except* ValueError as g:
        caught["value"] = g.exceptions
    assert [str(e) for e in caught["value"]] == ["bad value"]
    (interrupt,) = caught["interrupt"]
    assert isinstance(interrupt, KeyboardInterrupt) and interrupt.cause.args == ("inner",)


# ---- messages say what happened ----

@kastor.remote
def wait_for_cancel(marker):
    """Signals it started, then waits to be cancelled (a cancel interrupts the sleep)."""
    with open(marker, "w"):
        pass
    while True:
        time.sleep(0.05)


@kastor.remote
def interrupt_itself():
    raise KeyboardInterrupt


def _task_id_of(ref) -> str:
    return ref.task_id().hex()


def test_cancel_message_names_the_task_once(tmp_path):
    marker = tmp_path / "started"
    ref = wait_for_cancel.remote(str(marker))
    wait_until(marker.exists, "the task to start")
    kastor.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError) as info:
        kastor.get(ref, timeout=DEADLINE_S)
    assert str(info.value) == f"Task {_task_id_of(ref)} was cancelled."
    assert info.value.task_id == _task_id_of(ref)


def test_keyboard_interrupt_in_a_task_reads_as_one_cancellation():
    ref = interrupt_itself.remote()
    with pytest.raises(exceptions.TaskCancelledError) as info:
        kastor.get(ref, timeout=DEADLINE_S)
    assert str(info.value) == f"Task {_task_id_of(ref)} was cancelled."


@kastor.remote
def crash_worker(path):
    """Counts its attempts in `path`, then kills its own worker process."""
    with open(path, "a") as f:
        f.write("x")
    os.kill(os.getpid(), signal.SIGKILL)


def test_worker_crash_message_counts_the_attempts(tmp_path):
    path = tmp_path / "attempts"
    with pytest.raises(exceptions.WorkerCrashedError) as info:
        kastor.get(crash_worker.options(max_retries=2).remote(str(path)), timeout=DEADLINE_S)
    assert path.read_text() == "xxx"
    message = str(info.value)
    assert "crash_worker" in message and "3 attempts" in message and "2 retries" in message, message
    assert "no retries left" not in message and "set max_retries" not in message


def test_worker_crash_message_without_retries_says_how_to_retry(tmp_path):
    path = tmp_path / "attempts"
    with pytest.raises(exceptions.WorkerCrashedError) as info:
        kastor.get(crash_worker.options(max_retries=0).remote(str(path)), timeout=DEADLINE_S)
    assert path.read_text() == "x"
    assert "max_retries=0: set max_retries to retry it" in str(info.value)


def test_kastor_errors_keep_their_fields_through_pickle():
    for err in [exceptions.TaskCancelledError("ab12"), exceptions.ObjectLostError("cd34"),
                exceptions.OwnerDiedError("ef56", "owner gone"), exceptions.ActorDiedError("dead", actor_id="a1")]:
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is type(err) and str(copy) == str(err) and copy.__dict__ == err.__dict__
