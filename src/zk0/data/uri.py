"""Dataset URIs: where a node's LeRobot dataset lives.

- `hf:owner/name`   a dataset on the Hugging Face Hub (or already in the local HF cache)
- `owner/name`      shorthand for `hf:owner/name`
- `local:/abs/path` a LeRobot dataset root on this machine

Any of them may end in `#I/N`: the I-th (from 0) of N disjoint, contiguous blocks of the
dataset's episodes. Nodes given different shards of one dataset train on different episodes
and are told apart by their URI (simulation deals one shared demo dataset out this way).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHARD = re.compile(r"#(\d+)/(\d+)$")


class URIError(ValueError):
    """A dataset URI that cannot be parsed."""


@dataclass(frozen=True)
class DatasetURI:
    scheme: str  # "hf" or "local"
    location: str  # repo id for hf, absolute path for local
    shard: tuple[int, int] | None = None  # (I, N): the I-th of N blocks of episodes; None: all

    @property
    def repo_id(self) -> str:
        """The LeRobot repo id: the hub id, or `local/<dir name>` for a local root."""
        return self.location if self.scheme == "hf" else f"local/{Path(self.location).name}"

    @property
    def root(self) -> Path | None:
        return Path(self.location) if self.scheme == "local" else None

    def episodes(self, total: int) -> list[int]:
        """The episode indices this URI names, of a dataset holding `total` episodes."""
        if self.shard is None:
            return list(range(total))
        index, count = self.shard
        return list(range(index * total // count, (index + 1) * total // count))

    def __str__(self) -> str:
        shard = f"#{self.shard[0]}/{self.shard[1]}" if self.shard else ""
        return f"{self.scheme}:{self.location}{shard}"


def parse_dataset_uri(text: str) -> DatasetURI:
    text = text.strip()
    base, shard = _split_shard(text)
    if base.startswith("local:"):
        path = base[len("local:"):]
        if not path.startswith("/"):
            raise URIError(f"'{text}' is not a valid dataset URI: local: needs an absolute path, e.g. local:/data/my_dataset")
        return DatasetURI("local", str(Path(path)), shard)
    repo_id = base[len("hf:"):] if base.startswith("hf:") else base
    if not _REPO_ID.match(repo_id):
        raise URIError(
            f"'{text}' is not a valid dataset URI: use hf:owner/name, owner/name or local:/absolute/path"
        )
    return DatasetURI("hf", repo_id, shard)


def _split_shard(text: str) -> tuple[str, tuple[int, int] | None]:
    match = _SHARD.search(text)
    if not match:
        return text, None
    index, count = int(match.group(1)), int(match.group(2))
    if not index < count:
        raise URIError(f"'{text}' is not a valid dataset URI: shard #{index}/{count} needs I < N (I counts from 0)")
    return text[: match.start()], (index, count)
