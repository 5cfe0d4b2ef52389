"""Sync actor calls through the head's client port (kastor://) against the same calls made
in-cluster, on one CLI-started cluster. Issue aim: the client port at >= 0.8x in-cluster.

    python bench/client_port.py [--calls 2000]

Prints `<path> sync_actor_calls_per_s <value>` lines and the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from kastor.runtime import launcher


def measure(address: str, calls: int) -> float:
    code = f"""
import time, kastor
kastor.init({address!r})
@kastor.remote
class A:
    def f(self):
        return 1
a = A.remote()
for _ in range(200):
    kastor.get(a.f.remote())
t = time.perf_counter()
for _ in range({calls}):
    kastor.get(a.f.remote())
print({calls} / (time.perf_counter() - t))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    port, client_port = launcher.free_port(), launcher.free_port()
    token = os.urandom(16).hex()
    env = dict(os.environ, KASTOR_TOKEN=token, KASTOR_SESSION_ROOT=tempfile.mkdtemp(prefix="kastor-bench-"))
    head = subprocess.Popen([sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--block", "--port",
                             str(port), "--client-port", str(client_port)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        head.stdout.readline()
        os.environ["KASTOR_TOKEN"] = token
        direct = measure(f"127.0.0.1:{port}", args.calls)
        via_client_port = measure(f"kastor://127.0.0.1:{client_port}", args.calls)
    finally:
        head.terminate()
        head.wait(30)
    print(f"in-cluster   sync_actor_calls_per_s {direct:.1f}")
    print(f"client-port  sync_actor_calls_per_s {via_client_port:.1f}")
    print(f"# client port / in-cluster = {via_client_port / direct:.2f} (aim >= 0.80)")


if __name__ == "__main__":
    main()
