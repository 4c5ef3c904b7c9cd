"""zk0.ops.fab: the copy `flwr run` reads holds exactly what Flower packs from the whole checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from zk0.ops.fab import app_files, copy_app

ROOT = Path(__file__).resolve().parents[2]


def test_the_copy_packs_into_the_same_fab_as_the_checkout(tmp_path: Path):
    """Flower walks the whole checkout (its .venv included) and filters; the copy gives the same bytes."""
    copy = copy_app(ROOT, tmp_path / "app")
    assert build_fab_from_disk(copy) == build_fab_from_disk(ROOT)
    assert sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file()) == sorted(app_files(ROOT))
    assert {Path("pyproject.toml"), Path(".gitignore"), Path("src/zk0/server_app.py")} <= set(app_files(ROOT)) and not [
        p for p in app_files(ROOT) if p.parts[:3] in (("src", "zk0", "ops"), ("src", "zk0", "tools"))]


def test_the_command_prints_a_new_folder_or_one_line_why_not(tmp_path: Path):
    made = subprocess.run([sys.executable, "-m", "zk0.ops.fab", str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    folder = Path(made.stdout.strip())
    assert folder.parent == tmp_path and (folder / "pyproject.toml").is_file()
    missing = subprocess.run([sys.executable, "-m", "zk0.ops.fab", str(tmp_path / "nowhere")], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 1 and missing.stdout == ""
    [line] = missing.stderr.splitlines()
    assert line.startswith(f"zk0: error: cannot copy the app of {ROOT} under {tmp_path / 'nowhere'}: "), line
