"""zk0's strategies: a Flower strategy over SmolVLA's trainable parameters (FedProx by
default, or one of Flower's robust aggregators), plus

- the round's learning rate (from the server's schedule) and `proximal-mu` in every train config;
- a bounded wait for enough connected nodes (Flower's own wait has no deadline);
- checks on every training reply before it may enter the aggregate (`zk0.validation`):
  a reply that fails one is rejected, logged and recorded like a failed client;
- a per-round record of what each client reported, what failed, and how many bytes moved.

`ZK0Strategy` holds all of that and sits before the Flower class in the MRO;
`make_strategy(config)` picks the Flower class named by run-config `aggregation`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvgM, FedMedian, FedProx, FedTrimmedAvg, Krum, MultiKrum

from zk0 import stats, transfer
from zk0.cameras import check as check_cameras
from zk0.failures import one_line
from zk0.codec import CodecError
from zk0.config import RunConfig
from zk0.schedule import round_lr
from zk0.validation import check_arrays, check_finite, check_metrics, norm_outliers, update_norm

# A node's claimed dataset is only a label; keep a hostile one from flooding the records.
MAX_LABEL_CHARS = 200


class FederationError(RuntimeError):
    """The federation cannot go on (too few nodes, too few usable results)."""


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
    received_eval: dict[int, dict] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    aggregate_seconds: float | None = None  # decoding, checks and aggregation of the updates
    # Held only while the round runs: the broadcast sent for training (what each node now
    # holds, the base of its update), and the messages sent (their ids tell which node a
    # reply answers for).
    broadcast: transfer.Broadcast | None = None
    train_sent: list[Message] = field(default_factory=list)
    eval_sent: list[Message] = field(default_factory=list)

    def sent(self, messages: list[Message]) -> None:
        for message in messages:
            node = message.metadata.dst_node_id
            payload = sum(record.count_bytes() for record in message.content.array_records.values())
            self.bytes_down[node] = self.bytes_down.get(node, 0) + payload

    def named(self, per_node: dict[int, object]) -> dict[str, object]:
        """Node-id keyed values, keyed by `<node id>:<dataset uri>` for people."""
        return {self.names.get(node, str(node)): value for node, value in per_node.items()}


def _claimed_dataset(reply: Message) -> str | None:
    node = reply.content.config_records.get("node")
    return str(node["dataset-uri"])[:MAX_LABEL_CHARS] if node is not None and "dataset-uri" in node else None


def _addressees(sent: list[Message]) -> dict[str, int]:
    """Message id -> destination node: a reply names the message it answers. Its own sender id
    cannot be used: error replies made by the SuperLink (node gone, reply lost) carry the SuperLink's."""
    return {message.metadata.message_id: message.metadata.dst_node_id for message in sent}


def _keep_common_metrics(replies: list[Message]) -> None:
    """Flower refuses to aggregate MetricRecords with different keys; drop the keys not all replies share."""
    records = [next(iter(reply.content.metric_records.values())) for reply in replies]
    common = set.intersection(*(set(record) for record in records)) if records else set()
    for record in records:
        for key in [key for key in record if key not in common]:
            del record[key]


class ZK0Strategy:
    """zk0's side of a strategy. Subclasses put it before a Flower strategy; that one aggregates."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__(
            fraction_train=config.fraction_train,
            fraction_evaluate=config.fraction_evaluate,
            min_train_nodes=config.min_train_clients,
            min_evaluate_nodes=config.min_evaluate_clients,
            min_available_nodes=config.min_available_clients,
            **self.flower_arguments(config),
        )
        self.config = config
        self.rounds: dict[int, RoundRecord] = {}
        # Flower counts rounds from 1 on every start; a resumed run continues after `round_offset`.
        self.round_offset = 0
        self.federation_stats: dict | None = None
        self.cameras: list[str] = []  # the federation's camera features (the server's policy's)
        # The last broadcast, and the broadcast round each node holds (the base of a delta download).
        self.broadcast: transfer.Broadcast | None = None
        self.holds: dict[int, int] = {}
        # node id -> dataset uri its last accepted reply named: failures are filed under it.
        self.datasets: dict[int, str] = {}

    @staticmethod
    def flower_arguments(config: RunConfig) -> dict:
        """The Flower strategy's own constructor arguments."""
        return {}

    @property
    def max_train_examples(self) -> int:
        """What a node can train on in one round: a larger `num-examples` is a lie."""
        return self.config.local_steps * self.config.batch_size

    def summary(self) -> None:
        ratio = self.config.max_update_norm_ratio
        log(INFO, "\t├──> zk0 aggregation '%s'; a reply is rejected for a wrong structure, non-finite values, "
            "num-examples > %d, or an update norm > %s", self.config.aggregation, self.max_train_examples,
            f"{ratio:g} x the round's median" if ratio else "(norm rule off)")
        super().summary()

    def _label(self, node: int, reply: Message | None = None) -> str:
        """`<node id>:<dataset>`: the dataset of the node's last accepted reply, else what this reply claims."""
        dataset = self.datasets.get(node) or (_claimed_dataset(reply) if reply is not None and reply.has_content() else None)
        return f"{node}:{dataset}" if dataset else str(node)

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
        server_round += self.round_offset
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
        # Clients add FedProx's proximal term whatever the server aggregates with; proximal-mu = 0 turns it off.
        config["proximal-mu"] = self.config.proximal_mu
        broadcast = transfer.make_broadcast(
            {name: array.numpy() for name, array in arrays.items()}, self.broadcast, self.config.update_codec, server_round
        )
        config["broadcast-round"] = server_round
        config["cameras"] = ",".join(self.cameras)
        sampled = super().configure_train(server_round, arrays, config, grid)
        messages = [self._train_message(message.metadata.dst_node_id, broadcast, config) for message in sampled]
        self.broadcast = record.broadcast = broadcast
        record.train_sent = messages
        record.sent(messages)
        return messages

    def _train_message(self, node: int, broadcast: transfer.Broadcast, config: ConfigRecord) -> Message:
        """One node's train message: the broadcast whole, or as a delta if the node holds the previous one."""
        arrays, base = transfer.download(broadcast, self.holds.get(node))
        node_config = ConfigRecord(dict(config))
        node_config["reference-round"] = -1 if base is None else base
        content = RecordDict({
            self.arrayrecord_key: ArrayRecord({name: Array(value) for name, value in arrays.items()}),
            self.configrecord_key: node_config,
        })
        if self.federation_stats:
            content["stats"] = stats.to_record(self.federation_stats)
        return Message(content=content, dst_node_id=node, message_type=MessageType.TRAIN)

    def collect_statistics(self, grid: Grid) -> dict:
        """Before round 1: every connected node's normalization statistics, pooled (zk0.stats)."""
        needed = max(self.min_available_nodes, self.min_train_nodes)
        if not self._wait_for_nodes(grid, needed):
            raise FederationError(
                f"only {len(list(grid.get_node_ids()))} of the {needed} required clients connected within "
                f"{self.config.node_wait_timeout:.0f}s (run-config node-wait-timeout); start more clients or lower "
                f"min-available-clients"
            )
        messages = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in grid.get_node_ids()]
        addressees = _addressees(messages)
        reports, problems = [], []
        for reply in grid.send_and_receive(messages, timeout=self.config.round_timeout):
            node = addressees.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            if reply.has_error():
                problems.append(f"{self._label(node)}: {one_line(reply.error.reason)}")
                continue
            identity = reply.content.config_records.get("node")
            reason = check_cameras(str(identity["cameras"]).split(",") if identity and identity.get("cameras") else [],
                                   self.cameras, identity.get("rename-via") if identity else None) if self.cameras else None
            if reason:
                problems.append(f"{self._label(node, reply)}: refused: {reason}")
                continue
            try:
                reports.append(stats.from_record(reply.content["stats"]))
            except (KeyError, ValueError) as err:
                problems.append(f"{self._label(node, reply)}: unusable statistics ({err})")
        for problem in problems:
            log(WARNING, "Round 0: node %s", problem)
        if len(reports) < self.config.min_train_clients:
            raise FederationError(
                f"only {len(reports)} node(s) reported normalization statistics, min-train-clients is "
                f"{self.config.min_train_clients}: {'; '.join(problems)[:600] or 'no replies'}"
            )
        try:
            pooled = stats.pool(reports)
        except ValueError as err:
            raise FederationError(f"cannot pool the nodes' normalization statistics: {err}") from None
        frames = int(next(iter(pooled.values()))["count"].sum()) if pooled else 0
        log(INFO, "Normalization: pooled statistics of %d node(s), %d frames (%s)", len(reports), frames, ", ".join(pooled))
        return pooled

    def _screen(self, content: RecordDict, expected: dict) -> tuple[str | None, float | None, dict | None]:
        """Why this reply may not enter the aggregate (None if it may), its update norm, and its
        weights decoded to fp32 (zk0.transfer: a delta is added to the broadcast the node received)."""
        arrays, metrics = content.array_records, content.metric_records
        if list(arrays) != [self.arrayrecord_key] or len(metrics) != 1:
            return (f"expected one ArrayRecord '{self.arrayrecord_key}' and one MetricRecord, "
                    f"got ArrayRecords {sorted(arrays)} and MetricRecords {sorted(metrics)}"), None, None
        reason = check_metrics(next(iter(metrics.values())), self.max_train_examples, self.weighted_by_key)
        if reason:
            return reason, None, None
        try:
            encoded = {name: array.numpy() for name, array in arrays[self.arrayrecord_key].items()}
        except Exception as err:  # any undecodable payload is the node's fault, not the server's
            return f"tensors could not be decoded ({type(err).__name__})", None, None
        if transfer.is_delta(encoded) != (self.config.update_codec not in transfer.FULL_CODECS):
            return f"update not encoded with the run's update-codec '{self.config.update_codec}'", None, None
        try:
            values = transfer.decode(encoded)
        except CodecError as err:
            return f"tensors could not be decoded ({err})", None, None
        reason = check_arrays(values, expected) or check_finite(values)
        if reason:
            return reason, None, None
        update = {name: expected[name] + values[name] for name in expected} if transfer.is_delta(encoded) else values
        return None, update_norm(update, expected), update

    def _reject(self, server_round: int, record: RoundRecord, node: int, reply: Message, reason: str) -> None:
        label = self._label(node, reply)
        log(WARNING, "Round %d: rejected the update of node %s: %s", server_round, label, reason)
        record.rejected.append({"node": label, "reason": reason})

    def _fail(self, server_round: int, record: RoundRecord, node: int, reason: str) -> None:
        label, reason = self._label(node), one_line(reason)
        log(WARNING, "Round %d: node %s failed: %s", server_round, label, reason)
        record.failures.append(f"{label}: {reason}")

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        started = time.perf_counter()
        replies = list(replies)
        record = self.rounds.setdefault(server_round, RoundRecord())
        if record.broadcast is None:
            raise RuntimeError(f"round {server_round}: aggregate_train called before configure_train")
        expected = record.broadcast.weights
        addressees = _addressees(record.train_sent)
        answered: set[int] = set()
        passed: dict[int, Message] = {}
        norms: dict[int, float] = {}
        decoded: dict[int, dict] = {}
        for reply in replies:
            node = addressees.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            answered.add(node)
            if reply.has_error():
                self._fail(server_round, record, node, reply.error.reason)
                self.holds.pop(node, None)  # unknown whether it kept this round's broadcast
                continue
            self.holds[node] = record.broadcast.round
            record.names[node] = self._label(node, reply)
            record.bytes_up[node] = sum(arrays.count_bytes() for arrays in reply.content.array_records.values())
            reason, norm, weights = self._screen(reply.content, expected)
            if reason:
                self._reject(server_round, record, node, reply, reason)
                continue
            passed[node], norms[node], decoded[node] = reply, norm, weights
        for node, reason in norm_outliers(norms, self.config.max_update_norm_ratio).items():
            self._reject(server_round, record, node, passed.pop(node), reason)
        for node in addressees.values():
            if node not in answered:
                self._fail(server_round, record, node, f"no reply within round-timeout ({self.config.round_timeout:g}s)")
        for node, reply in passed.items():
            dataset = _claimed_dataset(reply)
            if dataset:
                self.datasets[node] = dataset
            record.names[node] = self._label(node, reply)
            metrics = dict(next(iter(reply.content.metric_records.values())))
            record.clients[node] = {k: v for k, v in metrics.items() if not k.startswith("received/")}
            if "received/eval-action-mse" in metrics:
                record.received_eval[node] = {
                    "num-examples": metrics["received/eval-examples"],
                    "eval/loss": metrics["received/eval-loss"],
                    "eval/action_mse": metrics["received/eval-action-mse"],
                    "eval/seconds": metrics.get("received/eval-seconds"),
                }
        record.broadcast, record.train_sent = None, []
        if len(passed) < self.config.min_train_clients:
            problems = record.failures + [f"{r['node']}: {r['reason']}" for r in record.rejected]
            raise FederationError(
                f"round {server_round}: only {len(passed)} usable training result(s), min-train-clients is "
                f"{self.config.min_train_clients}; failed: {'; '.join(problems)[:600] or 'no replies'}"
            )
        # Flower aggregates fp32 weights in the global model's tensor order (Krum compares the
        # flattened concatenations), in a fixed node order (float sums depend on it: same run,
        # same result).
        accepted = []
        for node in sorted(passed, key=lambda n: (self.datasets.get(n, ""), n)):  # node ids vary between runs
            reply = passed[node]
            reply.content[self.arrayrecord_key] = ArrayRecord({name: Array(decoded[node][name]) for name in expected})
            accepted.append(reply)
        _keep_common_metrics(accepted)
        result = super().aggregate_train(server_round, accepted)
        record.aggregate_seconds = time.perf_counter() - started
        return result

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Only after the last round: every round's train message already scores the global
        model it brings on the node's held-out episodes (`received_eval`)."""
        server_round += self.round_offset
        if self.fraction_evaluate == 0.0 or server_round != self.config.num_rounds:
            return []
        if not self._wait_for_nodes(grid, max(self.min_available_nodes, self.min_evaluate_nodes)):
            log(WARNING, "Round %d: too few clients connected for the final client-side evaluation; skipping it", server_round)
            return []
        codec = "fp32" if self.config.update_codec == "fp32" else "bf16"
        weights = transfer.encode({name: array.numpy() for name, array in arrays.items()}, codec)
        final = ArrayRecord({name: Array(value) for name, value in weights.items()})
        messages = list(super().configure_evaluate(server_round, final, config, grid))
        if messages and self.federation_stats:  # Flower's messages share one RecordDict
            messages[0].content["stats"] = stats.to_record(self.federation_stats)
        record = self.rounds.setdefault(server_round, RoundRecord())
        record.eval_sent = messages
        record.sent(messages)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        record = self.rounds.setdefault(server_round, RoundRecord())
        addressees = _addressees(record.eval_sent)
        max_examples = self.config.batch_size * self.config.eval_batches
        accepted = []
        for reply in replies:
            if reply.has_error():
                continue
            node = addressees.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            metrics = reply.content.metric_records
            reason = ("expected one MetricRecord" if len(metrics) != 1
                      else check_metrics(next(iter(metrics.values())), max_examples, self.weighted_by_key))
            if reason:
                log(WARNING, "Round %d: ignored the evaluation reply of node %s: %s", server_round,
                    self._label(node, reply), reason)
                continue
            record.names.setdefault(node, self._label(node, reply))
            record.client_eval[node] = dict(next(iter(metrics.values())))
            accepted.append(reply)
        record.eval_sent = []
        _keep_common_metrics(accepted)
        return super().aggregate_evaluate(server_round, accepted)


class ZK0FedProx(ZK0Strategy, FedProx):
    """Weighted average of the updates (FedAvg); clients add the proximal term."""

    @staticmethod
    def flower_arguments(config: RunConfig) -> dict:
        return {"proximal_mu": config.proximal_mu}


class ZK0FedTrimmedAvg(ZK0Strategy, FedTrimmedAvg):
    """Per coordinate: the mean after cutting the `trimmed-avg-beta` fraction at each end."""

    @staticmethod
    def flower_arguments(config: RunConfig) -> dict:
        return {"beta": config.trimmed_avg_beta}


class ZK0FedAvgM(ZK0Strategy, FedAvgM):
    """The weighted average as a pseudo-gradient, applied with server momentum (`server-momentum`)
    and step size (`server-lr`); resuming restarts the momentum."""

    @staticmethod
    def flower_arguments(config: RunConfig) -> dict:
        return {"server_learning_rate": config.server_lr, "server_momentum": config.server_momentum}


class ZK0FedMedian(ZK0Strategy, FedMedian):
    """Per coordinate: the median of the updates."""


class ZK0Krum(ZK0Strategy, Krum):
    """The one update closest to its neighbours, tolerating `krum-num-malicious` attackers."""

    @staticmethod
    def flower_arguments(config: RunConfig) -> dict:
        return {"num_malicious_nodes": config.krum_num_malicious}


class ZK0MultiKrum(ZK0Strategy, MultiKrum):
    """The weighted average of the `multikrum-keep` updates with the best Krum scores."""

    @staticmethod
    def flower_arguments(config: RunConfig) -> dict:
        return {"num_malicious_nodes": config.krum_num_malicious, "num_nodes_to_select": config.multikrum_keep}


STRATEGIES: dict[str, type[ZK0Strategy]] = {
    "fedprox": ZK0FedProx,
    "fedavgm": ZK0FedAvgM,
    "fedtrimmedavg": ZK0FedTrimmedAvg,
    "fedmedian": ZK0FedMedian,
    "krum": ZK0Krum,
    "multikrum": ZK0MultiKrum,
}


def make_strategy(config: RunConfig) -> ZK0Strategy:
    """The strategy run-config `aggregation` names."""
    return STRATEGIES[config.aggregation](config)
