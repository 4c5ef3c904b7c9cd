"""Dataset URIs: `hf:owner/name`, bare `owner/name` and `local:/abs/path`, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from zk0.data.uri import DatasetURI, URIError, parse_dataset_uri


def test_hf_uri():
    """`hf:owner/name` is a hub dataset: its repo id is the hub id and it has no local root."""
    uri = parse_dataset_uri("hf:lerobot/svla_so100_pickplace")
    assert uri == DatasetURI("hf", "lerobot/svla_so100_pickplace")
    assert uri.repo_id == "lerobot/svla_so100_pickplace"
    assert uri.root is None
    assert str(uri) == "hf:lerobot/svla_so100_pickplace"


def test_bare_repo_id_means_hf():
    """`owner/name` is shorthand for `hf:owner/name` (the form pyproject's defaults use)."""
    assert parse_dataset_uri("gimarchetti/so101-winnie-us5") == parse_dataset_uri("hf:gimarchetti/so101-winnie-us5")


def test_local_uri():
    """`local:/abs/path` is a dataset root on this machine, normalized, with a `local/<dir>` repo id."""
    uri = parse_dataset_uri("local:/data/robots//arm_a/")
    assert uri == DatasetURI("local", "/data/robots/arm_a")
    assert uri.root == Path("/data/robots/arm_a")
    assert uri.repo_id == "local/arm_a"
    assert parse_dataset_uri(str(uri)) == uri


def test_surrounding_whitespace_is_ignored():
    """Values copied from comma lists often carry spaces."""
    assert parse_dataset_uri("  hf:a/b \n") == DatasetURI("hf", "a/b")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hf:",
        "dataset",
        "owner/name/extra",
        "owner/",
        "/owner/name",
        "owner name/x",
        "https://huggingface.co/datasets/a/b",
        "s3://bucket/data",
        "local:",
        "local:relative/path",
        "local:~/data",
    ],
)
def test_invalid_uri_gives_one_line_with_the_accepted_forms(text):
    """Anything else is a URIError on one line that quotes the input and says what would work."""
    with pytest.raises(URIError) as caught:
        parse_dataset_uri(text)
    message = str(caught.value)
    assert f"'{text.strip()}'" in message
    assert "local:/" in message
    assert "\n" not in message


def test_shard_suffix_names_a_block_of_episodes():
    """`#I/N` after any URI: the I-th of N disjoint contiguous blocks; the blocks cover every
    episode once, the files (root, repo id) stay the dataset's own, and the text round-trips."""
    uri = parse_dataset_uri("local:/data/demo/task_0#3/8")
    assert uri == DatasetURI("local", "/data/demo/task_0", (3, 8))
    assert uri.root == Path("/data/demo/task_0") and uri.repo_id == "local/task_0"
    assert str(uri) == "local:/data/demo/task_0#3/8" and parse_dataset_uri(str(uri)) == uri
    assert parse_dataset_uri("owner/name#0/2") == DatasetURI("hf", "owner/name", (0, 2))
    assert uri != parse_dataset_uri("local:/data/demo/task_0")
    for total in (8, 13, 50):
        blocks = [parse_dataset_uri(f"local:/d#{i}/8").episodes(total) for i in range(8)]
        assert sorted(sum(blocks, [])) == list(range(total))
        assert {len(block) for block in blocks} <= {total // 8, total // 8 + 1}
    assert parse_dataset_uri("local:/d").episodes(5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("text", ["local:/d#2/2", "local:/d#0/0", "owner/name#5/3"])
def test_shard_out_of_range_is_one_line(text):
    with pytest.raises(URIError, match=r"needs I < N") as caught:
        parse_dataset_uri(text)
    assert f"'{text}'" in str(caught.value)
