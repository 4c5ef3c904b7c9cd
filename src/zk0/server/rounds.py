"""The server's bookkeeping: what each round moved and what every node reported
(`RoundRecord`), and what the server knows of each node across rounds (`Roster`).

Nodes are Flower node ids inside the strategy and labels for people outside it: the name
the server admin registered with the node's key (zk0bot server register --name, read by
`zk0.server.identities`), else the node id, followed by the dataset the node *claims* (a label
only: nothing a node says about itself is trusted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from flwr.app import Message, Metadata

from zk0.wire import transfer
from zk0.server.identities import registered_names
from zk0.wire.protocol import PERSONAL_PREFIX, NodeIdentity, Scores


@dataclass
class RoundRecord:
    """One round, keyed by Flower node id until it becomes a metrics row (zk0.server.round_summary)."""

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
    clipped: list[dict] = field(default_factory=list)  # updates counted at the round's clip norm
    sampled: list[int] = field(default_factory=list)  # the nodes sent a training message
    answered: int = 0  # replies in before the round closed
    passed: int = 0  # replies that passed screening so far: what train-quorum counts
    attempt: int = 0  # 0, or how many earlier attempts fell short (round-retries)
    retries: list[str] = field(default_factory=list)  # why each earlier attempt fell short
    late: list[str] = field(default_factory=list)  # sampled nodes that had not answered when the round closed
    aggregate_seconds: float | None = None  # decoding, checks and aggregation of the updates
    # Held only while the round runs: the broadcast sent for training (the base of every
    # update) and the metadata of the messages sent (a reply names the message it answers;
    # ids are given when the grid pushes them, so they are read only once replies come).
    broadcast: transfer.Broadcast | None = None
    outbox: list[Metadata] = field(default_factory=list)
    _addressees: dict[str, int] | None = field(default=None, repr=False)

    def sent(self, message: Message) -> None:
        """One message on its way (its content is not kept: the grid may drop it once pushed)."""
        self.outbox.append(message.metadata)
        self._addressees = None
        node = message.metadata.dst_node_id
        payload = sum(record.count_bytes() for record in message.content.array_records.values())
        self.bytes_down[node] = self.bytes_down.get(node, 0) + payload

    @property
    def addressees(self) -> dict[str, int]:
        """Message id -> node, read once the grid has pushed the messages (and given their ids)."""
        if self._addressees is None:
            self._addressees = {metadata.message_id: metadata.dst_node_id for metadata in self.outbox}
        return self._addressees

    def closed(self) -> None:
        """The round's replies are in: drop what was held only while it ran."""
        self.broadcast, self.outbox, self._addressees = None, [], None

    def fell_short(self, reason: str) -> None:
        """This attempt closed with too few usable replies and the round runs again: keep what it
        moved and why it fell short, forget what it trained (none of it enters the model)."""
        self.retries.append(reason)
        self.attempt += 1
        self.sampled, self.answered, self.passed = [], 0, 0
        self.clients, self.received_eval, self.late, self.failures, self.rejected = {}, {}, [], [], []

    def received(self, node: int, reply: Message) -> None:
        # Added up: a node may answer each attempt at a retried round.
        payload = sum(record.count_bytes() for record in reply.content.array_records.values())
        self.bytes_up[node] = self.bytes_up.get(node, 0) + payload

    def trained(self, node: int, label: str, metrics: dict, num_examples: int, received: Scores | None) -> None:
        self.names[node] = label
        self.clients[node] = {"num-examples": num_examples, **metrics}
        if received is not None:
            self.received_eval[node] = received.metrics()

    def evaluated(self, node: int, label: str, scores: Scores, metrics: dict, personal: Scores | None = None) -> None:
        """The final evaluation's numbers: the global model's scores, the node's personal model's
        (`personal/...`, run-config personalize) and its other metrics."""
        self.names[node] = label
        self.client_eval[node] = {**scores.metrics(), **(personal.metrics(PERSONAL_PREFIX) if personal else {}),
                                  **metrics}

    def named(self, per_node: dict[int, object]) -> dict[str, object]:
        """Node-id keyed values, keyed by the nodes' labels for people."""
        return {self.names.get(node, str(node)): value for node, value in per_node.items()}


PARTICIPATION = ("sampled", "accepted", "rejected", "failed", "late", "late-replies")


class Roster:
    """What the server knows of each node in this run: its label, the start model it says it
    loaded, the broadcast round it holds (the base of a delta download), whether it was
    refused for the rest of the run, the training messages it has not answered yet (message
    id -> round: the node is busy), and how often it took part (PARTICIPATION counts)."""

    def __init__(self) -> None:
        self.claims: dict[int, str] = {}
        self.starts: dict[int, str] = {}  # the start-model digest each node reported in round 0
        self.holds: dict[int, int] = {}
        self.refused: dict[int, str] = {}
        self.outstanding: dict[str, tuple[int, int]] = {}  # message id -> (round, node)
        self.participation: dict[int, dict[str, int]] = {}
        self.earlier: dict[str, dict[str, int]] = {}  # by label: the counts of the rounds before a resume
        self._names: dict[int, str] = {}

    def count(self, node: int, what: str) -> None:
        counts = self.participation.setdefault(node, dict.fromkeys(PARTICIPATION, 0))
        counts[what] += 1

    @property
    def busy(self) -> set[int]:
        return {node for _, node in self.outstanding.values()}

    def participation_table(self) -> dict[str, dict[str, int]]:
        """Per node (by label), how often it was sampled, accepted, rejected, failed, late, in
        every round of the run: a node whose Flower id changed at a resume has a row per id."""
        table = {label: dict(counts) for label, counts in self.earlier.items()}
        for node, counts in sorted(self.participation.items()):
            row = table.setdefault(self.label(node), dict.fromkeys(PARTICIPATION, 0))
            for what, count in counts.items():
                row[what] += count
        return table

    def refresh_names(self) -> None:
        """Re-read the registered names (node ids change when the SuperLink restarts)."""
        self._names = registered_names()

    def label(self, node: int, identity: NodeIdentity | None = None) -> str:
        """`<registered name> (node <id>)` or `node <id>`, with the dataset the node claims."""
        if identity is not None and identity.dataset:
            self.claims[node] = identity.dataset
        name = self._names.get(node)
        who = f"{name} (node {node})" if name else f"node {node}"
        claim = self.claims.get(node)
        return f"{who} claiming {claim}" if claim else who

    def refuse(self, node: int, reason: str) -> None:
        self.refused[node] = reason
        self.holds.pop(node, None)

    def eligible(self, nodes: list[int]) -> list[int]:
        """The nodes that may be sampled: not refused, not still busy with an earlier round."""
        busy = self.busy
        return sorted(node for node in nodes if node not in self.refused and node not in busy)

