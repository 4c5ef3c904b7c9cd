"""The aggregations run-config `aggregation` names: Flower's own strategy classes, each
with the constructor arguments zk0's run config gives it.

`zk0.server.strategy.make_strategy` composes the chosen class with zk0's checks and records
(`ZK0Strategy` first in the MRO); Flower's class only combines the updates that passed.
An averaging aggregation (`streams`) gets them already averaged, as one reply, so the
server folds each reply into a running sum as it arrives (zk0.server.accumulate); a robust one
(median, trimmed mean, Krum) needs every update at once and gets them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flwr.serverapp.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)

if TYPE_CHECKING:
    from zk0.config import RunConfig


@dataclass(frozen=True)
class Aggregation:
    flower_class: type[Strategy]
    arguments: Callable[["RunConfig"], dict]
    summary: str
    streams: bool = False  # a weighted average (then maybe a server optimizer step) of the updates
    # An adaptive server step moves every weight by about server-lr per round, whatever the
    # update's size: a larger server-lr wrecks the model, so it is refused.
    max_server_lr: float | None = None


AGGREGATIONS: dict[str, Aggregation] = {
    "fedprox": Aggregation(
        FedProx, lambda c: {"proximal_mu": c.proximal_mu},
        "weighted average of the updates (FedAvg); clients add the proximal term", streams=True),
    "fedavgm": Aggregation(
        FedAvgM, lambda c: {"server_learning_rate": c.server_lr, "server_momentum": c.server_momentum},
        "the weighted average as a pseudo-gradient, applied with server momentum (server-momentum) and "
        "step size (server-lr)", streams=True),
    # Adaptive server optimizers (Reddi et al., FedOpt): the weighted average's pseudo-gradient
    # through Adam, Yogi or Adagrad; server-lr is their eta, a per-coordinate step size.
    "fedadam": Aggregation(
        FedAdam, lambda c: {"eta": c.server_lr, "beta_1": c.server_beta_1, "beta_2": c.server_beta_2,
                            "tau": c.server_tau},
        "the weighted average as a pseudo-gradient, applied with Adam (server-lr, server-beta-1, server-beta-2, "
        "server-tau)", streams=True, max_server_lr=0.1),
    "fedyogi": Aggregation(
        FedYogi, lambda c: {"eta": c.server_lr, "beta_1": c.server_beta_1, "beta_2": c.server_beta_2,
                            "tau": c.server_tau},
        "the weighted average as a pseudo-gradient, applied with Yogi (server-lr, server-beta-1, server-beta-2, "
        "server-tau)", streams=True, max_server_lr=0.1),
    "fedadagrad": Aggregation(
        FedAdagrad, lambda c: {"eta": c.server_lr, "tau": c.server_tau},
        "the weighted average as a pseudo-gradient, applied with Adagrad (server-lr, server-tau)", streams=True,
        max_server_lr=0.1),
    "fedtrimmedavg": Aggregation(
        FedTrimmedAvg, lambda c: {"beta": c.trimmed_avg_beta},
        "per coordinate, the mean after cutting the trimmed-avg-beta fraction at each end"),
    "fedmedian": Aggregation(FedMedian, lambda c: {}, "per coordinate, the median of the updates"),
    "krum": Aggregation(
        Krum, lambda c: {"num_malicious_nodes": c.krum_num_malicious},
        "the one update closest to its neighbours, tolerating krum-num-malicious attackers"),
    "multikrum": Aggregation(
        MultiKrum, lambda c: {"num_malicious_nodes": c.krum_num_malicious, "num_nodes_to_select": c.multikrum_keep},
        "the weighted average of the multikrum-keep updates with the best Krum scores"),
}
