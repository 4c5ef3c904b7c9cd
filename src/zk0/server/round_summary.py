"""One round, as a metrics.jsonl row and as one console line for the operator."""

from __future__ import annotations

import time

from zk0.policy.evaluate import EvalResult
from zk0.server.rounds import RoundRecord
from zk0.sim.rollout import RolloutResult


def _weighted(clients: dict[int, dict], key: str, weight: str = "num-examples") -> float | None:
    pairs = [(m[key], m[weight]) for m in clients.values() if key in m]
    total = sum(weight for _, weight in pairs)
    return sum(value * weight for value, weight in pairs) / total if total else None


def round_row(server_round: int, record: RoundRecord | None, result: EvalResult | None, eval_seconds: float,
              started: float, rollout: RolloutResult | None = None) -> dict:
    """`started`: when the round began (round 0: when its server evaluation began); `rollout`:
    the closed-loop scores (eval-env), where the round measured them."""
    record = record or RoundRecord(started=started)
    row = {
        "round": server_round,
        "eval/loss": result.loss if result else None,
        "eval/action_mse": result.action_mse if result else None,
        "eval/samples": result.samples if result else None,
        "eval/seconds": eval_seconds if result else None,
        "train/loss": _weighted(record.clients, "train/loss"),
        "train/proximal-term": _weighted(record.clients, "train/proximal-term"),
        "train/lr": record.lr if server_round > 0 else None,
        "received_eval/action_mse": _weighted(record.received_eval, "eval/action_mse"),
        "client_eval/action_mse": _weighted(record.client_eval, "eval/action_mse"),
        "clients": record.named(record.clients),
        "received_eval": record.named(record.received_eval),
        "client_eval": record.named(record.client_eval),
        "sampled": len(record.sampled),
        "answered": record.answered,
        "late": record.late,
        "failures": record.failures,
        "rejected": record.rejected,
        "retries": record.retries,
        "clipped": record.clipped,
        "aggregate/seconds": record.aggregate_seconds,
        "bytes_down": record.named(record.bytes_down),
        "bytes_up": record.named(record.bytes_up),
        **(rollout.metrics() if rollout else {}),
        **_personal(record),
        "seconds": time.perf_counter() - started,
    }
    return row


def _personal(record: RoundRecord) -> dict:
    """The nodes' personal models on their own held-out episodes (run-config personalize), where
    the final evaluation brought their scores: beside the global model's on the same episodes."""
    mse = _weighted(record.client_eval, "personal/eval/action_mse", "personal/num-examples")
    return {} if mse is None else {"personal_eval/action_mse": mse}


def summary_line(row: dict, num_rounds: int) -> str:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    moved = (sum(row["bytes_down"].values()) + sum(row["bytes_up"].values())) / 1e6
    rejected, failed = len(row["rejected"]), len(row["failures"])
    success = ""
    if row.get("eval/success_rate") is not None:
        success = f"success {100 * row['eval/success_rate']:.0f} % of {row['eval/episodes']} | "
    personal = ""
    if row.get("personal_eval/action_mse") is not None:
        personal = (f" | on their own held-out: global {fmt(row['client_eval/action_mse'], '.4f')}, "
                    f"personalized {row['personal_eval/action_mse']:.4f}")
    retried = f" (attempt {len(row['retries']) + 1})" if row["retries"] else ""
    return (
        f"[round {row['round']}/{num_rounds}] {success}eval action MSE {fmt(row['eval/action_mse'], '.4f')} | "
        f"eval loss {fmt(row['eval/loss'], '.4f')} | train loss {fmt(row['train/loss'], '.4f')} | "
        f"nodes {row['sampled']} sampled: {len(row['clients'])} ok, {rejected} rejected, {failed} failed, "
        f"{len(row['late'])} late{retried} | {row['seconds']:.1f}s | {moved:.2f} MB moved{personal}"
    )
