"""The real Kubernetes control plane (`tests/k8s/controlplane/`: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler from Kubernetes' own Go modules, in one process),
started once per test session.

Every Kubernetes test that needs an API server takes the `real_k8s` fixture: real CEL rules,
RBAC, validation of every kind, garbage collection by the real controller. Reconcile
decisions are tested without any server, on the pure plans (test_plans.py).

The binary is built by `tests/k8s/controlplane/build.sh` (CI does it in `.ci/run`). When it
is absent the fixture skips, unless `KASTOR_REQUIRE_CONTROLPLANE` is set (CI sets it): then
it fails, so a broken build can never turn into silently skipped tests.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest
import requests

CONTROLPLANE_DIR = Path(__file__).resolve().parent / "controlplane"
BINARY = CONTROLPLANE_DIR / "bin" / "kastor-controlplane"
READY_LINE = "kastor-controlplane ready"
START_TIMEOUT = 240.0  # ready in ~15 s; generous for a loaded 2-core machine, under pytest-timeout's 300 s
STOP_TIMEOUT = 60.0


@dataclass
class ControlPlane:
    """A running control plane: where its admin kubeconfig is, and a client authenticated
    with the admin's certificate (group system:masters)."""

    kubeconfig: Path
    server: str
    api_client: kubernetes.client.ApiClient
    log: Path
    pid: int

    def client_with_token(self, token: str) -> kubernetes.client.ApiClient:
        """An ApiClient for the same server that authenticates with a bearer token only
        (no client certificate), e.g. a ServiceAccount's token."""
        admin = self.api_client.configuration
        config = kubernetes.client.Configuration()
        config.host = admin.host
        config.ssl_ca_cert = admin.ssl_ca_cert
        config.api_key = {"authorization": f"Bearer {token}"}
        return kubernetes.client.ApiClient(config)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the components' log (klog and etcd), for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"


def _required() -> bool:
    return os.environ.get("KASTOR_REQUIRE_CONTROLPLANE", "") not in ("", "0")


def _binary() -> Path:
    return Path(os.environ.get("KASTOR_CONTROLPLANE_BIN", BINARY))


def _wait_ready_line(proc: subprocess.Popen[str], log: Path) -> str:
    """Reads the control plane's stdout until its ready line; fails with the log's tail if
    the process exits first or the line does not come within START_TIMEOUT."""
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(READY_LINE):
                return line.strip()
            if line:
                seen.append(line.rstrip())
                continue
        if proc.poll() is not None:
            break
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
    state = f"exited with {proc.returncode}" if proc.poll() is not None else f"not ready after {START_TIMEOUT:.0f}s"
    raise RuntimeError(f"kastor-controlplane {state}; stdout: {seen!r}; log tail:\n{tail}")


def _wait_readyz(client: kubernetes.client.ApiClient, timeout: float = 60.0) -> None:
    """Polls /readyz with the admin's client certificate (the same files the client uses)."""
    config = client.configuration
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            answer = requests.get(
                f"{config.host}/readyz", cert=(config.cert_file, config.key_file), verify=config.ssl_ca_cert, timeout=10
            )
            if answer.status_code == 200:
                return
            last = f"{answer.status_code}: {answer.text[-500:]}"
        except requests.RequestException as e:
            last = e
        time.sleep(0.2)
    raise RuntimeError(f"kube-apiserver /readyz did not answer 200 within {timeout:.0f}s (last: {last})")


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then wait: the control plane must exit 0 on its own."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"kastor-controlplane did not stop within {STOP_TIMEOUT:.0f}s of SIGTERM") from None


@pytest.fixture(scope="session")
def real_k8s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One real control plane for the whole session; stopped (and checked to exit 0) at
    its end."""
    binary = _binary()
    if not binary.is_file():
        message = (
            f"the control plane binary {binary} is missing: build it with tests/k8s/controlplane/build.sh "
            "(needs Go and the Go module proxy)"
        )
        if _required():
            pytest.fail(message + "; KASTOR_REQUIRE_CONTROLPLANE is set, so this is an error, not a skip")
        pytest.skip(message)
    data = tmp_path_factory.mktemp("controlplane")
    kubeconfig = data / "admin.kubeconfig"
    log = data / "controlplane.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [str(binary), "--data-dir", str(data / "state"), "--kubeconfig-out", str(kubeconfig), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    try:
        line = _wait_ready_line(proc, log)
        server = next(w.split("=", 1)[1] for w in line.split() if w.startswith("server="))
        api_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        _wait_readyz(api_client)
    except BaseException:
        _stop(proc)
        raise
    try:
        yield ControlPlane(kubeconfig=kubeconfig, server=server, api_client=api_client, log=log, pid=proc.pid)
    finally:
        api_client.close()
        _stop(proc)
        if proc.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            raise RuntimeError(f"kastor-controlplane exited with {proc.returncode} after SIGTERM; log tail:\n{tail}")
