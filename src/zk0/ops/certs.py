"""Which names and addresses the server certificate must carry, and which it lacks.

zk0bot.sh makes and signs the certificates with openssl; this says what goes into them, in
openssl's subjectAltName form ("DNS:a,IP:b,..."): `python -m zk0.ops.bot sans HOST NAMES`,
`cert-sans CERT` and `missing-sans CERT SANS`.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from cryptography import x509


def _entry(name: str) -> str:
    return f"IP:{name}" if all(c in "0123456789." for c in name) or ":" in name else f"DNS:{name}"


def wanted(host: str, names: str) -> list[str]:
    """The SuperLink's own names (the proxy and zk0bot dial localhost), this machine's host
    name, every public address nodes dial (NAMES) and, when HOST is a specific bind address
    (not "", 0.0.0.0 or ::), HOST too. A certificate must carry all but HOST (behind NAT nodes
    dial a name, not the bind address): zk0's CA adds HOST for nodes that dial it."""
    sans = ["DNS:localhost", "IP:127.0.0.1", f"DNS:{socket.gethostname()}"]
    given = ([host] if host not in ("", "0.0.0.0", "::") else []) + [n for n in names.split(",") if n]
    for entry in map(_entry, given):
        if entry not in sans:
            sans.append(entry)
    return sans


def carried(cert: Path) -> list[str]:
    """The SANs a certificate carries, in the same form."""
    try:
        names = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return []
    return [f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)] + \
        [f"IP:{ip}" for ip in names.get_values_for_type(x509.IPAddress)]


def covers(cert_sans: list[str], san: str) -> bool:
    """Whether a TLS client dialing SAN accepts a certificate carrying CERT_SANS: an address
    in any spelling (IPv6), a name case-insensitively or by a wildcard for its first label."""
    if san.startswith("IP:"):
        address = ipaddress.ip_address(san[3:])
        return any(s.startswith("IP:") and ipaddress.ip_address(s[3:]) == address for s in cert_sans)
    name = san[4:].lower().rstrip(".")
    for entry in (s[4:].lower().rstrip(".") for s in cert_sans if s.startswith("DNS:")):
        first, _, rest = entry.partition(".")
        if entry == name or (first == "*" and rest and name.partition(".")[2] == rest and name.partition(".")[0]):
            return True
    return False


def missing(cert: Path, sans: list[str]) -> list[str]:
    """The SANs of SANS that CERT does not cover. This machine's host name is a convenience,
    never required: it may change."""
    have = carried(cert)
    return [san for san in sans if san != f"DNS:{socket.gethostname()}" and not covers(have, san)]
