"""Local TCP ports for zk0's own services: a server's SuperLink, proxies and admin port, a
simulation's SuperLink.

A port from bind(("127.0.0.1", 0)) lies in the kernel's ephemeral range, which every outgoing
connection and every other bind(0) draw from (Ray's workers alone bind hundreds): in the seconds
between choosing such a port and the service binding it, another process may take it. So ports
are chosen below the ephemeral range, from a random place in it, and checked free now.
ZK0_LOCAL_PORTS=LOW-HIGH narrows the choice, e.g. for parallel test workers, one range each.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

ENV = "ZK0_LOCAL_PORTS"
# Ray gives its workers 10002-19999 unless told otherwise; zk0's ports stay above them.
FIRST = 20000


class PortError(ValueError):
    """ZK0_LOCAL_PORTS is malformed, or no port in the range is free."""


def ephemeral_start(proc: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """The first port the kernel hands out for bind(0) and outgoing connections."""
    try:
        return int(proc.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; other kernels: IANA's 49152 lies above it


def port_range(environ: dict[str, str] | os._Environ = os.environ) -> range:
    """The ports zk0 may choose from: ZK0_LOCAL_PORTS, else FIRST up to the ephemeral range."""
    text = environ.get(ENV, "").strip()
    if not text:
        return range(FIRST, max(ephemeral_start(), FIRST + 1000))
    low, sep, high = text.partition("-")
    if not (sep and low.isdigit() and high.isdigit() and 1024 <= int(low) <= int(high) <= 65535):
        raise PortError(f"{ENV}={text!r} is not a range LOW-HIGH within 1024-65535; set it like 20000-20999 or unset it")
    return range(int(low), int(high) + 1)


def is_free(host: str, port: int) -> bool:
    """Can a server bind HOST:PORT now? SO_REUSEADDR as servers set it: a port whose last
    connections linger in TIME_WAIT is free to them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int = 1, host: str = "127.0.0.1", ports: range | None = None) -> list[int]:
    """COUNT distinct ports of PORTS (port_range()) free on HOST now, from a random place on, so
    that two callers at the same moment rarely pick the same one."""
    ports = port_range() if ports is None else ports
    start = random.randrange(len(ports))
    found: list[int] = []
    for step in range(len(ports)):
        port = ports[(start + step) % len(ports)]
        if is_free(host, port):
            found.append(port)
            if len(found) == count:
                return found
    raise PortError(f"fewer than {count} free ports in {ports.start}-{ports.stop - 1} on {host}; "
                    f"stop what uses them or widen {ENV}")
