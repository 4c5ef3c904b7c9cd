"""zk0.ops.bot: zk0bot's Python jobs, each refusal one line and exit 2."""

from __future__ import annotations

import base64
import http.server
import io
import json
import subprocess
import sys
import threading

import pytest

from zk0.ops.bot import main


def bot(capsys, *args: str, stdin: str = "") -> tuple[int, str, str]:
    capsys.readouterr()
    old, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        status = main(list(args))
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return status, out, err


def test_secret_is_256_random_bits(capsys):
    first, second = bot(capsys, "secret")[1], bot(capsys, "secret")[1]
    assert len(first) == 64 and int(first, 16) >= 0 and first != second


def test_flwr_credentials_hold_the_token_for_the_address(tmp_path, capsys):
    (tmp_path / "admin.token").write_text("s3cret\n")
    status, out, _ = bot(capsys, "flwr-credentials", "127.0.0.1:9093", str(tmp_path / "admin.token"))
    key = "flower.account-auth.127.0.0.1:9093"
    assert status == 0 and json.loads(out) == {
        f"{key}.authn-type": base64.b64encode(b"oidc").decode(),
        f"{key}.oidc-access-token": base64.b64encode(b"s3cret").decode(),
        f"{key}.oidc-refresh-token": base64.b64encode(b"s3cret").decode(),
    }


def test_json_get(capsys):
    assert bot(capsys, "json-get", "eval-dataset", stdin='{"eval-dataset": "local:/d"}')[:2] == (0, "local:/d\n")
    assert bot(capsys, "json-get", "eval-dataset", stdin="{}")[:2] == (0, "\n")
    assert bot(capsys, "json-get", "x", stdin="[1]") == (2, "", "the input is not a JSON object\n")


def write_node(nodes_dir, node_id: str, comment: str, name: str | None = None) -> None:
    (nodes_dir / f"{comment}.id").write_text(f"{node_id}\n")
    (nodes_dir / f"{comment}.pub").write_text(f"ecdsa-sha2-nistp384 AAAA {comment}\n")
    if name is not None:
        (nodes_dir / f"{comment}.name").write_text(name)


def test_node_table_names_kept_keys_online_first(tmp_path, capsys):
    write_node(tmp_path, "11", "zk0-node-a", name="alice")
    write_node(tmp_path, "22", "zk0-node-b")
    listing = json.dumps({"nodes": [{"node-id": "22", "status": "offline"}, {"node-id": "11", "status": "online"},
                                    {"node-id": "33", "status": "registered"}]})
    status, out, _ = bot(capsys, "nodes", str(tmp_path), "0", stdin="Loading...\n" + listing)
    lines = out.splitlines()
    assert status == 0 and lines[0] == "nodes: 3 (1 online, 1 offline, 1 registered)"
    assert [line.split()[:3] for line in lines[2:]] == [
        ["11", "online", "alice"], ["22", "offline", "zk0-node-b"], ["33", "registered", "(registered"]]
    assert lines[2].endswith("zk0-node-a")  # the key's comment, since the name differs
    status, out, _ = bot(capsys, "nodes", str(tmp_path), "1", stdin=listing)
    assert out.splitlines()[-1] == "... and 2 more (zk0bot server nodes --all)"


def test_node_table_empty_and_garbled(tmp_path, capsys):
    assert bot(capsys, "nodes", str(tmp_path), "0", stdin='{"nodes": []}')[1].splitlines() == [
        "nodes: 0 (0 online, 0 offline, 0 registered)", "(no nodes registered)"]
    status, out, err = bot(capsys, "nodes", str(tmp_path), "0", stdin="connection refused")
    assert (status, out) == (2, "") and err.startswith("Flower's node list is not JSON") and err.count("\n") == 1


@pytest.fixture
def http_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/health" else 403)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_probe_and_reachable(http_server, capsys):
    port = str(http_server)
    assert bot(capsys, "probe", port, "/health", "ok", "--scheme", "http")[0] == 0
    assert bot(capsys, "probe", port, "/", "403", "--scheme", "http")[0] == 0
    status, _, err = bot(capsys, "probe", port, "/", "ok", "--scheme", "http")
    assert status == 2 and err == f"http://127.0.0.1:{port}/ answered 403, expected ok\n"
    assert bot(capsys, "reachable", "127.0.0.1", port)[0] == 0
    http_server_closed = bot(capsys, "probe", "1", "/health", "ok", "--scheme", "http")
    assert http_server_closed[0] == 2 and http_server_closed[2].count("\n") == 1
    assert bot(capsys, "reachable", "127.0.0.1", "1")[0] == 2


def test_cheap_commands_do_not_load_torch():
    """zk0bot runs these on every start: torch's import alone takes seconds."""
    code = ("import sys; from zk0.ops.bot import main; "
            "[main(args) for args in (['secret'], ['version'], ['parse', '/tmp', 'client', 'start', 'hf:o/n', "
            "'--insecure'], ['parse', '/tmp', 'server', 'start', '--port', '9093'])]; "
            "print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.splitlines()[-1] == "False"


def test_imports_report(capsys):
    status, out, _ = bot(capsys, "imports")
    kinds = [line.split()[:2] for line in out.splitlines()]
    assert status == 0 and kinds[:5] == [["ok", name] for name in ("torch", "torchcodec", "flwr", "lerobot", "zk0")]
    assert kinds[5][0] == "cuda"
