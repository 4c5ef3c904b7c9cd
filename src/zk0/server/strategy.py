"""zk0's strategy: Flower's four hooks, each a short pipeline; every step is another module's.

- configure_train: the round's lr (zk0.server.schedule), the nodes that may train (connected, not
  refused, not busy with an earlier round, sampled: zk0.server.sampling), the memory a robust
  aggregation would need (zk0.server.accumulate), one TrainInstructions each (the global model
  whole or as a delta: zk0.server.instructions), made one at a time as the grid pushes them.
- aggregate_train: the replies come as they arrive (zk0.server.inbox, from server_app's round
  loop); each is screened (zk0.server.screening) into the round's pool (zk0.server.accumulate),
  then the norm rules run; rejected or failed nodes only lose their round, nodes that had not
  answered are late (zk0.server.late). The pool goes to the Flower class that aggregates
  (zk0.server.aggregation); its result, made from the broadcast, moves onto the fp32 global
  (zk0.wire.transfer.onto_global). Too few usable replies: RoundFellShort, and the round loop runs
  the round again (the same broadcast, a fresh sample) while round-retries allow.
- configure_evaluate / aggregate_evaluate: only after the last round, on the nodes that
  were never refused.
- collect_statistics (round 0: zk0.server.stats_query) and collect_late, for server_app.

No input from a node raises past these hooks: whatever a reply holds, the worst it can do
is cost its own node the round.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from zk0.config import RunConfig
from zk0.server import accumulate, instructions, late, sampling, screening, stats_query
from zk0.server.aggregation import AGGREGATIONS
from zk0.server.errors import FederationError, RoundFellShort
from zk0.server.rounds import RoundRecord, Roster
from zk0.server.schedule import round_lr
from zk0.wire import transfer
from zk0.util.failures import shorten
from zk0.wire.protocol import Attempts, EvaluateInstructions, TrainInstructions, array_record


class ZK0Strategy:
    """zk0's side of a strategy. `make_strategy` puts it before a Flower strategy; that one aggregates."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__(
            fraction_train=config.fraction_train,
            fraction_evaluate=config.fraction_evaluate,
            min_train_nodes=config.min_train_clients,
            min_evaluate_nodes=config.min_evaluate_clients,
            min_available_nodes=config.min_available_clients,
            **AGGREGATIONS[config.aggregation].arguments(config),
        )
        self.config = config
        self.rounds: dict[int, RoundRecord] = {}
        self.roster = Roster()
        # Flower counts rounds from 1 on every start; a resumed run continues after `round_offset`.
        self.round_offset = 0
        # The run across its resumes: names the nodes' memories (a resumed run takes the saved key).
        self.run_key = uuid.uuid4().hex
        # The rounds each resume continued after, and the attempt whose replies made each
        # retried round's model (other rounds: attempt 0): nodes tell from them whether the
        # update they last sent was used (zk0.wire.protocol.Attempts).
        self.resumed_after: list[int] = []
        self.retried: dict[int, int] = {}
        self.federation_stats: dict | None = None
        self.cameras: list[str] = []  # the federation's camera features (the server's policy's)
        self.broadcast: transfer.Broadcast | None = None  # the last one sent
        self.streams = AGGREGATIONS[config.aggregation].streams
        self.trainable_bytes = 0  # fp32 size of the trainable weights, set by the ServerApp
        self.spool: Path | None = None  # where compact updates wait for the norm rule (RunDir.spool)
        self.run_dir = ""  # the run directory, named in the final evaluation (zk0.node.personal)

    @property
    def max_train_examples(self) -> int:
        """What a node can train on in one round: a larger `num-examples` is a lie."""
        return self.config.local_steps * self.config.batch_size

    def summary(self) -> None:
        ratio, clip = self.config.max_update_norm_ratio, self.config.clip_update_norm_ratio
        memory = ("updates folded in as they arrive" if self.streams else
                  f"holds every update: {accumulate.HELD_COPIES * self.trainable_bytes / 1e6:.0f} MB per sampled "
                  f"node, a round that would not fit is refused")
        log(INFO, "\t├──> zk0 aggregation '%s' (%s); a reply is rejected for a wrong structure, non-finite values, "
            "num-examples > %d, or an update norm > %s; %s", self.config.aggregation, memory,
            self.max_train_examples, f"{ratio:g} x the round's median" if ratio else "(norm rule off)",
            f"updates count with a norm of at most {clip:g} x the median of the rest" if clip else "no clipping")
        super().summary()

    def quorum(self, sampled: int) -> int:
        """Usable replies after which a round closes before its deadline (run-config train-quorum)."""
        return min(sampled, max(math.ceil(self.config.train_quorum * sampled), self.min_train_nodes))

    def has_quorum(self, server_round: int) -> bool:
        """Whether the round's quorum of replies has passed screening: failed and rejected replies
        do not count, or one fast-failing node would close a round before good updates came."""
        record = self._record(server_round + self.round_offset)
        return record.passed >= self.quorum(len(record.sampled))

    def _record(self, server_round: int) -> RoundRecord:
        return self.rounds.setdefault(server_round, RoundRecord())

    # ------------------------------------------------------------------ nodes

    def _wait_for_nodes(self, grid: Grid, needed: int) -> list[int]:
        return sampling.wait_for_nodes(grid, self.roster, needed, self.min_available_nodes,
                                       self.config.node_wait_timeout)

    def collect_late(self, grid: Grid) -> None:
        """Replies that came after their round closed: dropped, their nodes free again (zk0.server.late)."""
        late.collect(grid, self.roster)

    def collect_statistics(self, grid: Grid, shapes: dict) -> dict:
        """Before round 1: the normalization statistics of a sample of the nodes (as many as a
        round trains: at hundreds of nodes, a sample describes the data as well as all of them),
        checked and pooled (zk0.server.stats_query); the other nodes, in a seeded order, stand in
        for refused ones."""
        self.roster.refresh_names()
        connected = self._wait_for_nodes(grid, self.min_train_nodes)
        nodes = sampling.sample(connected, self.fraction_train, self.min_train_nodes, self.config.seed, 0)
        spares = sampling.spares(connected, nodes, self.config.seed)
        return stats_query.collect(grid, nodes, spares, self.roster, self.cameras, shapes,
                                   self.config.min_train_clients, self.config.round_timeout)

    # ------------------------------------------------------------------ train

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        server_round += self.round_offset
        record = self._record(server_round)
        record.lr = round_lr(server_round, self.config.num_rounds, lr=self.config.lr,
                             schedule=self.config.lr_schedule, warmup_rounds=self.config.warmup_rounds,
                             lr_min=self.config.lr_min)
        self.roster.refresh_names()
        try:
            nodes = self._wait_for_nodes(grid, self.min_train_nodes)
        except FederationError as err:
            raise FederationError(f"round {server_round}: {err}") from None
        nodes = sampling.sample(nodes, self.fraction_train, self.min_train_nodes, self.config.seed, server_round,
                                record.attempt)
        if not self.streams and self.trainable_bytes:
            accumulate.check_memory(server_round, self.config.aggregation, self.trainable_bytes, len(nodes))
        if self.broadcast is not None and self.broadcast.round == server_round:
            broadcast = self.broadcast  # a retry: the nodes train from the weights the first attempt sent
        else:
            broadcast = instructions.next_broadcast(self.broadcast, {name: array.numpy() for name, array in arrays.items()},
                                                    server_round, self.config.update_codec, self.roster)
        self.broadcast = record.broadcast = broadcast
        # Flower's own hook still runs for the state its classes keep (FedAvgM's and FedOpt's
        # current arrays); zk0 sends its own messages, to the nodes it sampled. A class that
        # keeps state gets the broadcast, the weights the nodes train from: a pseudo-gradient
        # against the unrounded global would carry the broadcast's rounding error too.
        flower_class = AGGREGATIONS[self.config.aggregation].flower_class
        if flower_class.configure_train is not FedAvg.configure_train:
            arrays = array_record(broadcast.weights)
        super().configure_train(server_round, arrays, config, grid)
        record.sampled = nodes
        return instructions.train_messages(record, nodes, self.roster, TrainInstructions(
            server_round=server_round, lr=record.lr, proximal_mu=self.config.proximal_mu, broadcast_round=server_round,
            reference_round=None, model={}, cameras=tuple(self.cameras), stats=self.federation_stats,
            run_key=self.run_key, attempt=record.attempt, attempts=Attempts(tuple(self.resumed_after), dict(self.retried))))

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        record = self._record(server_round)
        broadcast = record.broadcast
        if broadcast is None:
            raise RuntimeError(f"round {server_round}: aggregate_train called before configure_train")
        pool = accumulate.for_aggregation(self.streams, broadcast.weights, self.max_train_examples, self.spool)
        try:
            accepted, answered = screening.train_replies(server_round, record, replies, pool, self.roster,
                                                         self.config, self.max_train_examples)
            late.mark(server_round, record, self.roster, answered, record.passed >= self.quorum(len(record.sampled)),
                      self.config.round_timeout)
            for node, report in accepted.items():
                record.trained(node, self.roster.label(node), report.metrics, report.num_examples, report.received)
                self.roster.count(node, "accepted")
            record.closed()
            if len(accepted) < self.config.min_train_clients:
                self._fell_short(server_round, record, len(accepted))
            if record.attempt:
                self.retried[server_round] = record.attempt
            started = time.perf_counter()
            order = sorted(accepted, key=lambda n: (self.roster.claims.get(n, ""), n))
            steps = AGGREGATIONS[self.config.aggregation].flower_class.aggregate_train is not FedAvg.aggregate_train
            arrays, metrics = accumulate.aggregate(server_round, accepted, order, pool, super().aggregate_train, steps)
            if arrays is not None and broadcast.behind is not None:
                arrays = array_record(transfer.onto_global({name: a.numpy() for name, a in arrays.items()}, broadcast))
            record.aggregate_seconds += time.perf_counter() - started
        finally:
            pool.close()
        return arrays, metrics

    def _fell_short(self, server_round: int, record: RoundRecord, usable: int) -> None:
        """Too few usable replies: RoundFellShort while round-retries allow another attempt, else
        the FederationError that ends the run; either way one line with every node's reason."""
        problems = (record.failures + [f"{r['node']}: {r['reason']}" for r in record.rejected]
                    + [f"{label}: late" for label in record.late])
        reason = (f"only {usable} usable training result(s), min-train-clients is {self.config.min_train_clients}; "
                  f"failed: {shorten('; '.join(problems), 600) or 'no replies'}")
        retries = self.config.round_retries
        if record.attempt >= retries:
            spent = f" (after {retries} retries, run-config round-retries)" if retries else ""
            raise FederationError(f"round {server_round}: {reason}{spent}")
        record.fell_short(reason)
        raise RoundFellShort(f"Round {server_round}: {reason}; running it again with a fresh sample "
                             f"(retry {record.attempt} of {retries}, run-config round-retries)")

    # ------------------------------------------------------------------ evaluate

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Only after the last round, on nodes never refused: every round's train message
        already scores the global model it brings on the node's held-out episodes."""
        server_round += self.round_offset
        if self.fraction_evaluate == 0.0 or server_round != self.config.num_rounds:
            return []
        try:
            nodes = self._wait_for_nodes(grid, self.min_evaluate_nodes)
        except FederationError:
            log(WARNING, "Round %d: too few clients connected for the final client-side evaluation; skipping it", server_round)
            return []
        nodes = sampling.sample(nodes, self.fraction_evaluate, self.min_evaluate_nodes, self.config.seed, server_round)
        codec = "fp32" if self.config.update_codec == "fp32" else "bf16"
        model = transfer.encode({name: array.numpy() for name, array in arrays.items()}, codec)
        return instructions.evaluate_messages(self._record(server_round), nodes, EvaluateInstructions(
            server_round, model, self.federation_stats, self.run_dir, self.run_key))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        record = self._record(server_round)
        scores = screening.evaluate_replies(server_round, record, replies, self.roster,
                                            self.config.batch_size * self.config.eval_batches)
        record.closed()
        if not scores:
            return None
        total = sum(s.num_examples for s in scores.values())
        return MetricRecord({
            "eval/loss": sum(s.loss * s.num_examples for s in scores.values()) / total,
            "eval/action_mse": sum(s.action_mse * s.num_examples for s in scores.values()) / total,
        })


def make_strategy(config: RunConfig) -> ZK0Strategy:
    """zk0's checks and records over the Flower class run-config `aggregation` names."""
    flower_class = AGGREGATIONS[config.aggregation].flower_class
    strategy_class = type(f"ZK0{flower_class.__name__}", (ZK0Strategy, flower_class), {})
    return strategy_class(config)
