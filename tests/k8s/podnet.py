"""The pod network of a real-control-plane test run: a network namespace per pod.

Why: on a real cluster 127.0.0.1 inside a pod is that pod's alone, and a pod reaches
others only through pod IPs and Services. A harness where every pod shares the machine's
loopback hides bugs such as a driver advertising 127.0.0.1 to its workers. So each pod
gets its own network namespace (`ip netns`), joined by a veth pair to a bridge the run
creates, with an address from the run's pod CIDR, and its own /etc/hosts and
/etc/resolv.conf (`ip netns exec` bind-mounts /etc/netns/<name>/*; the machine's files are
never written).

Layout of run `n` (n is the run's `AddressBlock` number, held by an flock, so concurrent
runs on one machine never share a name or an address, and a crashed run's leftovers are
found by their prefix and removed by the next run that claims the same block):

- bridge `kst<n>br` with 10.244.<n>.1/24 in the host's namespace: the node's address
  (hostIP), through which the host reaches every pod IP;
- pod `i`: netns `kst<n>-p<i>`, veth `kst<n>h<i>` (host side, on the bridge) / `eth0`
  (pod side), address 10.244.<n>.<i>/24. Pods get no default route: 10.96.0.0/16
  (the apiserver's --service-cluster-ip-range) goes to the proxy, the bridge's /24 is
  on-link, and every other destination is unreachable, so no traffic can leave the
  namespaces the run created;
- the proxy: netns `kst<n>-proxy` at 10.244.<n>.254, which owns every ClusterIP (on its
  lo) and plays kube-proxy in userspace: it listens on ClusterIP:port and forwards each
  connection to a ready endpoint from the Service's EndpointSlices (or, for the
  `kubernetes` Service, to the apiserver on the host's 127.0.0.1). The listening sockets
  are made inside that namespace; the forwarding connections are made from the host,
  which reaches pod IPs over the bridge and the apiserver on its loopback.

The host has ip_forward off, so nothing from a pod is routed onward by the host.
Processes on the host (a "client outside the pod network") reach a Service through a
loopback address from the run's `AddressBlock` (like a NodePort), named in the run's
`PrivateHosts` file.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")  # kastor-controlplane's --service-cluster-ip-range
PROXY_HOST = 254
NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One `ip` command; a failure names the command and ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """fn() run on a thread that has entered network namespace `netns` (setns is per thread,
    so the caller's namespace never changes). Sockets made there stay in that namespace."""
    result: list[Any] = []

    def body() -> None:
        try:
            with open(NETNS_DIR / netns) as target:
                if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into network namespace {netns} failed")
            result.append((True, fn()))
        except BaseException as e:  # handed to the caller
            result.append((False, e))

    thread = threading.Thread(target=body, name=f"netns-{netns}")
    thread.start()
    thread.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value


def remove_leftovers(prefix: str) -> list[str]:
    """Deletes every netns, link and /etc/netns directory named `prefix`* (a crashed run's).
    Returns what it removed."""
    removed = []
    for line in run_ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(prefix):
            run_ip("netns", "del", name, check=False)
            removed.append(f"netns {name}")
    for line in run_ip("-o", "link", "show").stdout.splitlines():
        match = re.match(r"\d+: ([^:@]+)", line)
        if match and match.group(1).startswith(prefix):
            run_ip("link", "del", match.group(1), check=False)
            removed.append(f"link {match.group(1)}")
    if ETC_NETNS.is_dir():
        for path in ETC_NETNS.glob(prefix + "*"):
            for child in path.iterdir():
                child.unlink()
            path.rmdir()
            removed.append(str(path))
    return removed


class PodNetwork:
    """The run's bridge, pod namespaces and proxy namespace (see the module docstring)."""

    def __init__(self, number: int) -> None:
        if not 0 <= number < 250:
            raise ValueError(f"run number {number} out of range: pod CIDRs are 10.244.<n>.0/24 with n < 250")
        self.prefix = f"kst{number}"
        self.subnet = ipaddress.ip_network(f"10.244.{number}.0/24")
        self.gateway = str(self.subnet[1])
        self.proxy_ip = str(self.subnet[PROXY_HOST])
        self.bridge = f"{self.prefix}br"
        self.proxy_netns = f"{self.prefix}-proxy"
        self._next = 2
        self._free: list[int] = []
        self._lock = threading.Lock()
        self.cluster_ips: set[str] = set()
        self.pods: dict[str, tuple[int, str, str, str]] = {}  # netns -> (host number, namespace, hostname, IP)
        self.names: dict[str, list[tuple[str, str]]] = {}  # namespace -> [(IP, Service name)]

    # ---- the run ----

    def create(self) -> PodNetwork:
        remove_leftovers(self.prefix)
        run_ip("link", "add", self.bridge, "type", "bridge")
        run_ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        run_ip("link", "set", self.bridge, "up")
        self._attach(self.proxy_netns, PROXY_HOST)
        return self

    def destroy(self) -> None:
        """Removes everything the run made (also after a failure half-way)."""
        remove_leftovers(self.prefix)

    def _attach(self, netns: str, host: int) -> str:
        ip = str(self.subnet[host])
        veth = f"{self.prefix}h{host}"
        run_ip("netns", "add", netns)
        run_ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        run_ip("link", "set", veth, "master", self.bridge, "up")
        run_ip("-n", netns, "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0")
        run_ip("-n", netns, "link", "set", "eth0", "up")
        run_ip("-n", netns, "link", "set", "lo", "up")
        return ip

    # ---- pods ----

    def add_pod(self, hostname: str, namespace: str) -> tuple[str, str]:
        """A new pod namespace: (netns name, pod IP). Its hosts file starts with its own name."""
        with self._lock:
            if self._free:
                host = self._free.pop()
            else:
                if self._next >= PROXY_HOST:
                    raise RuntimeError(f"pod CIDR {self.subnet} is full ({PROXY_HOST - 2} pods): delete pods first")
                host, self._next = self._next, self._next + 1
        netns = f"{self.prefix}-p{host}"
        ip = self._attach(netns, host)
        run_ip("-n", netns, "route", "add", str(SERVICE_CIDR), "via", self.proxy_ip)
        etc = ETC_NETNS / netns
        etc.mkdir(parents=True, exist_ok=True)
        # No DNS server exists: the resolver asks the pod's own loopback, where nothing listens,
        # so an unknown name fails at once and no query leaves the pod.
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        with self._lock:
            self.pods[netns] = (host, namespace, hostname, ip)
            (etc / "hosts").write_text(self._hosts_text(netns))
        return netns, ip

    def remove_pod(self, netns: str) -> None:
        with self._lock:
            entry = self.pods.pop(netns, None)
        host = entry[0] if entry else None
        # A container runtime kills every process of a pod's sandbox, not just each container's
        # process group: a process that left its group (a worker in a session of its own) would
        # outlive the pod, still talking to its head, and keep the namespace alive after `ip
        # netns del`, with the veth named after this address; the next pod given the address
        # then failed ("File exists"). So: every process still in the namespace, then the veth
        # (deleting one end of a pair deletes both), then the name.
        for pid in run_ip("netns", "pids", netns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if host is not None:
            run_ip("link", "del", f"{self.prefix}h{host}", check=False)
        run_ip("netns", "del", netns, check=False)
        shutil.rmtree(ETC_NETNS / netns, ignore_errors=True)  # idempotent: stop() may race a pod's own teardown
        if host is not None:
            with self._lock:
                self._free.append(host)

    def set_names(self, names: dict[str, list[tuple[str, str]]]) -> None:
        """The Services' names (namespace -> [(IP, name)]): every pod's /etc/hosts is rewritten."""
        with self._lock:
            if names == self.names:
                return
            self.names = names
            for netns in self.pods:
                self._write_hosts(netns, self._hosts_text(netns))

    def _hosts_text(self, netns: str) -> str:
        _, namespace, hostname, ip = self.pods[netns]
        lines = ["127.0.0.1 localhost", f"{ip} {hostname}"]
        for ns, entries in sorted(self.names.items()):
            for address, name in entries:
                short = f" {name}" if ns == namespace else ""
                lines.append(f"{address} {name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}{short}")
        return "\n".join(lines) + "\n"

    def _write_hosts(self, netns: str, content: str) -> None:
        """Rewrites the pod's /etc/hosts in place (it is bind-mounted, so the inode must stay):
        the new text over the old from offset 0, then the file cut to its length."""
        path = ETC_NETNS / netns / "hosts"
        if not path.exists():
            return
        data = content.encode()
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def exec_argv(self, netns: str, hostname: str, argv: list[str], mounts: list[tuple[str, str, bool]],
                  scratch: Path, keep: tuple[str, ...] = (), workdir: str | None = None) -> list[str]:
        """argv as a pod's process: in the pod's network namespace, a UTS namespace with the
        pod's hostname, and a mount namespace of its own (`ip netns exec` makes one, with the
        pod's hosts and resolv.conf), with each (host dir, mountPath, readOnly) bind-mounted.

        A mount point the host lacks is made inside the pod only: the nearest existing
        directory above it gets a private overlay (upper layer in `scratch`), so the host's
        filesystem is never written. A new top-level directory (e.g. /data) cannot be made
        that way (an overlay over / would hide /proc and the rest), and the host's / is not
        written either: such a mount is left out, and the process's working directory (the
        pod's own directory, kept across container restarts) serves instead, which is what an
        image whose WORKDIR is that volume (e.g. Redis's /data) needs.

        `keep` are the host paths that make up the "image" (the virtual environment, the
        PYTHONPATH entries, the pod's own directory). A volume mounted over a directory that
        holds one of them (an emptyDir on /tmp, where the test's venv lives) becomes an
        overlay with the volume as its upper layer: the pod writes into the volume and still
        sees its image. That is the one place a pod sees more than its volume's contents.

        `workdir` (the container's workingDir) becomes the process's working directory once the
        mounts are made, so a volume mounted there is where the process writes (Redis's data)."""
        overlays: list[str] = []
        mounts = [m for m in mounts if os.path.dirname(os.path.normpath(m[1])) != "/" or os.path.isdir(m[1])]
        # A mount over a directory that holds the volumes' host directories (the pod's /tmp over
        # the test's tmp, say) would hide them from the mounts after it: such mounts go last.
        sources = [os.path.realpath(src) for src, _, _ in mounts] + [str(scratch)]
        mounts = sorted(mounts, key=lambda m: any(s.startswith(os.path.realpath(m[1]).rstrip("/") + "/")
                                                  for s in sources))
        for _, dst, _ in mounts:
            if os.path.isdir(dst):
                continue
            parent = os.path.dirname(os.path.normpath(dst))
            while not os.path.isdir(parent):
                parent = os.path.dirname(parent)
            parent = os.path.realpath(parent)
            if parent == "/":  # a deeper path under a missing top-level directory
                raise ValueError(f"mountPath {dst} needs a new directory in /, which the process kubelet cannot make "
                                 f"without writing to the host's root: mount it under an existing directory")
            if not any(parent == o or parent.startswith(o + "/") for o in overlays):
                overlays = [o for o in overlays if not o.startswith(parent + "/")] + [parent]
        script = ['hostname "$0"']
        for i, lower in enumerate(sorted(overlays)):
            upper, work = scratch / f"overlay{i}" / "upper", scratch / f"overlay{i}" / "work"
            upper.mkdir(parents=True, exist_ok=True)
            work.mkdir(parents=True, exist_ok=True)
            script.append(f"mount -t overlay pod-overlay -o lowerdir={lower},upperdir={upper},workdir={work} {lower}")
        if any(o == "/etc" or o.startswith("/etc/") for o in overlays):  # the overlay hid ip's binds: again
            script.append(f"mount --bind {ETC_NETNS / netns / 'hosts'} /etc/hosts; "
                          f"mount --bind {ETC_NETNS / netns / 'resolv.conf'} /etc/resolv.conf")
        kept = [os.path.realpath(k) for k in keep]
        for i, (_, target, read_only) in enumerate(mounts):
            src, dst = f'"${{{2 * i + 1}}}"', f'"${{{2 * i + 2}}}"'
            prefix = os.path.realpath(target).rstrip("/") + "/"
            if any(k.startswith(prefix) for k in kept):
                work = scratch / f"volume{i}-work"
                work.mkdir(parents=True, exist_ok=True)
                script.append(f"mount -t overlay pod-volume -o lowerdir={dst},upperdir={src},workdir={work} {dst}")
                continue
            script.append(f"mkdir -p {dst}; mount --bind {src} {dst}")
            if read_only:
                script.append(f"mount -o remount,bind,ro {dst}")
        if workdir:
            script.append(f"cd {shlex.quote(workdir)}")
        script.append(f'shift {2 * len(mounts)}; exec "$@"')
        flat = [part for src, dst, _ in mounts for part in (src, dst)]
        return ["ip", "netns", "exec", netns, "unshare", "--uts", "sh", "-ec", "\n".join(script), hostname, *flat,
                *argv]

    # ---- the proxy ----

    def add_cluster_ip(self, ip: str) -> None:
        if ip not in self.cluster_ips:
            if ipaddress.ip_address(ip) not in SERVICE_CIDR:
                raise ValueError(f"ClusterIP {ip} is outside {SERVICE_CIDR}: the pods route only that range to the "
                                 f"proxy; start kastor-controlplane with that --service-cluster-ip-range")
            run_ip("-n", self.proxy_netns, "addr", "add", f"{ip}/32", "dev", "lo")
            self.cluster_ips.add(ip)

    def remove_cluster_ip(self, ip: str) -> None:
        if ip in self.cluster_ips:
            run_ip("-n", self.proxy_netns, "addr", "del", f"{ip}/32", "dev", "lo", check=False)
            self.cluster_ips.discard(ip)
