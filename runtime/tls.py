"""Optional TLS for every Kastor connection, switched on by environment (a mounted Secret).

The cluster token authenticates peers; TLS keeps it, and everything else on the wire, private.
Every server and every channel is made here, so one setting covers the head, the client port,
node agents and workers alike:

- KASTOR_TLS_CERT / KASTOR_TLS_KEY: this process serves TLS with that certificate.
- KASTOR_TLS_CA: this process connects with TLS, trusting that CA (a notebook needs only this).
- KASTOR_TLS_SERVER_NAME (default "kastor"): the name checked in the server's certificate.
  Pod IPs change, so a cluster uses one certificate with this DNS name for all its pods.
"""

from __future__ import annotations

import socket
import ssl

import grpc
from kastor.runtime import settings

ENV_CERT, ENV_KEY, ENV_CA = settings.TLS_CERT.name, settings.TLS_KEY.name, settings.TLS_CA.name
ENV_SERVER_NAME = settings.TLS_SERVER_NAME.name


def _read(env: str) -> bytes | None:
    path = settings.get(env)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{env}={path} cannot be read: {e}") from None


def serving() -> bool:
    return settings.TLS_CERT.is_set()


class PortInUseError(RuntimeError):
    """A server could not listen on its port: it is taken (or not this host's to bind)."""


def server(options: list | tuple, interceptors: list) -> grpc.aio.Server:
    """A gRPC server that owns its port alone.

    gRPC turns SO_REUSEPORT on by default on Linux, so a second head started on a busy port
    would start too, and the kernel would split new connections between the two: clients
    would reach the wrong cluster (and get UNAUTHENTICATED) half of the time. Off, a busy
    port fails the start (see `add_port`).
    """
    return grpc.aio.server(options=[*options, ("grpc.so_reuseport", 0)], interceptors=interceptors)


def add_port(server: grpc.aio.Server, address: str, what: str = "server", fix: str = "") -> int:
    """Binds `address` with TLS if this process has a certificate, else in plain text.

    Raises PortInUseError naming the port, `what` it was for and `fix` (how to pick another)
    when it cannot be bound: gRPC says so by returning 0 or raising a bare RuntimeError.
    """
    cert, key = _read(ENV_CERT), _read(ENV_KEY)
    if cert is not None and key is None:
        raise ValueError(f"{ENV_CERT} is set but {ENV_KEY} is not: TLS needs the private key too.")
    try:
        if cert is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
    except RuntimeError:  # gRPC's own message only says to turn on its debug log
        port = 0
    if not port:
        raise PortInUseError(port_in_use_message(address, what, fix))
    return port


def port_in_use_message(address: str, what: str, fix: str, detail: str = "") -> str:
    return (f"cannot listen on {address} for the {what}: the port is already in use (another Kastor "
            f"cluster started here? `kastor stop` ends those) or cannot be bound on this host"
            f"{f' ({detail})' if detail else ''}. {fix}").strip()


def server_ssl_context() -> ssl.SSLContext | None:
    """The data port's TLS (see data_server.py): this process's certificate, as `add_port` uses."""
    cert, key = settings.TLS_CERT.get(), settings.TLS_KEY.get()
    if not cert:
        return None
    if not key:
        raise ValueError(f"{ENV_CERT} is set but {ENV_KEY} is not: TLS needs the private key too.")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def client_ssl_context() -> ssl.SSLContext | None:
    """A data-port connection's TLS (see frame_stream.py): trusting KASTOR_TLS_CA, as channels do."""
    ca = _read(ENV_CA)
    if ca is None:
        return None
    return ssl.create_default_context(cadata=ca.decode())


def server_name() -> str:
    """The name checked in a server's certificate (pod IPs change; one name serves them all)."""
    return settings.TLS_SERVER_NAME.get()


def _secure_options(options: list | tuple) -> list:
    return [*options, ("grpc.ssl_target_name_override", settings.TLS_SERVER_NAME.get())]


def channel_trusting(target: str, ca: bytes, options: list | tuple = ()) -> grpc.Channel:
    """A blocking channel that checks the server against `ca` (the operator: one CA per cluster)."""
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca),
                               options=_secure_options(options))


def aio_channel_trusting(target: str, ca: bytes, options: list | tuple = ()) -> grpc.aio.Channel:
    """An asyncio channel that checks the server against `ca` (the operator's watch of a TLS cluster's head)."""
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca),
                                   options=_secure_options(options))


def aio_channel(target: str, options: list | tuple = ()) -> grpc.aio.Channel:
    ca = _read(ENV_CA)
    if ca is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca),
                                   options=_secure_options(options))


def channel(target: str, options: list | tuple = ()) -> grpc.Channel:
    """A blocking-API channel (the operator, tools), with the same TLS rule."""
    ca = _read(ENV_CA)
    if ca is None:
        return grpc.insecure_channel(target, options=list(options))
    return channel_trusting(target, ca, options)


def speaks_tls(address: str, timeout: float = 3.0) -> bool:
    """Whether the server at `address` completes a TLS handshake. Only asked to explain a failed
    connection (a plain-text client sees nothing but "Socket closed" from a TLS port)."""
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout) as sock:
            with context.wrap_socket(sock):
                return True
    except (OSError, ValueError):  # ssl.SSLError is an OSError
        return False


def unreachable_hint(address: str) -> str:
    """What to add to "could not reach `address`" when the cause is a missing CA."""
    if settings.TLS_CA.is_set() or not speaks_tls(address):
        return ""
    return (f" The server at {address} speaks TLS, and this process has no CA to check it with: set "
            f"{ENV_CA} to the cluster's CA certificate file (ca.crt of its TLS Secret).")
