"""`zk0` command line: data and model helpers around the Flower apps.

    zk0 demo-data OUT_DIR [--clients K]   synthetic SO-100 data for K clients + a held-out eval set
    zk0 sim-data OUT_DIR [--clients K]    simulated SO-101 owners' scripted demonstrations + an eval set
    zk0 rollout CHECKPOINT --env E [--episodes N] [--video DIR]
                                          score a checkpoint by closed-loop episodes in a simulator
    zk0 check-dataset URI                 check that a dataset opens and fits the policy
    zk0 prepare-tiny                      build the tiny SmolVLA in the cache (done lazily otherwise)
    zk0 check-server HOST:PORT (--ca-cert F | --insecure)
                                          reach the server and check both sides agree on TLS
    zk0 baseline RUN_DIR [--no-alone] [--final-only] [--no-wall-clock] [--eval-batches N]   train a run's centralized baseline with lerobot-train, compare
    zk0 push RUN_OR_CHECKPOINT --repo-id owner/name [--public] [--dry-run DIR]
                                          upload a checkpoint with a LeRobot model card
    zk0 check-run-config [--app-dir DIR] [--json] "k=v ..." ["k=v ..." ...]
                                          check --run-config strings as Flower will read them
    zk0 admin resume|submit|wait|newest-log ...
                                          the run bookkeeping behind `zk0bot run` (zk0.ops.admin)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zk0.ops import admin
from zk0.ops.preflight import PreflightError, check_plain, check_tls
from zk0.sim import ENVS

# Each command imports what it needs: torch and LeRobot take seconds, and train-fl-simulation.sh
# and zk0bot run light commands (check-run-config, demo-data and prepare-tiny once cached) often.


def _demo_data(args: argparse.Namespace) -> int:
    from zk0.tools.demo_data import DemoSpec, demo_federation
    from zk0.tools.quiet import quiet_dataset_writer

    spec = DemoSpec(episodes=args.episodes, frames_per_episode=args.frames)
    with quiet_dataset_writer():
        clients, eval_uri = demo_federation(Path(args.out_dir).resolve(), args.clients, spec)
    print(",".join(clients))
    print(eval_uri)
    return 0


def _sim_data(args: argparse.Namespace) -> int:
    from zk0.tools.sim_data import SimSpec, write_sim_federation

    spec = SimSpec(episodes=args.episodes, eval_episodes=args.eval_episodes, seed=args.seed)
    owners, eval_uri = write_sim_federation(Path(args.out_dir).resolve(), args.clients, spec,
                                            log=lambda line: print(line, file=sys.stderr))
    print(",".join(owners))
    print(eval_uri)
    return 0


def _rollout(args: argparse.Namespace) -> int:
    from zk0.tools.push import PushError
    from zk0.tools.rollout import as_json, rollout, summary

    try:
        result = rollout(Path(args.checkpoint), args.env, args.episodes, args.seed, args.region, args.which,
                         Path(args.video).resolve() if args.video else None)
    except PushError as err:
        raise ValueError(str(err)) from None
    print(as_json(result) if args.json else summary(result))
    return 0


def _check_dataset(args: argparse.Namespace) -> int:
    from zk0.data.dataset import open_node_data
    from zk0.data.uri import parse_dataset_uri

    data = open_node_data(parse_dataset_uri(args.uri), args.action_dim, args.heldout_episodes, args.state_dim)
    episodes = f"{data.meta.total_episodes} episodes"
    if data.uri.shard:
        mine = data.train_episodes + data.heldout_episodes
        episodes = f"episodes {mine[0]}-{mine[-1]} of {episodes}"
    print(
        f"ok: {data.uri} ({episodes}, {data.meta.total_frames} frames, "
        f"{data.meta.fps} fps, cameras {', '.join(data.meta.camera_keys)})"
    )
    return 0


def _prepare_tiny(_: argparse.Namespace) -> int:
    from zk0.policy.presets import ensure_tiny_policy
    from zk0.util.paths import cache_dir

    print(ensure_tiny_policy(cache_dir()))
    return 0


def _check_server(args: argparse.Namespace) -> int:
    if args.insecure:
        check_plain(args.address)
    else:
        check_tls(args.address, args.ca_cert)
    print(f"ok: {args.address} reachable{'' if args.insecure else ', TLS certificate verified'}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from zk0.tools.push import dry_run, push

    if args.dry_run:
        selected = dry_run(Path(args.source), args.repo_id, Path(args.dry_run), args.checkpoint)
        print(f"wrote {args.dry_run}: {selected.describe()} with its model card; nothing uploaded")
    else:
        selected, url = push(Path(args.source), args.repo_id, args.checkpoint, args.public)
        print(f"pushed {selected.describe()} to {url} ({'public' if args.public else 'private'})")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got '{text}'")
    return value


def _baseline(args: argparse.Namespace) -> int:
    from zk0.tools.comparison import markdown_table, run_baseline
    from zk0.run.directory import RunDir

    def progress(message: str) -> None:
        print(f"zk0 baseline: {message}", file=sys.stderr)

    comparison = run_baseline(Path(args.run_dir), log=progress, alone=not args.no_alone, final_only=args.final_only,
                              wall_clock_axis=not args.no_wall_clock, eval_batches=args.eval_batches)
    print(markdown_table(comparison), end="")
    progress(f"wrote {RunDir.at(comparison['run_dir']).baseline}/comparison.{{json,md,png}}")
    return 0


def _check_run_config(args: argparse.Namespace) -> int:
    import json

    from zk0.ops.run_config_args import merged_run_config

    merged = merged_run_config(args.strings, Path(args.app_dir))
    if args.json:
        print(json.dumps(merged))
    else:
        print(f"ok: {len(args.strings)} run-config string(s) valid over {Path(args.app_dir).resolve()}/pyproject.toml")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zk0", description="zk0: federated SmolVLA training with Flower")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-data", help="write synthetic SO-100 datasets with LeRobot's writer")
    demo.add_argument("out_dir", help="directory to write client_<i>/ (or task_<t>/ beyond 8 clients) and eval/ into")
    demo.add_argument("--clients", type=int, default=2,
                      help="number of clients (default 2); beyond 8, clients are shards #I/N of one dataset per task")
    demo.add_argument("--episodes", type=int, default=8, help="episodes per client (default 8)")
    demo.add_argument("--frames", type=int, default=45, help="frames per episode (default 45)")
    demo.set_defaults(func=_demo_data)

    sim = sub.add_parser("sim-data", help="record simulated SO-101 owners' demonstrations with LeRobot's writer")
    sim.add_argument("out_dir", help="directory to write owner_<k>/ and eval/ into (complete ones are kept)")
    sim.add_argument("--clients", type=int, default=2, help="owners, each with its own strip of the table (default 2)")
    sim.add_argument("--episodes", type=int, default=40, help="episodes per owner (default 40)")
    sim.add_argument("--eval-episodes", type=int, default=20, help="episodes of the eval set (default 20)")
    sim.add_argument("--seed", type=int, default=0, help="which demonstrations (default 0; 0..1999)")
    sim.set_defaults(func=_sim_data)

    roll = sub.add_parser("rollout", help="score a checkpoint by closed-loop episodes in a simulated environment")
    roll.add_argument("checkpoint", help="a run directory, a checkpoint directory or a pretrained_model directory")
    roll.add_argument("--env", required=True, choices=ENVS, help="the environment")
    roll.add_argument("--episodes", type=int, default=50, help="episodes (default 50)")
    roll.add_argument("--region", default="all", help="where the cubes lie: 'all' (default) or owner I of K as I/K")
    roll.add_argument("--seed", type=int, default=0, help="which episodes (default 0; the same cubes for every policy)")
    roll.add_argument("--checkpoint", dest="which", help="for a run directory: best (default), last or a round number")
    roll.add_argument("--video", metavar="DIR", help="write the first episode as an MP4 into DIR")
    roll.add_argument("--json", action="store_true", help="print the result as JSON")
    roll.set_defaults(func=_rollout)

    check = sub.add_parser("check-dataset", help="open a dataset URI and check it fits the policy")
    check.add_argument("uri", help="hf:owner/name, owner/name or local:/abs/path")
    check.add_argument("--action-dim", type=int, default=6, help="expected action dimension (default 6)")
    check.add_argument("--state-dim", type=int, default=0, help="expected state dimension (default 0: the action's)")
    check.add_argument("--heldout-episodes", type=int, default=2, help="episodes kept for evaluation (default 2)")
    check.set_defaults(func=_check_dataset)

    tiny = sub.add_parser("prepare-tiny", help="build the tiny SmolVLA preset in the cache")
    tiny.set_defaults(func=_prepare_tiny)

    server = sub.add_parser("check-server", help="reach the server and check that both sides agree on TLS")
    server.add_argument("address", help="HOST:PORT of the server's public port")
    trust = server.add_mutually_exclusive_group(required=True)
    trust.add_argument("--ca-cert", help="the federation's CA certificate (ca.crt from the admin)")
    trust.add_argument("--insecure", action="store_true", help="the server runs without TLS")
    server.set_defaults(func=_check_server)

    share = sub.add_parser("push", help="upload a checkpoint with a LeRobot model card to the Hugging Face Hub")
    share.add_argument("source", help="a run directory, a checkpoint directory (checkpoints/000005) "
                       "or its pretrained_model")
    share.add_argument("--repo-id", required=True, help="Hub model repo to create or update, owner/name")
    share.add_argument("--checkpoint", help="for a run directory: best (default), last or a round number")
    share.add_argument("--public", action="store_true", help="make a new repo public (default: private)")
    share.add_argument("--dry-run", metavar="DIR",
                       help="write the folder that would be uploaded into DIR (new or empty); upload nothing")
    share.set_defaults(func=_push)

    baseline = sub.add_parser(
        "baseline", help="train a finished run's centralized baseline and each client's model alone with "
        "lerobot-train, and compare held-out MSE"
    )
    baseline.add_argument("run_dir", help="a zk0 run directory (outputs/<timestamp>); results go to RUN_DIR/baseline/")
    baseline.add_argument("--no-alone", action="store_true",
                          help="skip each client's local-only twin (they cost as many steps again as the centralized run)")
    baseline.add_argument("--no-wall-clock", action="store_true",
                          help="skip the equal-wall-clock twin (batch K x batch-size for the federation's sequential steps)")
    baseline.add_argument("--eval-batches", type=_positive_int, metavar="N",
                          help="score N evenly spaced batches of each set (default: every frame)")
    baseline.add_argument("--final-only", action="store_true",
                          help="compare the final round only (every frame of each held-out set is scored: "
                               "scoring every round costs minutes on a CPU)")
    baseline.set_defaults(func=_baseline)

    run_config = sub.add_parser(
        "check-run-config", help="check --run-config strings as Flower will read them, naming any bad key"
    )
    run_config.add_argument("strings", nargs="+", metavar="STRING",
                            help="a --run-config argument (\"key=value ...\"); later ones override earlier ones")
    run_config.add_argument("--app-dir", default=".", help="the Flower app directory with pyproject.toml (default .)")
    run_config.add_argument("--json", action="store_true", help="print the merged run config as JSON")
    run_config.set_defaults(func=_check_run_config)

    admin.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (PreflightError, ValueError) as err:  # DatasetError and URIError are ValueErrors
        print(f"zk0: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
