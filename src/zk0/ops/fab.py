"""What `flwr run` packs into zk0's FAB, copied to a folder of its own for `flwr run` to read.

Flower 1.42's `flwr run APP_DIR` walks and resolves every file under APP_DIR before it keeps
those pyproject.toml's `fab-include` names: with a .venv inside (this checkout's, or the
install's under ~/zk0: 67,000 files) that took 10 s per run. A folder holding only
pyproject.toml, .gitignore and the files fab-include names gives Flower the same FAB, byte for byte
(tests/unit/test_fab.py), in a twentieth of a second.

    python -m zk0.ops.fab PARENT [--app APP_DIR]
        copy APP_DIR's app (default: this checkout) into a new folder under PARENT; print it
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[3]


def app_files(app_dir: Path) -> list[Path]:
    """pyproject.toml, .gitignore (Flower filters by it) and every file [tool.flwr.app] fab-include
    names, relative to app_dir; symbolic links left out, as Flower leaves them out."""
    project = tomllib.loads((app_dir / "pyproject.toml").read_text())
    patterns = project["tool"]["flwr"]["app"]["fab-include"]
    matched = {path.relative_to(app_dir) for pattern in patterns for path in app_dir.glob(pattern)
               if path.is_file() and not path.is_symlink()}
    ignore = [Path(".gitignore")] if (app_dir / ".gitignore").is_file() else []
    return [Path("pyproject.toml"), *ignore, *sorted(matched)]


def copy_app(app_dir: Path, dest: Path) -> Path:
    """Copies app_dir's app files into dest (created if missing) and returns dest."""
    dest.mkdir(parents=True, exist_ok=True)
    for relative in app_files(app_dir):
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(app_dir / relative, dest / relative)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zk0.ops.fab", description=__doc__.split("\n\n")[0])
    parser.add_argument("parent", type=Path, help="the folder to create the copy in")
    parser.add_argument("--app", type=Path, default=CHECKOUT, help="the app's folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        dest = copy_app(args.app, Path(tempfile.mkdtemp(prefix="zk0-app-", dir=args.parent)))
    except (OSError, KeyError, tomllib.TOMLDecodeError) as err:
        print(f"zk0: error: cannot copy the app of {args.app} under {args.parent}: {err}", file=sys.stderr)
        return 1
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
