"""Dataset URIs: where a node's LeRobot dataset lives.

- `hf:owner/name`   a dataset on the Hugging Face Hub (or already in the local HF cache)
- `owner/name`      shorthand for `hf:owner/name`
- `local:/abs/path` a LeRobot dataset root on this machine
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class URIError(ValueError):
    """A dataset URI that cannot be parsed."""


@dataclass(frozen=True)
class DatasetURI:
    scheme: str  # "hf" or "local"
    location: str  # repo id for hf, absolute path for local

    @property
    def repo_id(self) -> str:
        """The LeRobot repo id: the hub id, or `local/<dir name>` for a local root."""
        return self.location if self.scheme == "hf" else f"local/{Path(self.location).name}"

    @property
    def root(self) -> Path | None:
        return Path(self.location) if self.scheme == "local" else None

    def __str__(self) -> str:
        return f"{self.scheme}:{self.location}"


def parse_dataset_uri(text: str) -> DatasetURI:
    text = text.strip()
    if text.startswith("local:"):
        path = text[len("local:"):]
        if not path.startswith("/"):
            raise URIError(f"'{text}' is not a valid dataset URI: local: needs an absolute path, e.g. local:/data/my_dataset")
        return DatasetURI("local", str(Path(path)))
    repo_id = text[len("hf:"):] if text.startswith("hf:") else text
    if not _REPO_ID.match(repo_id):
        raise URIError(
            f"'{text}' is not a valid dataset URI: use hf:owner/name, owner/name or local:/absolute/path"
        )
    return DatasetURI("hf", repo_id)
