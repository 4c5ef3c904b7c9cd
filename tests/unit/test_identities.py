"""zk0.server.identities: the names registered with node keys, read back by node id."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zk0.server.identities import MAX_NAME, clean_name, names_in_key_dir, registered_names


def write(path: Path, data: object) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_reads_the_map_by_integer_node_id(tmp_path):
    path = write(tmp_path / "names.json", {"12345": "robot-7", "18446744073709551615": "arm"})
    assert registered_names(path) == {12345: "robot-7", 2**64 - 1: "arm"}


def test_defaults_to_the_path_in_ZK0_NODE_NAMES(tmp_path, monkeypatch):
    monkeypatch.setenv("ZK0_NODE_NAMES", write(tmp_path / "names.json", {"7": "robot-7"}))
    assert registered_names() == {7: "robot-7"}
    monkeypatch.delenv("ZK0_NODE_NAMES")
    assert registered_names() == {}


@pytest.mark.parametrize(
    "content",
    [None, b"", b"{not json", b"\xff\xfe", b"[1, 2]", b'"robot"', b"null", b"1e999"],
    ids=["missing", "empty", "garbled", "not-utf8", "list", "string", "null", "number"],
)
def test_a_missing_or_garbled_file_gives_no_names(tmp_path, content):
    path = tmp_path / "names.json"
    if content is not None:
        path.write_bytes(content)
    assert registered_names(str(path)) == {}


def test_a_directory_instead_of_a_file_gives_no_names(tmp_path):
    assert registered_names(str(tmp_path)) == {}


def test_bad_entries_are_left_out_and_the_rest_kept(tmp_path):
    path = write(
        tmp_path / "names.json",
        {"-1": "neg", "1.5": "float", "x": "word", str(2**64): "too big", "٣": "arabic digit",
         "8": 42, "9": "", "10": "\n\t", "11": ["list"], "12": "kept"},
    )
    assert registered_names(path) == {12: "kept"}


def test_names_are_printable_and_at_most_64_characters(tmp_path):
    path = write(tmp_path / "names.json", {"1": "robot\x1b[31m-7\n", "2": "é" * 200, "3": "  padded  "})
    names = registered_names(path)
    assert names == {1: "robot[31m-7", 2: "é" * MAX_NAME, 3: "padded"}
    assert all(name.isprintable() and len(name) <= MAX_NAME for name in names.values())


def test_clean_name_rejects_what_is_not_text():
    assert clean_name(None) == "" and clean_name(3) == "" and clean_name(" a\u200bb ") == "ab"


def test_the_key_directory_becomes_the_map_zk0bot_writes(tmp_path):
    keys = tmp_path / "nodes"
    keys.mkdir()
    (keys / "a.id").write_text("111\n")
    (keys / "a.name").write_text("robot-7\n")
    (keys / "b.id").write_text("(already registered)\n")  # no id known: no entry
    (keys / "b.name").write_text("robot-8\n")
    (keys / "c.id").write_text("333\n")  # registered before names existed: no .name file
    assert names_in_key_dir(keys) == {111: "robot-7"}
    out = tmp_path / "node-names.json"
    subprocess.run([sys.executable, "-m", "zk0.server.identities", str(keys), str(out)], check=True)
    assert json.loads(out.read_text()) == {"111": "robot-7"}
    assert registered_names(str(out)) == {111: "robot-7"}
