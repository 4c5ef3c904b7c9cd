"""Which FABs this node runs: the zk0 its owner installed, and FABs the owner allowed by hash.

A FAB is the installed zk0 when it carries exactly the installed package's app modules
(`APP_FILES`, the patterns of zk0's `fab-include` under `src/zk0/`: the operator tools under
ops/ and tools/ never travel), byte for byte, besides its `pyproject.toml` (whose
ClientApp must be zk0's) and Flower's `.info/CONTENT` manifest. Comparing files, not the
FAB's own hash, keeps a FAB built from the same sources acceptable however Flower zips it
(and the pyproject's run-config defaults are the server's to choose anyway). Anything else
is refused before it touches the disk, unless the operator listed its SHA-256 with
`--allow-app`.

The installed package is located once, when the executor starts, without importing it:
a FAB's directory, put on `sys.path` by Flower's loader later, cannot shadow it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

APP_PACKAGE = "zk0"
CLIENTAPP = "zk0.client_app:app"
FAB_SOURCES = f"src/{APP_PACKAGE}/"
# What a zk0 FAB ships, relative to the package: pyproject.toml's fab-include is these under FAB_SOURCES.
APP_FILES = (
    "__init__.py", "client_app.py", "config.py", "server_app.py",
    "data/*.py", "node/*.py", "policy/*.py", "run/*.py", "server/*.py", "sim/*.py", "util/*.py", "wire/*.py",
)
FAB_PYPROJECT = "pyproject.toml"
FAB_MANIFEST = ".info/CONTENT"
MAX_PYPROJECT_BYTES = 1 << 20
SHA256 = re.compile(r"[0-9a-f]{64}")
_SHOWN_DIFFERENCES = 3


class RefusedApp(Exception):
    """The FAB is neither the installed zk0 nor allowed; the message is the reason the server receives.

    It ends with the fix, for the server's log and the node's: the usual cause is a server that
    upgraded zk0 before this node did."""


def installed_app_dir() -> Path:
    """The installed zk0 package's directory, found as an import would find it (not imported)."""
    spec = importlib.util.find_spec(APP_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(
            f"the '{APP_PACKAGE}' package is not installed in this Python environment; "
            f"start the executor with the Python that zk0 is installed in"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def parse_allowed(values: list[str]) -> frozenset[str]:
    """`--allow-app` values: FAB SHA-256 digests (64 hex digits, any case)."""
    allowed = set()
    for value in values:
        digest = value.strip().lower()
        if not SHA256.fullmatch(digest):
            raise ValueError(f"--allow-app takes a FAB's SHA-256 (64 hex digits), got '{value}'")
        allowed.add(digest)
    return frozenset(allowed)


@dataclass(frozen=True)
class AppPolicy:
    """The installed zk0 (its directory) and the FAB hashes the operator allowed besides it."""

    installed: Path
    allowed: frozenset[str] = frozenset()

    def check(self, fab: bytes, app_id: str, version: str) -> bool:
        """Return whether the FAB was allowed by hash (else it is the installed zk0); raise RefusedApp otherwise."""
        digest = hashlib.sha256(fab).hexdigest()
        if digest in self.allowed:
            return True
        differences = self.differences(fab)
        if differences:
            shown = "; ".join(differences[:_SHOWN_DIFFERENCES])
            more = f" (+{len(differences) - _SHOWN_DIFFERENCES} more)" if len(differences) > _SHOWN_DIFFERENCES else ""
            raise RefusedApp(
                f"refused: FAB sha256 {digest} ({app_id} {version}) is not this node's installed zk0: {shown}{more}; "
                f"if the server upgraded zk0, run 'zk0bot upgrade' on this node (or allow this FAB with --allow-app "
                f"{digest})"
            )
        return False

    def differences(self, fab: bytes) -> list[str]:
        """How the FAB differs from the installed zk0 (empty: it is the installed zk0)."""
        installed = {
            FAB_SOURCES + path.relative_to(self.installed).as_posix(): path
            for pattern in APP_FILES for path in sorted(self.installed.glob(pattern))
        }
        try:
            with zipfile.ZipFile(io.BytesIO(fab)) as archive:
                members = {info.filename: info for info in archive.infolist()}
                found = self._check_pyproject(archive, members.get(FAB_PYPROJECT))
                for name, info in members.items():
                    if name in (FAB_PYPROJECT, FAB_MANIFEST):
                        continue
                    if name not in installed:
                        found.append(f"it carries {name}, which the installed zk0 does not have")
                    elif not _same_bytes(archive, info, installed[name]):
                        found.append(f"{name} differs from the installed one")
                found += [f"it lacks {name}" for name in installed if name not in members]
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError) as err:
            return [f"it is not a readable FAB ({err})"]
        return found

    @staticmethod
    def _check_pyproject(archive: zipfile.ZipFile, info: zipfile.ZipInfo | None) -> list[str]:
        if info is None:
            return [f"it has no {FAB_PYPROJECT}"]
        if info.file_size > MAX_PYPROJECT_BYTES:
            return [f"its {FAB_PYPROJECT} is {info.file_size} bytes"]
        try:
            project = tomllib.loads(archive.read(info).decode())
            clientapp = project["tool"]["flwr"]["app"]["components"]["clientapp"]
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as err:
            return [f"its {FAB_PYPROJECT} names no ClientApp ({type(err).__name__}: {err})"]
        return [] if clientapp == CLIENTAPP else [f"its ClientApp is '{clientapp}', zk0's is '{CLIENTAPP}'"]


def _same_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bool:
    # The declared size first: a member is only decompressed up to what the installed file holds.
    expected = path.read_bytes()
    return info.file_size == len(expected) and archive.read(info) == expected
