"""Embedded processes do not outlive the driver that started them (launcher.watch_parent).

A driver's kastor.init() starts a head and a node agent, which starts workers; each watches
the stdin pipe its parent holds. SIGKILL the driver (it runs no cleanup) and every one of
them must exit by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from support import process_gone, proctree, wait_until

DRIVER = textwrap.dedent("""
    import sys
    import kastor

    kastor.init(num_cpus=1)

    @kastor.remote
    class A:
        def pid(self):
            import os
            return os.getpid()

    a = A.remote()
    print(kastor.get(a.pid.remote()), flush=True)
    sys.stdin.read()  # until the test kills us
""")


def test_embedded_head_node_and_workers_exit_when_the_driver_is_killed():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        actor_pid = int(driver.stdout.readline())
        started = set(proctree.descendants(driver.pid))
        assert actor_pid in started and len(started) >= 3, "a head, a node agent and the actor's worker"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        wait_until(lambda: all(process_gone(p) for p in started),
                   f"the driver's head, node agent and workers to exit: {sorted(started)}")
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
