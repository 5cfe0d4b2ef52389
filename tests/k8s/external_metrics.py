"""An external metrics API (`external.metrics.k8s.io/v1beta1`) the test serves itself, so an HPA
on the real control plane scales on a metric without a metrics adapter.

The real kube-apiserver's aggregator proxies the group to an APIService's Service; the
Service is an ExternalName one naming 127.0.0.1 (the aggregator dials an ExternalName's
name directly, as `k8s.io/apiserver/pkg/util/proxy.ResolveCluster` does, and checks no
endpoints for it), and the server is an HTTPS listener in the test process on the host's
loopback. It answers discovery and `GET .../namespaces/<ns>/<metric>` with the value the test
sets, and records the label selectors it was asked with.
"""

from __future__ import annotations

import datetime
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes

GROUP_VERSION = "external.metrics.k8s.io/v1beta1"
APISERVICE = "v1beta1.external.metrics.k8s.io"


def _self_signed(workdir: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (the APIService skips verifying it: insecureSkipTLSVerify)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "external-metrics-stub")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = workdir / "metrics-stub.crt", workdir / "metrics-stub.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class ExternalMetrics:
    """`values[metric] = "3"` sets what the API answers; `asked` lists (metric, labelSelector)."""

    def __init__(self, workdir: Path):
        self.values: dict[str, str] = {}
        self.asked: list[tuple[str, str]] = []
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                if url.path.rstrip("/") == f"/apis/{GROUP_VERSION}":
                    self._reply(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
                                      "resources": [{"name": "*", "singularName": "", "namespaced": True,
                                                     "kind": "ExternalMetricValueList", "verbs": ["get"]}]})
                elif len(parts) == 6 and parts[3] == "namespaces" and parts[5] in metrics.values:
                    selector = parse_qs(url.query).get("labelSelector", [""])[0]
                    metrics.asked.append((parts[5], selector))
                    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    self._reply(200, {"kind": "ExternalMetricValueList", "apiVersion": GROUP_VERSION, "metadata": {},
                                      "items": [{"metricName": parts[5], "metricLabels": {}, "timestamp": stamp,
                                                 "value": metrics.values[parts[5]]}]})
                else:
                    self._reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                                      "reason": "NotFound", "message": f"no {self.path} here"})

            def _reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        cert, key = _self_signed(workdir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="external-metrics", daemon=True)
        self._thread.start()

    def register(self, api_client: kubernetes.client.ApiClient, namespace: str, timeout: float) -> None:
        """The Service and APIService that route the group here; returns once the aggregator
        says the APIService is Available."""
        core = kubernetes.client.CoreV1Api(api_client)
        core.create_namespaced_service(namespace, {
            "metadata": {"name": "external-metrics-stub"},
            "spec": {"type": "ExternalName", "externalName": "127.0.0.1", "ports": [{"port": self.port}]}})
        kubernetes.client.ApiregistrationV1Api(api_client).create_api_service({
            "metadata": {"name": APISERVICE},
            "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": True,
                     "groupPriorityMinimum": 100, "versionPriority": 100,
                     "service": {"namespace": namespace, "name": "external-metrics-stub", "port": self.port}}})
        deadline = time.monotonic() + timeout
        while True:
            got = kubernetes.client.ApiregistrationV1Api(api_client).read_api_service(APISERVICE)
            available = next((c for c in got.status.conditions or [] if c.type == "Available"), None)
            if available is not None and available.status == "True":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"APIService {APISERVICE} not Available after {timeout:.0f}s: {available}")
            time.sleep(0.2)

    def unregister(self, api_client: kubernetes.client.ApiClient, namespace: str) -> None:
        """Removes the APIService first: an unavailable one breaks every client's discovery."""
        for delete in (lambda: kubernetes.client.ApiregistrationV1Api(api_client).delete_api_service(APISERVICE),
                       lambda: kubernetes.client.CoreV1Api(api_client).delete_namespaced_service(
                           "external-metrics-stub", namespace)):
            try:
                delete()
            except kubernetes.client.ApiException as e:
                if e.status != 404:
                    raise

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
