"""zk0.ops.certs: the names the server certificate must carry, as a TLS client checks them."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from zk0.ops.certs import carried, missing, wanted


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zk0-superlink")])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.DNSName("localhost"), x509.DNSName("*.example.org"), x509.DNSName("FL.Example.NET"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("2001:db8::1"))]
    built = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
             .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.SubjectAlternativeName(sans), critical=False).sign(key, hashes.SHA256()))
    path = tmp_path_factory.mktemp("certs") / "server.pem"
    path.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    return path


def test_wanted_names_localhost_this_host_the_public_names_and_a_specific_bind_address():
    here = f"DNS:{socket.gethostname()}"
    assert wanted("0.0.0.0", "fl.example.org,203.0.113.7") == [
        "DNS:localhost", "IP:127.0.0.1", here, "DNS:fl.example.org", "IP:203.0.113.7"]
    assert wanted("10.0.0.5", "") == ["DNS:localhost", "IP:127.0.0.1", here, "IP:10.0.0.5"]
    assert wanted("::", "::1,localhost") == ["DNS:localhost", "IP:127.0.0.1", here, "IP:::1"]


def test_carried_reads_the_certificate(cert):
    assert carried(cert) == ["DNS:localhost", "DNS:*.example.org", "DNS:FL.Example.NET", "IP:127.0.0.1",
                             "IP:2001:db8::1"]
    assert carried(cert.parent / "nope.pem") == []


@pytest.mark.parametrize(("san", "covered"), [
    ("DNS:localhost", True), ("DNS:fl.example.org", True), ("DNS:a.b.example.org", False),
    ("DNS:example.org", False), ("DNS:fl.example.net", True), ("DNS:other.org", False),
    ("IP:127.0.0.1", True), ("IP:2001:0db8:0:0:0:0:0:1", True), ("IP:10.0.0.1", False),
])
def test_missing_agrees_with_openssl(cert, san, covered):
    assert (missing(cert, [san]) == []) is covered
    check = ["-checkip", san[3:]] if san.startswith("IP:") else ["-checkhost", san[4:]]
    openssl = subprocess.run(["openssl", "x509", "-noout", "-in", str(cert), *check], capture_output=True, text=True)
    assert openssl.stdout.strip().endswith("does match certificate") is covered


def test_this_host_name_is_never_required(cert):
    assert missing(cert, [f"DNS:{socket.gethostname()}", "DNS:nowhere.test"]) == ["DNS:nowhere.test"]
