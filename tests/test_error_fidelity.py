"""Errors reach the caller intact: the remote traceback with real files and source lines,
every built-in exception type, and messages that say what happened.

On a real two-CPU local cluster; a `__main__` script runs as its own process and cluster.
"""

import linecache
import subprocess
import sys

import cloudpickle
import kastor
import pytest

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

