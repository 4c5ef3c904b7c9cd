"""zk0's strategy: Flower's four hooks, each a short pipeline over zk0.wire.protocol's messages.

- configure_train: the round's lr (zk0.server.schedule), the nodes that may train (connected, not
  refused, not busy with an earlier round, sampled), one TrainInstructions each (the global
  model whole or as a delta: zk0.wire.transfer), made one at a time as the grid pushes them.
- aggregate_train: the replies come as they arrive (zk0.server.inbox, from server_app's round
  loop); each is screened (zk0.wire.protocol, zk0.server.validation) and enters the round's pool
  (zk0.server.accumulate: a running average folded as replies arrive, or, for the robust
  aggregations, every update); once the round closes, updates far above the round's median
  norm are rejected and those above a few times it clipped (zk0.server.validation; exactly:
  the pool takes them out and folds them in again); rejected or failed nodes only lose their
  round, nodes that had not answered when the round closed are late (their replies are
  collected and dropped later). The pool's average (or every update, in dataset order) goes
  to the Flower class that aggregates (zk0.server.aggregation). Too few usable replies:
  RoundFellShort, and the round loop runs the round again (the same broadcast, a fresh
  sample) while round-retries allow.
- configure_evaluate / aggregate_evaluate: only after the last round, on the nodes that
  were never refused.
Round 0's statistics query lives in zk0.server.stats_query.

No input from a node raises past these hooks: whatever a reply holds, the worst it can do
is cost its own node the round.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from itertools import chain
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from zk0.server import accumulate, inbox, stats_query
from zk0.wire import transfer
from zk0.server.aggregation import AGGREGATIONS
from zk0.config import RunConfig
from zk0.util.failures import one_line, shorten
from zk0.wire.protocol import (
    ARRAYS,
    METRICS,
    Attempts,
    EvaluateInstructions,
    EvaluateReport,
    TrainInstructions,
    array_record,
    TrainReport,
    claimed_identity,
)
from zk0.server.rounds import RoundRecord, Roster
from zk0.server.schedule import round_lr
from zk0.server.validation import guarded, norm_clips, norm_outliers, screen_reply


class FederationError(RuntimeError):
    """The federation cannot go on (too few nodes, too few usable results)."""


class RoundFellShort(FederationError):
    """An attempt at a round closed with too few usable replies and round-retries allow another:
    the message is the one line saying why; the round loop runs the round again."""


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
        """The eligible (connected, never refused) nodes, once min-available-clients are connected
        and `needed` of them are eligible; FederationError after node-wait-timeout (Flower's own
        wait has no deadline)."""
        deadline = time.monotonic() + self.config.node_wait_timeout
        announced = False
        while True:
            self.collect_late(grid)
            connected = list(grid.get_node_ids())
            nodes = self.roster.eligible(connected)
            if len(connected) >= self.min_available_nodes and len(nodes) >= needed:
                return nodes
            if time.monotonic() > deadline:
                refused = (f" ({len(connected) - len(nodes)} refused for this run or still busy)"
                           if len(nodes) < len(connected) else "")
                raise FederationError(
                    f"{len(connected)} client(s) connected{refused} within {self.config.node_wait_timeout:.0f}s "
                    f"(run-config node-wait-timeout); {max(needed, self.min_available_nodes)} usable ones are "
                    f"required: start more clients or lower min-available-clients / min-train-clients"
                )
            if not announced:
                log(INFO, "Waiting for clients: %d connected (%d usable), %d required", len(connected), len(nodes),
                    max(needed, self.min_available_nodes))
                announced = True
            time.sleep(1.0)

    def _sample(self, nodes: list[int], fraction: float, minimum: int, server_round: int,
                attempt: int = 0) -> list[int]:
        """`fraction` of the nodes (at least `minimum`), drawn reproducibly from the seed, the round
        and the attempt: a retried round draws afresh, the same draw whenever the run is repeated
        (a string seed is hashed with SHA-512, so no attempt's stream is another round's)."""
        size = min(len(nodes), max(int(len(nodes) * fraction), minimum))
        seed = self.config.seed * 100_003 + server_round
        return sorted(random.Random(seed if attempt == 0 else f"{seed} retry {attempt}").sample(nodes, size))

    def collect_statistics(self, grid: Grid, shapes: dict) -> dict:
        """Before round 1: the normalization statistics of a sample of the nodes (as many as a
        round trains: at hundreds of nodes, a sample describes the data as well as all of them),
        checked and pooled (zk0.server.stats_query); the other nodes, in a seeded order, stand in
        for refused ones."""
        self.roster.refresh_names()
        connected = self._wait_for_nodes(grid, self.min_train_nodes)
        nodes = self._sample(connected, self.fraction_train, self.min_train_nodes, 0)
        spares = random.Random(self.config.seed * 100_003 - 1).sample(sorted(set(connected) - set(nodes)),
                                                                     len(connected) - len(nodes))
        pooled, usable, problems = stats_query.collect(grid, nodes, spares, self.roster, self.cameras, shapes,
                                                       self.config.min_train_clients, self.config.round_timeout)
        if pooled is None:
            raise FederationError(
                f"only {usable} node(s) reported usable normalization statistics, min-train-clients is "
                f"{self.config.min_train_clients}: {shorten('; '.join(problems), 600) or 'no replies'}"
            )
        return pooled

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
        nodes = self._sample(nodes, self.fraction_train, self.min_train_nodes, server_round, record.attempt)
        self._check_memory(server_round, len(nodes))
        if self.broadcast is not None and self.broadcast.round == server_round:
            broadcast = self.broadcast  # a retry: the nodes train from the weights the first attempt sent
        else:
            broadcast = self._next_broadcast({name: array.numpy() for name, array in arrays.items()}, server_round)
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
        return self._train_messages(server_round, record, nodes)

    def _next_broadcast(self, global_weights: dict, server_round: int) -> transfer.Broadcast:
        """A new round's broadcast: a delta against the last one where the codec sends deltas."""
        previous = self.broadcast
        if previous is None and server_round == 1 and self.config.update_codec not in transfer.FULL_CODECS:
            previous = self._start_broadcast(global_weights)
            global_weights = previous.weights
        return transfer.make_broadcast(global_weights, previous, self.config.update_codec, server_round)

    def _start_broadcast(self, start: dict) -> transfer.Broadcast:
        """Round 1 sends the start model: the nodes whose round-0 report says they loaded
        the same one hold it as broadcast round 0 and get a delta of zeros (zk0.wire.transfer)."""
        broadcast = transfer.start_broadcast(start)
        digest = transfer.digest(broadcast.weights)
        for node, claimed in self.roster.starts.items():
            if claimed == digest:
                self.roster.holds[node] = broadcast.round
        return broadcast

    def _train_messages(self, server_round: int, record: RoundRecord, nodes: list[int]) -> Iterator[Message]:
        """One message per node, made when the grid asks for it (a round's messages are never all held)."""
        attempts = Attempts(tuple(self.resumed_after), dict(self.retried))
        for node in nodes:
            model, base = transfer.download(record.broadcast, self.roster.holds.get(node))
            instructions = TrainInstructions(
                server_round=server_round, lr=record.lr, proximal_mu=self.config.proximal_mu,
                broadcast_round=server_round, reference_round=base, model=model, cameras=tuple(self.cameras),
                stats=self.federation_stats, run_key=self.run_key, attempt=record.attempt, attempts=attempts)
            message = Message(instructions.to_content(), dst_node_id=node, message_type=MessageType.TRAIN)
            record.sent(message)
            self.roster.count(node, "sampled")
            yield message

    def _check_memory(self, server_round: int, sampled: int) -> None:
        """A robust aggregation holds every update: refuse a round whose updates would not fit."""
        if self.streams or not self.trainable_bytes:
            return
        needed, free = accumulate.HELD_COPIES * self.trainable_bytes * sampled, accumulate.available_memory()
        if needed > free:
            raise FederationError(
                f"round {server_round}: aggregation '{self.config.aggregation}' holds every update at once: "
                f"{sampled} nodes need {needed / 1e9:.1f} GB, {free / 1e9:.1f} GB of memory is available; lower "
                f"fraction-train / min-train-clients, or use fedprox or fedavgm (they fold updates as they arrive)"
            )

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        record = self._record(server_round)
        if record.broadcast is None:
            raise RuntimeError(f"round {server_round}: aggregate_train called before configure_train")
        pool = accumulate.for_aggregation(self.streams, record.broadcast.weights, self.max_train_examples, self.spool)
        try:
            accepted = self._screen_train_replies(server_round, record, replies, pool)
            for node, report in accepted.items():
                record.trained(node, self.roster.label(node), report.metrics, report.num_examples, report.received)
                self.roster.count(node, "accepted")
            record.closed()
            if len(accepted) < self.config.min_train_clients:
                self._fell_short(server_round, record, len(accepted))
            if record.attempt:
                self.retried[server_round] = record.attempt
            started = time.perf_counter()
            result = self._aggregate(server_round, accepted, pool)
            record.aggregate_seconds += time.perf_counter() - started
        finally:
            pool.close()
        return result

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

    def _screen_train_replies(self, server_round: int, record: RoundRecord, replies: Iterable[Message],
                              pool) -> dict[int, TrainReport]:
        """Every reply, as it arrives, filed under the node it answers for: failed, rejected or
        accepted into `pool`; then the norm rule over the accepted ones, and the nodes that had
        not answered when the round closed."""
        accepted: dict[int, TrainReport] = {}
        answered: set[int] = set()
        record.aggregate_seconds = 0.0
        for reply in replies:
            started = time.perf_counter()
            node = record.addressee(reply)
            if node is None or node in answered:
                log(WARNING, "Round %d: ignored a reply to no message of this round (from node %s)",
                    server_round, reply.metadata.src_node_id)
                continue
            answered.add(node)
            report = self._screen_train_reply(server_round, record, node, reply, pool)
            if report is not None:
                accepted[node] = report
                record.passed += 1
            _release(reply)
            record.aggregate_seconds += time.perf_counter() - started
        record.answered = len(answered)
        started = time.perf_counter()
        self._norm_rules(server_round, record, accepted, pool)
        record.aggregate_seconds += time.perf_counter() - started
        closed_by = ("before the round's quorum (train-quorum) was in" if record.passed >= self.quorum(len(record.sampled))
                     else f"within round-timeout ({self.config.round_timeout:g}s)")
        for message_id, node in record.addressees.items():
            if node not in answered:
                self.roster.outstanding[message_id] = (server_round, node)
                self.roster.count(node, "late")
                label = self.roster.label(node)
                log(WARNING, "Round %d: %s: no reply %s; a later reply is dropped", server_round, label, closed_by)
                record.late.append(label)
        return accepted

    def _norm_rules(self, server_round: int, record: RoundRecord, accepted: dict[int, TrainReport], pool) -> None:
        """Once the round's norms are all known: updates above max-update-norm-ratio x their median
        are taken out, then those above clip-update-norm-ratio x the median of the ones left
        count scaled down to that norm (the same as if the rejected ones had never come)."""
        for node, reason in norm_outliers(pool.norms, self.config.max_update_norm_ratio).items():
            pool.remove(node)
            del accepted[node]
            self._reject(server_round, record, node, reason)
        limit, factors = norm_clips(pool.norms, self.config.clip_update_norm_ratio)
        for node, factor in factors.items():
            norm = pool.norms[node]
            pool.scale(node, factor)
            label = self.roster.label(node)
            log(INFO, "Round %d: clipped the update of %s: norm %.4g counts as %.4g (%g x the round's median)",
                server_round, label, norm, limit, self.config.clip_update_norm_ratio)
            record.clipped.append({"node": label, "norm": norm, "clipped-to": limit})

    def _screen_train_reply(self, server_round: int, record: RoundRecord, node: int, reply: Message,
                            pool) -> TrainReport | None:
        if reply.has_error():
            self._fail(server_round, record, node, one_line(reply.error.reason))
            self.roster.holds.pop(node, None)  # unknown whether it kept this round's broadcast
            return None
        self.roster.holds[node] = record.broadcast.round
        record.received(node, reply)
        self.roster.label(node, claimed_identity(reply.content))
        if reply.metadata.message_type != MessageType.TRAIN:
            self._reject(server_round, record, node, f"a '{reply.metadata.message_type}' reply to a train message")
            return None
        screened = screen_reply(reply.content, pool, node, self.config.update_codec, self.max_train_examples)
        if isinstance(screened, str):
            self._reject(server_round, record, node, screened)
            return None
        return dataclasses.replace(screened.report, update={})  # the update is in the pool: don't hold it twice

    def collect_late(self, grid: Grid) -> None:
        """Replies to earlier rounds' messages that came after their round closed: dropped,
        counted per node; the node is free to be sampled again."""
        for reply in chain.from_iterable(inbox.available(grid, list(self.roster.outstanding))):
            entry = self.roster.outstanding.pop(reply.metadata.reply_to_message_id, None)
            if entry is None:
                continue
            server_round, node = entry
            self.roster.count(node, "late-replies")
            if reply.has_error():
                self.roster.holds.pop(node, None)
            else:
                self.roster.holds[node] = server_round  # it took that round's broadcast
            log(INFO, "Round %d: dropped the late reply of %s", server_round, self.roster.label(node))

    def _aggregate(self, server_round: int, accepted: dict[int, TrainReport],
                   pool) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """What Flower's class makes of the accepted updates. A running average reaches it as
        one reply, weighted by every node's examples together; a plain weighted average of one
        reply is that reply, so a class that adds no server step (FedAvg, FedProx) is skipped,
        sparing copies of the model. Every update: fp32 weights in the global model's tensor
        order (Krum compares flattened concatenations), the metrics every reply shares, in
        dataset order (float sums depend on the order; node ids differ between runs)."""
        order = sorted(accepted, key=lambda n: (self.roster.claims.get(n, ""), n))
        common = sorted(set.intersection(*(set(accepted[n].metrics) for n in order)))
        if isinstance(pool, accumulate.RunningAverage):
            total = pool.total_examples
            metrics = MetricRecord({"num-examples": total, **{
                key: sum(accepted[n].metrics[key] * accepted[n].num_examples for n in order) / total for key in common}})
            arrays = ArrayRecord({name: Array(value) for name, value in pool.average()})
            if AGGREGATIONS[self.config.aggregation].flower_class.aggregate_train is FedAvg.aggregate_train:
                return arrays, metrics
            reply = Message(RecordDict({ARRAYS: arrays, METRICS: metrics}), dst_node_id=order[0],
                            message_type=MessageType.TRAIN)
            stepped, metrics = super().aggregate_train(server_round, [reply])
            # FedOpt's step comes back in float64 (numpy 2 promotes its float64 scalars): the
            # global model stays fp32.
            return ArrayRecord({name: Array(array.numpy().astype(np.float32, copy=False))
                                for name, array in stepped.items()}), metrics
        messages = []
        for node in order:
            report, weights = accepted[node], pool.weights[node]
            metrics = {"num-examples": report.num_examples, **{k: report.metrics[k] for k in common}}
            content = RecordDict({ARRAYS: array_record({name: weights[name] for name in pool.reference}),
                                  METRICS: MetricRecord(metrics)})
            messages.append(Message(content, dst_node_id=node, message_type=MessageType.TRAIN))
        return super().aggregate_train(server_round, messages)

    def _reject(self, server_round: int, record: RoundRecord, node: int, reason: str) -> None:
        self.roster.count(node, "rejected")
        label = self.roster.label(node)
        log(WARNING, "Round %d: rejected the update of %s: %s", server_round, label, reason)
        record.rejected.append({"node": label, "reason": reason})

    def _fail(self, server_round: int, record: RoundRecord, node: int, reason: str) -> None:
        self.roster.count(node, "failed")
        label = self.roster.label(node)
        log(WARNING, "Round %d: %s failed: %s", server_round, label, reason)
        record.failures.append(f"{label}: {reason}")

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
        nodes = self._sample(nodes, self.fraction_evaluate, self.min_evaluate_nodes, server_round)
        codec = "fp32" if self.config.update_codec == "fp32" else "bf16"
        model = transfer.encode({name: array.numpy() for name, array in arrays.items()}, codec)
        return self._evaluate_messages(self._record(server_round), server_round, model, nodes)

    def _evaluate_messages(self, record: RoundRecord, server_round: int, model: dict,
                           nodes: list[int]) -> Iterator[Message]:
        # One content per message, made when the grid asks for it: Flower may not share
        # records between messages, and the round's messages are never all held.
        for node in nodes:
            message = Message(EvaluateInstructions(server_round, model, self.federation_stats,
                                                   self.run_dir).to_content(),
                              dst_node_id=node, message_type=MessageType.EVALUATE)
            record.sent(message)
            yield message

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        record = self._record(server_round)
        max_examples = self.config.batch_size * self.config.eval_batches
        scores = {}
        for reply in replies:
            node = record.addressee(reply)
            if node is None or reply.has_error() or node in scores or node in self.roster.refused:
                continue
            self.roster.label(node, claimed_identity(reply.content))
            report, reason = guarded(EvaluateReport.from_content, reply.content)
            counts = [report.scores.num_examples, report.personal.num_examples if report.personal else 0] if report else []
            if any(count > max_examples for count in counts):
                reason = (f"'num-examples' is {max(counts)}, more than the {max_examples} "
                          f"the node could have used")
            if reason:
                log(WARNING, "Round %d: ignored the evaluation reply of %s: %s", server_round,
                    self.roster.label(node), reason)
                continue
            record.evaluated(node, self.roster.label(node), report.scores, report.metrics, report.personal)
            scores[node] = report.scores
        record.closed()
        if not scores:
            return None
        total = sum(s.num_examples for s in scores.values())
        return MetricRecord({
            "eval/loss": sum(s.loss * s.num_examples for s in scores.values()) / total,
            "eval/action_mse": sum(s.action_mse * s.num_examples for s in scores.values()) / total,
        })


def _release(reply: Message) -> None:
    """Drops a handled reply's arrays now. Flower's records refer to each other in a cycle, so a
    reply outlives its last use until the garbage collector's next pass: at hundreds of replies
    of 39 MB, that is gigabytes."""
    if reply.has_content():
        for record in reply.content.array_records.values():
            record.clear()


def make_strategy(config: RunConfig) -> ZK0Strategy:
    """zk0's checks and records over the Flower class run-config `aggregation` names."""
    flower_class = AGGREGATIONS[config.aggregation].flower_class
    strategy_class = type(f"ZK0{flower_class.__name__}", (ZK0Strategy, flower_class), {})
    return strategy_class(config)
