"""Every port a Kastor process listens on is its own: a busy one fails the start, naming the
port and the flag that picks another, instead of being shared with whoever holds it (gRPC's
SO_REUSEPORT default would let two heads split one port's connections between them)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from kastor.runtime import launcher

TOKEN = "ports-test-" + os.urandom(8).hex()


def _env(tmp: Path, token: str = TOKEN) -> dict[str, str]:
    env = dict(os.environ, KASTOR_TOKEN=token, KASTOR_SESSION_ROOT=str(tmp / "sessions"))
    env.pop("KASTOR_ADDRESS", None)
    env.pop("KASTOR_CLIENT_PORT", None)
    env.pop("KASTOR_DASHBOARD_PORT", None)
    return env


def _head(tmp: Path, name: str, port: int, client_port: int, dashboard_port: int) -> launcher.Child:
    return launcher.Child("kastor.runtime.head", ["--port", str(port), "--client-port", str(client_port),
                                                  "--dashboard-port", str(dashboard_port)],
                          _env(tmp, token=f"other-{name}"), str(tmp / f"{name}.log"))


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A head holding three ports: control, client and dashboard."""
    tmp = tmp_path_factory.mktemp("ports")
    ports = {"port": launcher.free_port(), "client": launcher.free_port(), "dashboard": launcher.free_port()}
    head = launcher.Child("kastor.runtime.head", ["--port", str(ports["port"]), "--client-port", str(ports["client"]),
                                                  "--dashboard-port", str(ports["dashboard"])],
                          _env(tmp), str(tmp / "head.log"))
    head.wait_ready()
    yield {"tmp": tmp, **ports}
    head.stop()


def _fails(child: launcher.Child, *expected: str) -> None:
    try:
        with pytest.raises(RuntimeError) as info:
            child.wait_ready()
    finally:
        child.stop()
    for text in expected:
        assert text in str(info.value), str(info.value)


def test_second_head_on_a_busy_control_port_fails(running):
    head = _head(running["tmp"], "same-port", running["port"], launcher.free_port(), launcher.free_port())
    _fails(head, f"cannot listen on 127.0.0.1:{running['port']} for the head", "already in use", "--port")


def test_busy_client_port_fails(running):
    head = _head(running["tmp"], "same-client", launcher.free_port(), running["client"], launcher.free_port())
    _fails(head, f"127.0.0.1:{running['client']} for the client port", "--client-port")


def test_busy_dashboard_port_fails(running):
    head = _head(running["tmp"], "same-dashboard", launcher.free_port(), launcher.free_port(), running["dashboard"])
    _fails(head, f"127.0.0.1:{running['dashboard']} for the dashboard", "--dashboard-port")


def test_node_agent_on_a_busy_port_fails(running):
    tmp = running["tmp"]
    node = launcher.Child("kastor.runtime.node_agent",
                          ["--address", f"127.0.0.1:{running['port']}", "--port", str(running["port"]),
                           "--session-dir", str(tmp)], _env(tmp), str(tmp / "node.log"))
    _fails(node, f"127.0.0.1:{running['port']} for the node agent", "--node-port")


def test_a_free_port_is_chosen_below_the_ephemeral_range():
    """bind(0) would hand out an ephemeral port, which any outgoing connection may take before
    the server binds it: free_port chooses below the kernel's ephemeral range instead."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    for _ in range(20):
        port = launcher.free_port()
        assert 10000 <= port < ephemeral_low
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free indeed
