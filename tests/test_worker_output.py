"""What tasks and actors print reaches their job's driver, prefixed as Ray does: `(f pid=N) line`.

The driver prints on its own thread as lines arrive, so each test polls the captured output
with a deadline for the lines it expects.
"""

import os
import subprocess
import sys
import threading

import kastor
import pytest
from support import DEADLINE_S, Captured

pytestmark = pytest.mark.usefixtures("embedded_cluster")


@pytest.fixture
def captured(capsys):
    return Captured(capsys)


@kastor.remote
def shout(word: str) -> int:
    print(f"task says {word}")
    print(f"task warns {word}", file=sys.stderr)
    return os.getpid()


@kastor.remote
def print_in_pieces(word: str) -> int:
    sys.stdout.write("first half, ")
    sys.stdout.write(f"second half {word}\nnext line {word}\n")
    return os.getpid()


@kastor.remote
class Speaker:
    def __init__(self, word: str) -> None:
        print(f"constructed {word}")

    def say(self, word: str) -> int:
        print(f"actor says {word}")
        return os.getpid()

    def say_from_thread(self, word: str) -> None:
        thread = threading.Thread(target=print, args=(f"thread says {word}",))
        thread.start()
        thread.join()


@kastor.remote
class AsyncSpeaker:
    async def say(self, word: str) -> int:
        print(f"async actor says {word}")
        return os.getpid()


def test_task_output_reaches_the_driver_with_its_prefix(captured):
    pid = kastor.get(shout.remote("marker-1"))
    captured.wait_out(f"(shout pid={pid}) task says marker-1\n")
    captured.wait_err(f"(shout pid={pid}) task warns marker-1\n")


def test_partial_writes_are_joined_into_whole_lines(captured):
    pid = kastor.get(print_in_pieces.remote("marker-2"))
    captured.wait_out(f"(print_in_pieces pid={pid}) first half, second half marker-2\n"
                      f"(print_in_pieces pid={pid}) next line marker-2\n")


def test_actor_output_is_prefixed_with_its_class(captured):
    speaker = Speaker.remote("marker-3")
    pid = kastor.get(speaker.say.remote("marker-4"))
    captured.wait_out(f"(Speaker pid={pid}) constructed marker-3\n")
    captured.wait_out(f"(Speaker pid={pid}) actor says marker-4\n")
    kastor.get(speaker.say_from_thread.remote("marker-5"))
    captured.wait_out(f"(Speaker pid={pid}) thread says marker-5\n")


def test_async_actor_output_reaches_the_driver(captured):
    pid = kastor.get(AsyncSpeaker.remote().say.remote("marker-6"))
    captured.wait_out(f"(AsyncSpeaker pid={pid}) async actor says marker-6\n")


OTHER_DRIVER = """
import sys, kastor
kastor.init(sys.argv[1], token=sys.argv[2])

@kastor.remote
def other_job() -> None:
    print("other job marker-7")

kastor.get(other_job.remote())
sys.stdin.read()  # stay connected until the test has seen the line
"""


def test_another_jobs_output_stays_with_its_own_driver(captured):
    info = kastor.get_runtime_context()
    from kastor.api import _core
    core = _core()
    other = subprocess.Popen([sys.executable, "-c", OTHER_DRIVER, core.head_address, core.token],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Read the other driver's output until its line arrives: the head has routed it by then.
    watchdog = threading.Timer(DEADLINE_S, other.kill)
    watchdog.start()
    try:
        for line in other.stdout:
            if "other job marker-7" in line:
                break
        else:
            pytest.fail(f"the other driver never printed its task's line; stderr: {other.stderr.read()}")
    finally:
        watchdog.cancel()
    other.stdin.close()
    other.wait(30)
    pid = kastor.get(shout.remote("marker-8"))
    captured.wait_out(f"(shout pid={pid}) task says marker-8\n")
    assert "marker-7" not in captured.read().out, f"job {info.get_job_id()} saw another job's output"
