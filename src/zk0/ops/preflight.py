"""Before a SuperNode starts: can this node reach the server, and do both sides agree on TLS?

Flower's SuperNode retries a failed connection for minutes and then reports a generic
error; a TLS handshake of our own answers in seconds and names the mismatch.
"""

from __future__ import annotations

import socket
import ssl


class PreflightError(RuntimeError):
    """The server cannot be used as configured; the message says why and what to do."""


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise PreflightError(f"server address '{address}' is not HOST:PORT (e.g. fl.example.org:9092)")
    return host.strip("[]"), int(port)


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as err:
        raise PreflightError(f"cannot resolve server host '{host}' ({err.strerror}); check --server/ZK0_SERVER") from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise PreflightError(
            f"could not connect to the server at {host}:{port} ({reason}); check --server/ZK0_SERVER, "
            f"that the server runs ('zk0bot server status' there) and firewalls"
        ) from None


def check_tls(address: str, ca_cert: str, timeout: float = 5.0) -> None:
    """A TLS handshake verified against `ca_cert`, for the host name in `address`."""
    host, port = split_address(address)
    try:
        context = ssl.create_default_context(cafile=ca_cert)
    except (OSError, ssl.SSLError) as err:
        raise PreflightError(f"CA certificate '{ca_cert}' is not a readable PEM certificate ({err}); get ca.crt from the admin") from None
    with _connect(host, port, timeout) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=host):
                return
        except ssl.SSLCertVerificationError as err:
            if "hostname" in (err.verify_message or "").lower() or "match" in str(err).lower():
                raise PreflightError(
                    f"certificate/TLS mismatch: the server's certificate does not name '{host}'; connect with a name "
                    f"it lists, or ask the admin to add it (ZK0_SERVER_HOSTNAMES) and restart the server"
                ) from None
            raise PreflightError(
                f"certificate/TLS mismatch: the server's certificate is not signed by {ca_cert} "
                f"({err.verify_message}); get the current ca.crt from the server admin"
            ) from None
        except ssl.SSLError as err:
            if "WRONG_VERSION_NUMBER" in str(err) or "record layer" in str(err):
                raise PreflightError(
                    f"certificate/TLS mismatch: the server at {address} does not speak TLS (started with --insecure?); "
                    f"start this client with --insecure only if the admin really runs an insecure server"
                ) from None
            raise PreflightError(f"certificate/TLS mismatch: TLS handshake with {address} failed ({err.reason or err})") from None
        except OSError as err:
            raise PreflightError(f"the server at {address} closed the connection during the TLS handshake ({err})") from None


def check_plain(address: str, timeout: float = 5.0) -> None:
    """For --insecure nodes: the server must answer plain HTTP, not TLS."""
    host, port = split_address(address)
    with _connect(host, port, timeout) as sock:
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        try:
            reply = sock.recv(512)
        except OSError:
            reply = b""
    if reply.startswith(b"\x15\x03") or b"HTTPS port" in reply or not reply.startswith(b"HTTP/"):
        raise PreflightError(
            f"certificate/TLS mismatch: the server at {address} uses TLS but this client was started with --insecure; "
            f"drop --insecure and pass the admin's ca.crt with --ca-cert"
        )
