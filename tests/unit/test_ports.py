"""zk0.ops.ports: local ports below the ephemeral range, ZK0_LOCAL_PORTS, and refusals."""

from __future__ import annotations

import socket

import pytest

from zk0.ops.bot import main
from zk0.ops.ports import FIRST, PortError, ephemeral_start, free_ports, is_free, port_range


def test_default_range_lies_between_ray_workers_and_the_ephemeral_range(tmp_path):
    ports = port_range({})
    assert ports.start == FIRST and ports.stop == max(ephemeral_start(), FIRST + 1000)
    proc = tmp_path / "ip_local_port_range"
    proc.write_text("40000\t60999\n")
    assert ephemeral_start(proc) == 40000
    assert ephemeral_start(tmp_path / "absent") == 32768


@pytest.mark.parametrize("text", ["20000", "20000-", "b-20010", "20010-20000", "80-90", "20000-70000", "-5-10"])
def test_a_malformed_range_is_refused_in_one_line(text):
    with pytest.raises(PortError, match="ZK0_LOCAL_PORTS=.* is not a range LOW-HIGH") as caught:
        port_range({"ZK0_LOCAL_PORTS": text})
    assert "\n" not in str(caught.value)


def test_ports_come_from_the_range_distinct_and_free():
    ports = port_range({"ZK0_LOCAL_PORTS": "20000-20999"})
    chosen = free_ports(5, ports=ports)
    assert len(set(chosen)) == 5 and all(port in ports for port in chosen)
    assert all(is_free("127.0.0.1", port) for port in chosen)


def test_a_held_port_is_skipped_and_a_full_range_refused():
    port = next(port for port in range(20000, 21000) if is_free("127.0.0.1", port) and is_free("127.0.0.1", port + 1))
    with socket.create_server(("127.0.0.1", port)):
        assert not is_free("127.0.0.1", port)
        # The start is random: from either, the held port is passed over.
        assert {free_ports(ports=range(port, port + 2))[0] for _ in range(20)} == {port + 1}
        with pytest.raises(PortError, match=f"fewer than 1 free ports in {port}-{port} on 127.0.0.1"):
            free_ports(ports=range(port, port + 1))


def test_bot_prints_free_ports_and_refuses_a_bad_range_in_one_line(capsys, monkeypatch):
    assert main(["free-port", "--count", "3"]) == 0
    chosen = [int(word) for word in capsys.readouterr().out.split()]
    assert len(set(chosen)) == 3 and all(port in port_range() for port in chosen)
    monkeypatch.setenv("ZK0_LOCAL_PORTS", "9-8")
    assert main(["free-port"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "ZK0_LOCAL_PORTS='9-8'" in err


def test_bot_port_free_answers_by_its_status(capsys):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        assert main(["port-free", "127.0.0.1", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
    assert main(["port-free", "127.0.0.1", str(port)]) == 0
