"""`zk0` command line: data and model helpers around the Flower apps.

    zk0 demo-data OUT_DIR [--clients K]   write K synthetic SO-100 datasets + a held-out eval set
    zk0 check-dataset URI                 check that a dataset opens and fits the policy
    zk0 prepare-tiny                      build the tiny SmolVLA in the cache (done lazily otherwise)
    zk0 baseline RUN_DIR                  train a run's centralized baseline with lerobot-train, compare
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zk0.data import DatasetError, open_node_data
from zk0.uri import URIError, parse_dataset_uri


def _demo_data(args: argparse.Namespace) -> int:
    from zk0.demo_data import DemoSpec, write_demo_federation

    spec = DemoSpec(episodes=args.episodes, frames_per_episode=args.frames)
    roots = write_demo_federation(Path(args.out_dir).resolve(), args.clients, spec)
    print(",".join(f"local:{root}" for root in roots[:-1]))
    print(f"local:{roots[-1]}")
    return 0


def _check_dataset(args: argparse.Namespace) -> int:
    data = open_node_data(parse_dataset_uri(args.uri), args.action_dim, args.heldout_episodes)
    print(
        f"ok: {data.uri} ({data.meta.total_episodes} episodes, {data.meta.total_frames} frames, "
        f"{data.meta.fps} fps, cameras {', '.join(data.meta.camera_keys)})"
    )
    return 0


def _prepare_tiny(_: argparse.Namespace) -> int:
    from zk0.model import ensure_tiny_policy
    from zk0.paths import cache_dir

    print(ensure_tiny_policy(cache_dir()))
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from zk0.baseline import markdown_table, run_baseline

    def progress(message: str) -> None:
        print(f"zk0 baseline: {message}", file=sys.stderr)

    comparison = run_baseline(Path(args.run_dir), log=progress)
    print(markdown_table(comparison), end="")
    progress(f"wrote {Path(comparison['run_dir']) / 'baseline'}/comparison.{{json,md,png}}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zk0", description="zk0: federated SmolVLA training with Flower")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-data", help="write synthetic SO-100 datasets with LeRobot's writer")
    demo.add_argument("out_dir", help="directory to write client_<i>/ and eval/ into")
    demo.add_argument("--clients", type=int, default=2, help="number of client datasets (default 2)")
    demo.add_argument("--episodes", type=int, default=8, help="episodes per dataset (default 8)")
    demo.add_argument("--frames", type=int, default=45, help="frames per episode (default 45)")
    demo.set_defaults(func=_demo_data)

    check = sub.add_parser("check-dataset", help="open a dataset URI and check it fits the policy")
    check.add_argument("uri", help="hf:owner/name, owner/name or local:/abs/path")
    check.add_argument("--action-dim", type=int, default=6, help="expected action/state dimension (default 6)")
    check.add_argument("--heldout-episodes", type=int, default=2, help="episodes kept for evaluation (default 2)")
    check.set_defaults(func=_check_dataset)

    tiny = sub.add_parser("prepare-tiny", help="build the tiny SmolVLA preset in the cache")
    tiny.set_defaults(func=_prepare_tiny)

    baseline = sub.add_parser(
        "baseline", help="train a finished run's centralized baseline with lerobot-train and compare held-out MSE"
    )
    baseline.add_argument("run_dir", help="a zk0 run directory (outputs/<timestamp>); results go to RUN_DIR/baseline/")
    baseline.set_defaults(func=_baseline)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, URIError, ValueError) as err:
        print(f"zk0: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
