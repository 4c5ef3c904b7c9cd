"""What the server sends: the round's broadcast (the global model the nodes train from, whole
or as a delta: zk0.wire.transfer) and one message per node, each made when the grid asks for
it (a round's messages are never all held)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from flwr.app import Message, MessageType

from zk0.server.rounds import RoundRecord, Roster
from zk0.wire import transfer
from zk0.wire.protocol import EvaluateInstructions, TrainInstructions


def next_broadcast(previous: transfer.Broadcast | None, global_weights: dict, server_round: int, codec: str,
                   roster: Roster) -> transfer.Broadcast:
    """A new round's broadcast: a delta against the last one where the codec sends deltas. Round 1
    sends the start model: the nodes whose round-0 report says they loaded the same one hold it
    as broadcast round 0 and get a delta of zeros."""
    if previous is None and server_round == 1 and codec not in transfer.FULL_CODECS:
        previous = transfer.start_broadcast(global_weights)
        digest = transfer.digest(previous.weights)
        for node, claimed in roster.starts.items():
            if claimed == digest:
                roster.holds[node] = previous.round
        global_weights = previous.weights
    return transfer.make_broadcast(global_weights, previous, codec, server_round)


def train_messages(record: RoundRecord, nodes: list[int], roster: Roster,
                   instructions: TrainInstructions) -> Iterator[Message]:
    """`instructions` to each node, with the round's broadcast as the node can take it: a delta
    from the broadcast it holds, else whole."""
    for node in nodes:
        model, base = transfer.download(record.broadcast, roster.holds.get(node))
        content = dataclasses.replace(instructions, reference_round=base, model=model).to_content()
        message = Message(content, dst_node_id=node, message_type=MessageType.TRAIN)
        record.sent(message)
        roster.count(node, "sampled")
        yield message


def evaluate_messages(record: RoundRecord, nodes: list[int], instructions: EvaluateInstructions) -> Iterator[Message]:
    # One content per message: Flower may not share records between messages.
    for node in nodes:
        message = Message(instructions.to_content(), dst_node_id=node, message_type=MessageType.EVALUATE)
        record.sent(message)
        yield message
