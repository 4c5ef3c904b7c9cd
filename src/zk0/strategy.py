"""zk0's FedProx: Flower's FedProx over SmolVLA's trainable parameters, plus

- the round's learning rate (from the server's schedule) in every train config;
- a bounded wait for enough connected nodes (Flower's own wait has no deadline);
- a per-round record of what each client reported and how many bytes moved.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedProx

from zk0.config import RunConfig
from zk0.schedule import round_lr


class FederationError(RuntimeError):
    """The federation cannot go on (too few nodes, no results)."""


@dataclass
class RoundRecord:
    """What one round moved and what the clients reported."""

    lr: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    bytes_down: dict[str, int] = field(default_factory=dict)
    bytes_up: dict[str, int] = field(default_factory=dict)
    clients: dict[str, dict] = field(default_factory=dict)
    client_eval: dict[str, dict] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _client_name(reply: Message) -> str:
    node = reply.content.config_records.get("node")
    uri = node["dataset-uri"] if node is not None and "dataset-uri" in node else "?"
    return f"{reply.metadata.src_node_id}:{uri}"


class ZK0FedProx(FedProx):
    def __init__(self, config: RunConfig) -> None:
        super().__init__(
            fraction_train=config.fraction_train,
            fraction_evaluate=config.fraction_evaluate,
            min_train_nodes=config.min_train_clients,
            min_evaluate_nodes=config.min_evaluate_clients,
            min_available_nodes=config.min_available_clients,
            proximal_mu=config.proximal_mu,
        )
        self.config = config
        self.rounds: dict[int, RoundRecord] = {}

    def _wait_for_nodes(self, grid: Grid, needed: int) -> None:
        deadline = time.monotonic() + self.config.node_wait_timeout
        announced = False
        while (connected := len(list(grid.get_node_ids()))) < needed:
            if time.monotonic() > deadline:
                raise FederationError(
                    f"only {connected} of the {needed} required clients connected within "
                    f"{self.config.node_wait_timeout:.0f}s (run-config node-wait-timeout); start more clients "
                    f"or lower min-available-clients"
                )
            if not announced:
                log(INFO, "Waiting for clients: %d connected, %d required", connected, needed)
                announced = True
            time.sleep(1.0)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        record = self.rounds.setdefault(server_round, RoundRecord())
        record.lr = round_lr(
            server_round,
            self.config.num_rounds,
            lr=self.config.lr,
            schedule=self.config.lr_schedule,
            warmup_rounds=self.config.warmup_rounds,
            lr_min=self.config.lr_min,
        )
        self._wait_for_nodes(grid, max(self.min_available_nodes, self.min_train_nodes))
        config["lr"] = record.lr
        messages = list(super().configure_train(server_round, arrays, config, grid))
        payload = arrays.count_bytes()
        for message in messages:
            record.bytes_down[str(message.metadata.dst_node_id)] = payload
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        record = self.rounds.setdefault(server_round, RoundRecord())
        for reply in replies:
            if reply.has_error():
                record.failures.append(f"{reply.metadata.src_node_id}: {reply.error.reason}")
                continue
            name = _client_name(reply)
            record.bytes_up[name] = reply.content["arrays"].count_bytes()
            record.bytes_down[name] = record.bytes_down.pop(str(reply.metadata.src_node_id), 0)
            record.clients[name] = dict(reply.content["metrics"])
        if not record.clients:
            raise FederationError(
                f"round {server_round}: no client returned a training result ({len(record.failures)} failed: "
                f"{'; '.join(record.failures)[:300] or 'no replies before round-timeout'})"
            )
        if record.failures:
            log(WARNING, "Round %d: %d client(s) failed; aggregating the other %d", server_round,
                len(record.failures), len(record.clients))
        return super().aggregate_train(server_round, replies)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        record = self.rounds.setdefault(server_round, RoundRecord())
        for reply in replies:
            if not reply.has_error():
                record.client_eval[_client_name(reply)] = dict(reply.content["metrics"])
        return super().aggregate_evaluate(server_round, replies)
