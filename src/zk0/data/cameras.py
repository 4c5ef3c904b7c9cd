"""Camera names: every node must feed the federation's policy the same cameras.

Robot owners name their cameras differently (`observation.images.top` here,
`observation.images.front` there). A node maps its names onto the federation's with the
node-config key `rename-map`, a JSON object of old -> new feature names, as LeRobot's
`--rename_map` (RenameObservationsProcessorStep) takes it:

    zk0bot client start local:/data/arm --rename-map '{"observation.images.top": "observation.images.front"}'

In simulation, where nodes have no node config of their own, the run-config key
`rename-maps` holds one such map per dataset URI (zk0.config).

The federation's cameras are those of the server's policy (its eval dataset's, after the
same kind of mapping). At the start of a run each node reports its cameras (after renaming);
a node whose cameras cannot feed the policy is refused with one line, and it refuses to
train on its own when told the federation's cameras.
"""

from __future__ import annotations

import json

import torch

CAMERA_PREFIX = "observation.images."


class CameraError(ValueError):
    """A node's cameras cannot feed the federation's policy, or its rename-map is malformed."""


NODE_CONFIG = "node-config 'rename-map'"
RUN_CONFIG = "run-config 'rename-maps'"


def parse_rename_map(text: str | None, source: str = NODE_CONFIG) -> dict[str, str]:
    """A rename map from its JSON text; `source` names where it came from in errors."""
    if not text:
        return {}
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as err:
        raise CameraError(f"{source} is not JSON ({err.msg}); write it as "
                          f"'{{\"observation.images.top\": \"observation.images.front\"}}'") from None
    return checked_rename_map(mapping, source)


def checked_rename_map(mapping: object, source: str) -> dict[str, str]:
    """`mapping` if it is a rename map: camera feature -> camera feature, one-to-one."""
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise CameraError(f"{source} must be a JSON object of feature name -> feature name")
    for old, new in mapping.items():
        if not (old.startswith(CAMERA_PREFIX) and new.startswith(CAMERA_PREFIX)):
            raise CameraError(f"{source} maps '{old}' -> '{new}'; only camera features "
                              f"({CAMERA_PREFIX}*) can be renamed")
    if len(set(mapping.values())) != len(mapping):
        raise CameraError(f"{source} maps two cameras onto the same name")
    return mapping


def _rename_key(key: str, rename_map: dict[str, str]) -> str:
    base, pad = (key[: -len("_is_pad")], "_is_pad") if key.endswith("_is_pad") else (key, "")
    return rename_map.get(base, base) + pad


def renamed(mapping: dict, rename_map: dict[str, str]) -> dict:
    """A features (or stats, or sample) dict with its camera keys (and their `_is_pad` masks) renamed."""
    if not rename_map:
        return mapping
    return {_rename_key(key, rename_map): value for key, value in mapping.items()}


def cameras(features: dict) -> list[str]:
    return sorted(key for key in features if key.startswith(CAMERA_PREFIX))


# How a node maps its cameras: node-config `rename-map` in deployment, run-config
# `rename-maps` in simulation (its nodes have no node config of their own).
RENAME_WAYS = {"node-config": "node-config rename-map", "run-config": "run-config rename-maps (one map per dataset URI)"}


def check(node_cameras: list[str], federation_cameras: list[str], how: str = "node-config") -> str | None:
    """Why these cameras cannot feed the federation's policy (None if they can); `how` is the
    way this node maps its cameras (a RENAME_WAYS key)."""
    if sorted(node_cameras) == sorted(federation_cameras):
        return None
    missing = sorted(set(federation_cameras) - set(node_cameras))
    extra = sorted(set(node_cameras) - set(federation_cameras))
    return (f"cameras {sorted(node_cameras)} cannot feed the federation's policy, which takes {sorted(federation_cameras)} "
            f"(missing {missing}, unexpected {extra}); map them with {RENAME_WAYS.get(how, RENAME_WAYS['node-config'])}, e.g. "
            f"'{{\"{extra[0] if extra else 'observation.images.X'}\": \"{missing[0] if missing else 'observation.images.Y'}\"}}'")


class RenamedDataset(torch.utils.data.Dataset):
    """A LeRobot dataset whose samples carry the federation's camera names."""

    def __init__(self, dataset, rename_map: dict[str, str]) -> None:
        self.dataset, self.rename_map = dataset, rename_map

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return renamed(self.dataset[index], self.rename_map)
