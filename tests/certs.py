"""A throwaway CA and a server certificate for the DNS name `kastor`, as a cluster's TLS Secret
(or cert-manager) would hold them."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


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


def tls_material() -> dict[str, bytes]:
    """PEM bytes under the keys a kubernetes.io/tls Secret uses: tls.crt, tls.key, ca.crt."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kastor test CA")])
    ca_cert = _certificate("kastor test CA", ca_key, ca_name, ca_key, ca=True)
    cert = _certificate("kastor", key, ca_name, ca_key, ca=False, dns="kastor")
    return {"ca.crt": ca_cert.public_bytes(serialization.Encoding.PEM),
            "tls.crt": cert.public_bytes(serialization.Encoding.PEM),
            "tls.key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())}


def write_tls_files(directory: Path) -> dict[str, str]:
    """The material as files; returns their paths by role: ca, cert, key."""
    material = tls_material()
    for name, pem in material.items():
        (directory / name).write_bytes(pem)
    return {"ca": str(directory / "ca.crt"), "cert": str(directory / "tls.crt"), "key": str(directory / "tls.key")}
