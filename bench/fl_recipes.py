"""Which federated recipe makes the simulated SO-101 owners' global policy succeed? A screen in
one process, scored by closed-loop rollouts.

Runs what a `--sim so101` federation runs, without Flower, Ray or checkpoints between rounds:
the owners' datasets (`zk0 sim-data`) with the pooled normalization statistics
(zk0.data.stats.pool), each owner's round through zk0.policy.train.train_local on its own
batch stream (zk0.data.dataset.stream_seed, as a node draws it), its update through
zk0.wire.transfer (the run-config codec, its error feedback), the server's weighted average and,
optionally, FedAvgM's server step (Flower's FedAvgM arithmetic). `--master`: what the server
adds the averaged update to: `broadcast` (the weights the nodes trained from, bf16 and the
codec's downlink error included: zk0 before issue 23's fix) or `global` (the server's fp32
global: the downlink error is carried into the next round's delta). `--central STEPS` instead
trains one model on the pooled training episodes (kept AdamW moments) and scores it after
each of STEPS; `--alone STEPS` trains each owner's own model on its own training episodes alone
(kept AdamW moments, its own batch stream) and scores it after each of STEPS; `--personal-steps N`
fine-tunes the final global model on each owner's own episodes as `personalize = "finetune"`
does on a node (a fresh AdamW, `--personal-lr`) and scores each owner's model (`--save-global`
keeps the federated model, `--from-global` personalizes it again without federating). `--split`: who holds which training episodes: `owners` (as recorded: each owner
its strip of the table), `pool` (one owner holding every owner's episodes: with no second
update to average, only the federation's mechanics stand between it and `--central`) or `iid`
(the pooled episodes dealt to as many owners at random, as many each as recorded). Every score:
zk0.sim.rollout.score, seed 0 (the cubes bench/closed_loop.py uses), over the whole table, and
with `--own-regions` also on each owner's own strip (`I/K`).

    PYTHONPATH=src .venv/bin/python bench/fl_recipes.py DATA_DIR --rounds 20 --local-steps 20 \\
        --codec q3z --master broadcast --eval-rounds 10,20 --episodes 30
    PYTHONPATH=src .venv/bin/python bench/fl_recipes.py DATA_DIR --split pool --keep-moments --rounds 60 \\
        --eval-rounds 20,40,60
    PYTHONPATH=src .venv/bin/python bench/fl_recipes.py DATA_DIR --central 400,800,1200
    PYTHONPATH=src .venv/bin/python bench/fl_recipes.py DATA_DIR --alone 600,1200 --own-regions

DATA_DIR: `zk0 sim-data DATA_DIR --clients K` (owner_0 .. owner_{K-1}). Prints one JSON line per
scored point.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import zk0  # noqa: F401 - before torch: OpenMP's passive wait policy (bench/openmp_wait.py)
import torch

ENV = "so101_reach"
HELDOUT = 4  # the --sim so101 preset's heldout-episodes: the owners train on the same episodes


def owners(data_dir: Path, heldout: int = HELDOUT) -> list:
    from zk0.data.dataset import open_node_data
    from zk0.data.uri import parse_dataset_uri
    from zk0.sim.so101 import ACTION_DIM, STATE_DIM

    roots = sorted((p for p in data_dir.glob("owner_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1]))
    if not roots:
        sys.exit(f"fl_recipes: no owner_* datasets under {data_dir}; record them with zk0 sim-data")
    return [open_node_data(parse_dataset_uri(f"local:{root}"), ACTION_DIM, heldout, STATE_DIM) for root in roots]


def deal(split: str, seed: int, data: list, policy_config) -> list:
    """The owners' training sets under `--split`."""
    from zk0.data.dataset import open_split

    if split == "owners":
        return [open_split(node, node.train_episodes, policy_config) for node in data]
    held = [(k, episode) for k, node in enumerate(data) for episode in node.train_episodes]
    if split == "pool":
        hands = [held]
    else:
        order = np.random.default_rng(seed).permutation(len(held))
        sizes = np.cumsum([len(node.train_episodes) for node in data])[:-1]
        hands = [[held[i] for i in sorted(part)] for part in np.split(order, sizes)]
    return [torch.utils.data.ConcatDataset([
        open_split(node, [e for k, e in hand if k == owner], policy_config)
        for owner, node in enumerate(data) if any(k == owner for k, _ in hand)]) for hand in hands]


def weighted_mean(deltas: list[dict], weights: list[int]) -> dict:
    total = sum(weights)
    return {name: sum(d[name] * (w / total) for d, w in zip(deltas, weights)) for name in deltas[0]}


def federate(args, policy, preprocessor, postprocessor, data: list, splits: list) -> None:
    from zk0.data.dataset import infinite_batches, stream_seed
    from zk0.policy.model import get_trainable, set_trainable
    from zk0.policy.train import train_local
    from zk0.wire import transfer
    from zk0.wire.codec import ErrorFeedback

    start = get_trainable(policy)
    global_weights = {name: value.astype(np.float64) for name, value in start.items()}
    broadcast = None if args.codec in transfer.FULL_CODECS else transfer.start_broadcast(start)
    feedback = [ErrorFeedback() for _ in data]
    moments: list = [None] * len(data)
    velocity = None
    eval_rounds = {int(r) for r in args.eval_rounds.split(",")}
    started = time.perf_counter()
    for server_round in range(1, args.rounds + 1):
        target = {name: value.astype(np.float32) for name, value in global_weights.items()}
        if broadcast is not None and server_round == 1:
            target = broadcast.weights  # the start model, as zk0.server.instructions.next_broadcast sends it
        broadcast = transfer.make_broadcast(target, broadcast, args.codec, server_round)
        deltas, weights = [], []
        for owner, (node, split) in enumerate(zip(data, splits)):
            set_trainable(policy, broadcast.weights)
            batches = infinite_batches(split, args.batch_size, 0, stream_seed(args.seed + server_round, node))
            result = train_local(policy, preprocessor, batches, steps=args.local_steps, lr=args.lr,
                                 proximal_mu=args.proximal_mu, desc=f"round {server_round} owner {owner}",
                                 optimizer_state=moments[owner] if args.keep_moments else None,
                                 keep_optimizer_state=args.keep_moments)
            moments[owner] = result.optimizer_state
            upload = transfer.upload(get_trainable(policy), broadcast.weights, args.codec, feedback[owner])
            deltas.append(dict(transfer.update_deltas(upload, broadcast.weights)))
            weights.append(result.samples)
        average = weighted_mean(deltas, weights)
        if args.server_momentum:
            velocity = average if velocity is None else {
                name: args.server_momentum * velocity[name] + average[name] for name in average}
            step = velocity
        else:
            step = average
        base = broadcast.weights if args.master == "broadcast" else global_weights
        global_weights = {name: base[name].astype(np.float64) + args.server_lr * step[name] for name in base}
        if server_round in eval_rounds:
            set_trainable(policy, {name: value.astype(np.float32) for name, value in global_weights.items()})
            report(args, policy, preprocessor, postprocessor, round=server_round,
                   samples=server_round * args.local_steps * args.batch_size * len(data),
                   train_seconds=time.perf_counter() - started)
    final = {name: value.astype(np.float32) for name, value in global_weights.items()}
    if args.save_global:
        np.savez(args.save_global, **final)
    if args.personal_steps:
        personalize(args, policy, preprocessor, postprocessor, data, splits, final)


def personalize(args, policy, preprocessor, postprocessor, data: list, splits: list, final: dict) -> None:
    """`personalize = "finetune"` as a node runs it (zk0.node.personal.finetune): the final global
    model trained on the owner's own episodes, a fresh optimizer, then scored."""
    from zk0.data.dataset import infinite_batches, stream_seed
    from zk0.node.personal import PERSONAL_SEED
    from zk0.policy.model import set_trainable
    from zk0.policy.train import train_local

    for owner, (node, split) in enumerate(zip(data, splits)):
        set_trainable(policy, final)
        batches = infinite_batches(split, args.batch_size, 0, stream_seed(PERSONAL_SEED + args.seed, node))
        result = train_local(policy, preprocessor, batches, steps=args.personal_steps, lr=args.personal_lr,
                             proximal_mu=0.0, desc=f"owner {owner} personal")
        report(args, policy, preprocessor, postprocessor, personal=owner, personal_steps=args.personal_steps,
               personal_lr=args.personal_lr, train_loss=result.loss)


def centralize(args, policy, preprocessor, postprocessor, splits: list) -> None:
    from zk0.data.dataset import infinite_batches
    from zk0.policy.train import train_local

    batches = infinite_batches(torch.utils.data.ConcatDataset(splits), args.batch_size, 0, args.seed)
    done, moments = 0, None
    for steps in sorted(int(s) for s in args.central.split(",")):
        result = train_local(policy, preprocessor, batches, steps=steps - done, lr=args.lr, proximal_mu=0.0,
                             desc=f"central to {steps}", optimizer_state=moments, keep_optimizer_state=True)
        moments, done = result.optimizer_state, steps
        report(args, policy, preprocessor, postprocessor, central_steps=steps, samples=steps * args.batch_size,
               train_loss=result.loss)


def alone(args, policy, preprocessor, postprocessor, data: list, splits: list) -> None:
    from zk0.data.dataset import infinite_batches, stream_seed
    from zk0.policy.model import get_trainable, set_trainable
    from zk0.policy.train import train_local

    start = get_trainable(policy)
    for owner, (node, split) in enumerate(zip(data, splits)):
        set_trainable(policy, start)
        batches = infinite_batches(split, args.batch_size, 0, stream_seed(args.seed, node))
        done, moments = 0, None
        for steps in sorted(int(s) for s in args.alone.split(",")):
            result = train_local(policy, preprocessor, batches, steps=steps - done, lr=args.lr, proximal_mu=0.0,
                                 desc=f"owner {owner} alone to {steps}", optimizer_state=moments,
                                 keep_optimizer_state=True)
            moments, done = result.optimizer_state, steps
            report(args, policy, preprocessor, postprocessor, alone=owner, alone_steps=steps,
                   samples=steps * args.batch_size, train_loss=result.loss)


def report(args, policy, preprocessor, postprocessor, **point) -> None:
    from zk0.sim.rollout import score

    regions = ["all"] + ([f"{k}/{args.owners}" for k in range(args.owners)] if args.own_regions else [])
    results = {region: score(policy, preprocessor, postprocessor, ENV, args.episodes, seed=0, region=region)
               for region in regions}
    recipe = {key: getattr(args, key) for key in ("codec", "master", "rounds", "local_steps", "lr", "keep_moments",
                                                   "server_lr", "server_momentum", "proximal_mu", "seed", "split")}
    own = {f"success_{region.split('/')[0]}": r.success_rate for region, r in results.items() if region != "all"}
    print(json.dumps({**recipe, **point, "success": results["all"].success_rate, **own, "episodes": args.episodes,
                      "rollout_seconds": round(sum(r.seconds for r in results.values()), 1)}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--keep-moments", action="store_true", help="AdamW moments kept across rounds per owner")
    parser.add_argument("--codec", default="q3z")
    parser.add_argument("--master", choices=("broadcast", "global"), default="global")
    parser.add_argument("--server-lr", type=float, default=1.0)
    parser.add_argument("--server-momentum", type=float, default=0.0)
    parser.add_argument("--proximal-mu", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0, help="the run-config seed")
    parser.add_argument("--eval-rounds", default="20")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--split", choices=("owners", "pool", "iid"), default="owners")
    parser.add_argument("--central", help="comma-separated step counts: train centralized instead")
    parser.add_argument("--alone", help="comma-separated step counts: train each owner alone instead")
    parser.add_argument("--own-regions", action="store_true", help="also score on each owner's own strip")
    parser.add_argument("--personal-steps", type=int, default=0,
                        help="after the last round, fine-tune the global model on each owner's episodes (finetune)")
    parser.add_argument("--personal-lr", type=float, default=3e-3)
    parser.add_argument("--heldout", type=int, default=HELDOUT, help="episodes each owner holds out (the preset's)")
    parser.add_argument("--save-global", type=Path, help="write the final global model's trainable weights (.npz)")
    parser.add_argument("--from-global", type=Path, help="personalize a model --save-global wrote, no federation")
    args = parser.parse_args()

    from zk0.data.stats import node_stats, pool, with_stats
    from zk0.policy.model import load_policy, make_processors

    data = owners(args.data_dir, args.heldout)
    args.owners = len(data)
    policy = load_policy("tiny", data[0].meta, "cpu")
    pooled = pool([node_stats(node.stats, policy.config) for node in data])
    preprocessor, postprocessor = make_processors(policy, with_stats(data[0].stats, pooled))
    splits = deal(args.split, args.seed, data, policy.config)
    if args.from_global:
        with np.load(args.from_global) as saved:
            personalize(args, policy, preprocessor, postprocessor, data, splits, dict(saved))
    elif args.central:
        centralize(args, policy, preprocessor, postprocessor, splits)
    elif args.alone:
        alone(args, policy, preprocessor, postprocessor, data, splits)
    else:
        federate(args, policy, preprocessor, postprocessor, data[:len(splits)], splits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
