"""TLS on every port: a cluster whose processes all serve TLS, a notebook that trusts its CA,
and plain-text peers that get nowhere."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys

import grpc
import kastor
import pytest
from kastor.runtime import auth, launcher, tls
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.protocol import kastor_pb2_grpc as pb_grpc

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

TOKEN = "tls-test-" + os.urandom(8).hex()


def _certificate(subject: str, key, issuer_name, issuer_key, *, ca: bool, dns: str | None = None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA and one server certificate for the DNS name `kastor`, as a cluster's Secret holds."""
    d = tmp_path_factory.mktemp("tls")
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kastor test CA")])
    ca_cert = _certificate("kastor test CA", ca_key, ca_name, ca_key, ca=True)
    cert = _certificate("kastor", key, ca_name, ca_key, ca=False, dns="kastor")
    (d / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (d / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return {"ca": str(d / "ca.pem"), "cert": str(d / "tls.crt"), "key": str(d / "tls.key")}


@pytest.fixture(scope="module")
def cluster(certs, tmp_path_factory):
    port, client_port = launcher.free_port(), launcher.free_port()
    env = dict(os.environ, KASTOR_TOKEN=TOKEN, KASTOR_SESSION_ROOT=str(tmp_path_factory.mktemp("sessions")),
               KASTOR_TLS_CERT=certs["cert"], KASTOR_TLS_KEY=certs["key"], KASTOR_TLS_CA=certs["ca"])
    env.pop("KASTOR_ADDRESS", None)
    head = subprocess.Popen([sys.executable, "-m", "kastor.runtime.cli", "start", "--head", "--block", "--port",
                             str(port), "--client-port", str(client_port), "--num-cpus", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert "started" in head.stdout.readline()
    yield {"head": f"127.0.0.1:{port}", "client": f"127.0.0.1:{client_port}"}
    head.terminate()
    head.wait(30)


def test_notebook_trusting_the_ca_runs_actors(cluster, certs, monkeypatch):
    monkeypatch.setenv(tls.ENV_CA, certs["ca"])
    kastor.init(f"kastor://{cluster['client']}", token=TOKEN)
    try:
        @kastor.remote
        class Greeter:
            def hi(self, who):
                return f"hi {who}"

        assert kastor.get(Greeter.remote().hi.remote("tls")) == "hi tls"
    finally:
        kastor.shutdown()


def test_plain_text_client_cannot_connect(cluster, monkeypatch):
    monkeypatch.delenv(tls.ENV_CA, raising=False)
    with pytest.raises(ConnectionError, match="Could not reach"):
        kastor.init(f"kastor://{cluster['client']}", token=TOKEN)


def test_internal_ports_serve_only_tls(cluster, certs, monkeypatch):
    with grpc.insecure_channel(cluster["head"]) as ch:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.HeadStub(ch).ListNodes(pb.ListRequest(), metadata=auth.metadata(TOKEN), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    monkeypatch.setenv(tls.ENV_CA, certs["ca"])
    with tls.channel(cluster["head"]) as ch:
        nodes = pb_grpc.HeadStub(ch).ListNodes(pb.ListRequest(), metadata=auth.metadata(TOKEN), timeout=10).nodes
        assert nodes and nodes[0].alive
        node_address = nodes[0].address
    with grpc.insecure_channel(node_address) as ch:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.NodeAgentStub(ch).FreeObjects(pb.FreeObjectsRequest(), metadata=auth.metadata(TOKEN), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
