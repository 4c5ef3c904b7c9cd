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
    """What one round moved and what the clients reported, keyed by Flower node id."""

    lr: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    names: dict[int, str] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)
    bytes_up: dict[int, int] = field(default_factory=dict)
    clients: dict[int, dict] = field(default_factory=dict)
    client_eval: dict[int, dict] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def sent(self, messages: list[Message], payload: int) -> None:
        for message in messages:
            node = message.metadata.dst_node_id
            self.bytes_down[node] = self.bytes_down.get(node, 0) + payload

    def named(self, per_node: dict[int, object]) -> dict[str, object]:
        """Node-id keyed values, keyed by `<node id>:<dataset uri>` for people."""
        return {self.names.get(node, str(node)): value for node, value in per_node.items()}


def _dataset_uri(reply: Message) -> str:
    node = reply.content.config_records.get("node")
    return node["dataset-uri"] if node is not None and "dataset-uri" in node else "?"


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

    def _wait_for_nodes(self, grid: Grid, needed: int) -> bool:
        """Wait up to node-wait-timeout for `needed` connected nodes (Flower's own wait has no deadline)."""
        deadline = time.monotonic() + self.config.node_wait_timeout
        announced = False
        while len(list(grid.get_node_ids())) < needed:
            if time.monotonic() > deadline:
                return False
            if not announced:
                log(INFO, "Waiting for clients: %d connected, %d required", len(list(grid.get_node_ids())), needed)
                announced = True
            time.sleep(1.0)
        return True

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
        needed = max(self.min_available_nodes, self.min_train_nodes)
        if not self._wait_for_nodes(grid, needed):
            raise FederationError(
                f"round {server_round}: only {len(list(grid.get_node_ids()))} of the {needed} required clients "
                f"connected within {self.config.node_wait_timeout:.0f}s (run-config node-wait-timeout); "
                f"start more clients or lower min-available-clients"
            )
        config["lr"] = record.lr
        messages = list(super().configure_train(server_round, arrays, config, grid))
        record.sent(messages, arrays.count_bytes())
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        record = self.rounds.setdefault(server_round, RoundRecord())
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                record.failures.append(f"{node}: {reply.error.reason}")
                continue
            record.names[node] = f"{node}:{_dataset_uri(reply)}"
            record.bytes_up[node] = reply.content["arrays"].count_bytes()
            record.clients[node] = dict(reply.content["metrics"])
        if not record.clients:
            raise FederationError(
                f"round {server_round}: no client returned a training result ({len(record.failures)} failed: "
                f"{'; '.join(record.failures)[:300] or 'no replies before round-timeout'})"
            )
        if record.failures:
            log(WARNING, "Round %d: %d client(s) failed; aggregating the other %d", server_round,
                len(record.failures), len(record.clients))
        return super().aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.fraction_evaluate == 0.0:
            return []
        if not self._wait_for_nodes(grid, max(self.min_available_nodes, self.min_evaluate_nodes)):
            log(WARNING, "Round %d: too few clients connected for client-side evaluation; skipping it", server_round)
            return []
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        self.rounds.setdefault(server_round, RoundRecord()).sent(messages, arrays.count_bytes())
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        record = self.rounds.setdefault(server_round, RoundRecord())
        for reply in replies:
            if not reply.has_error():
                node = reply.metadata.src_node_id
                record.names.setdefault(node, f"{node}:{_dataset_uri(reply)}")
                record.client_eval[node] = dict(reply.content["metrics"])
        return super().aggregate_evaluate(server_round, replies)
