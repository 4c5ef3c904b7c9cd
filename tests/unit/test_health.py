"""zk0.ops.health: `zk0bot status --json` from what zk0bot sees (sessions, health) and keeps (settings)."""

from __future__ import annotations

from pathlib import Path

from zk0.ops.health import parse


def test_status_object_from_facts_and_settings(tmp_path: Path):
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "server.env").write_text(
        "port=9092\nhost=0.0.0.0\nnames=\nmode=secure\nlink_port=20001\nadmin_port=20002\n")
    client = tmp_path / "clients" / "demo-abc123"
    client.mkdir(parents=True)
    (client / "client.env").write_text("dataset-uri=local:/d\naddress=127.0.0.1\nport=9100\nserver=127.0.0.1:9092\n"
                                       "threads=2\nactivated=1\n")
    facts = ["version\tzk0 0.1.0, commit abc\n", "healthy\tyes\n", "pane\tzk0-superlink\t101\n",
             "pane\tzk0-supernode-demo-abc123\t202\n", "pane\tsomeone-elses\t303\n"]
    state = parse(facts, tmp_path)
    assert state["version"] == "zk0 0.1.0, commit abc"
    assert state["server"] == {"port": 9092, "host": "0.0.0.0", "names": "", "mode": "secure", "link_port": 20001,
                               "admin_port": 20002, "healthy": True}
    assert state["sessions"]["zk0-superlink"] == {"running": True, "pid": 101}
    assert state["sessions"]["zk0-proxy"] == {"running": False, "pid": None}
    assert "someone-elses" not in state["sessions"]
    assert state["clients"] == [{"dataset": "local:/d", "zk0-supernode": "202", "zk0-executor": "stopped",
                                 "server": "127.0.0.1:9092", "address": "127.0.0.1", "port": "9100", "threads": "2"}]


def test_a_fresh_home_has_nothing(tmp_path: Path):
    state = parse(["version\tzk0 0.1.0\n", "healthy\tno\n"], tmp_path)
    assert (state["server"], state["clients"], state["sessions"]) == (None, [], {})
