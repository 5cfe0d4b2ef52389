"""What keeps test runs of the Kubernetes harness on one machine apart: each run claims its own
loopback address block, and resolves Service names through its own hosts file.

Several test runs (other checkouts, other helpers, `pytest -n`) share this machine. If
they shared pod IPs, ClusterIPs or the machine's /etc/hosts, one run's head would bind
another run's address, or a driver would resolve `demo-head.default.svc` to another run's
cluster. So:

- `AddressBlock` claims one of BLOCKS numbered blocks with an exclusive `flock` on a file
  under /tmp. The lock goes with the process (even on SIGKILL), so a crashed run never
  leaks its block. Block n owns 127.(BASE+2n).0.0/16 for pod IPs and 127.(BASE+2n+1).0.0/16
  for ClusterIPs (Linux routes all of 127/8 to lo, so any of them can be bound). Ports
  need no claim: every pod and Service listens on its own address.
- `PrivateHosts` is the run's hosts file. Every host process of the run (an operator,
  drivers, `kastor.init(cluster=...)` clients) starts through `wrap()`: in its own mount namespace, with that file
  bind-mounted on /etc/hosts, as each Kubernetes pod gets its own /etc/hosts. glibc,
  gRPC's resolvers and everything else then resolve Service names as usual, and the
  machine's /etc/hosts is never written. The file is append-only: a Service keeps its
  host-side address for the whole run, even when re-created (`kubeproxy.KubeProxy` keys it
  by namespace and name), so a name never changes address and a reader never sees a half-rewritten file.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

BASE = 128     # blocks start at 127.128.x.y, clear of 127.0.0.1 and of older harnesses' 127.77/127.78
BLOCKS = 64    # 127.128 .. 127.255
LOCK_DIR = Path("/tmp/kastor-k8s-address-blocks")
# What older versions of the harness wrote into the machine's /etc/hosts (and may still, from another checkout).
OLD_HARNESS_BLOCK = r"\n?# BEGIN kastor kubelet harness.*?# END kastor kubelet harness\n?"


class AddressBlock:
    """One run's loopback block, held (by an flock) until `release()` or the process ends."""

    def __init__(self) -> None:
        LOCK_DIR.mkdir(exist_ok=True)
        try:
            LOCK_DIR.chmod(0o1777)  # any user's runs claim blocks here (umask would narrow mkdir's mode)
        except PermissionError:
            pass  # another user made it, and made it shared
        for n in range(BLOCKS):
            fd = os.open(LOCK_DIR / f"{n}.lock", os.O_CREAT | os.O_RDONLY, 0o644)  # flock needs no write access
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.number, self._fd = n, fd
            self.pod_prefix = f"127.{BASE + 2 * n}"
            self.service_prefix = f"127.{BASE + 2 * n + 1}"
            return
        raise RuntimeError(f"all {BLOCKS} loopback address blocks are claimed by other runs (locks in {LOCK_DIR}); "
                           f"wait for one to finish")

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the file releases the flock
            self._fd = -1


class PrivateHosts:
    """The run's /etc/hosts: the machine's entries, then one line per Service name."""

    def __init__(self, path: Path, machine_hosts: str = "/etc/hosts"):
        self.path = path
        self.names: dict[str, str] = {}
        base = Path(machine_hosts).read_text() if os.path.exists(machine_hosts) else "127.0.0.1 localhost\n"
        base = re.sub(OLD_HARNESS_BLOCK, "\n", base, flags=re.S)  # another checkout's names must not shadow ours
        path.write_text(base.rstrip("\n") + "\n# Services of this test run (tests/k8s/isolation.py)\n")
        root = os.geteuid() == 0
        self._prefix = [shutil.which("unshare") or "unshare", *([] if root else ["--user", "--map-root-user"]),
                        "--mount", "--propagation", "private", shutil.which("sh") or "/bin/sh", "-c",
                        'mount --bind "$0" /etc/hosts && exec "$@"', str(path)]

    def wrap(self, argv: list[str]) -> list[str]:
        """argv, run in its own mount namespace where /etc/hosts is this file."""
        return [*self._prefix, *argv]

    def works(self) -> str | None:
        """None if `wrap` works on this machine, else why not (unshare and mount need root or user namespaces)."""
        try:
            done = subprocess.run(self.wrap(["cat", "/etc/hosts"]), capture_output=True, text=True, timeout=30)
        except OSError as e:
            return f"cannot run unshare: {e}"
        if done.returncode != 0 or "tests/k8s/isolation.py" not in done.stdout:
            return f"cannot give a process its own /etc/hosts (unshare --mount + mount --bind): {done.stderr.strip()}"
        return None

    def add(self, entries: dict[str, str]) -> None:
        """Appends the names not seen yet. A name must keep its address: a changed one is a bug."""
        lines = []
        for name, ip in sorted(entries.items()):
            known = self.names.get(name)
            if known is None:
                self.names[name] = ip
                lines.append(f"{ip} {name}\n")
            elif known != ip:
                raise RuntimeError(f"Service name {name} moved from {known} to {ip}: the hosts file is append-only, "
                                   f"so the API server must give a re-created Service its old ClusterIP")
        if lines:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, "".join(lines).encode())  # one write: readers see whole lines
            finally:
                os.close(fd)
