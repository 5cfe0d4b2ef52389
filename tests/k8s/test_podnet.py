"""The pod network's own bookkeeping, without a control plane: removing a pod ends every
process still in its network namespace (a process that left its container's process group
escaped the kubelet's kill, kept talking to its head, and kept the namespace alive after
`ip netns del`, with the veth named after the address), and the address goes to the next
pod."""

from __future__ import annotations

import subprocess

import pytest

from .isolation import AddressBlock
from .podnet import PodNetwork
from .real_cluster import netns_problem

pytestmark = pytest.mark.skipif(netns_problem() is not None, reason=f"{netns_problem()}")


def test_removing_a_pod_ends_its_stray_processes_and_frees_its_address():
    block = AddressBlock()
    network = PodNetwork(block.number).create()
    lingering = None
    try:
        netns, ip = network.add_pod("first", "default")
        lingering = subprocess.Popen(["ip", "netns", "exec", netns, "sh", "-c", "echo in; exec sleep 600"],
                                     stdout=subprocess.PIPE, text=True)
        assert lingering.stdout is not None and lingering.stdout.readline() == "in\n"  # inside the namespace
        network.remove_pod(netns)
        assert lingering.wait(10) == -9, "the stray process dies with its pod"
        again, again_ip = network.add_pod("second", "default")  # failed: veth "File exists"
        assert again_ip == ip, "the address is reused"
        eth0 = subprocess.run(["ip", "-n", again, "-o", "addr", "show", "eth0"], capture_output=True, text=True)
        assert f" {again_ip}/" in eth0.stdout, eth0
        veth = subprocess.run(["ip", "-o", "link", "show", f"{network.prefix}h{again_ip.rsplit('.', 1)[1]}"],
                              capture_output=True, text=True)
        assert f"master {network.bridge}" in veth.stdout, veth
    finally:
        if lingering is not None:
            lingering.kill()
            lingering.wait()
        network.destroy()
        block.release()
