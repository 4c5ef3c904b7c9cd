"""Nodes that had not answered when their round closed: late, and busy until their reply
comes; that reply is then dropped."""

from __future__ import annotations

from itertools import chain
from logging import INFO, WARNING

from flwr.serverapp import Grid
from flwr.common import log

from zk0.server import inbox
from zk0.server.rounds import RoundRecord, Roster


def mark(server_round: int, record: RoundRecord, roster: Roster, answered: set[int], quorum_met: bool,
         timeout: float) -> None:
    """Every node sent this round's message that is not in `answered` is late: its reply is awaited
    (the node is busy) and dropped when it comes."""
    closed_by = ("before the round's quorum (train-quorum) was in" if quorum_met
                 else f"within round-timeout ({timeout:g}s)")
    for message_id, node in record.addressees.items():
        if node not in answered:
            roster.outstanding[message_id] = (server_round, node)
            roster.count(node, "late")
            label = roster.label(node)
            log(WARNING, "Round %d: %s: no reply %s; a later reply is dropped", server_round, label, closed_by)
            record.late.append(label)


def collect(grid: Grid, roster: Roster) -> None:
    """Replies to earlier rounds' messages that came after their round closed: dropped,
    counted per node; the node is free to be sampled again."""
    for reply in chain.from_iterable(inbox.available(grid, list(roster.outstanding))):
        entry = roster.outstanding.pop(reply.metadata.reply_to_message_id, None)
        if entry is None:
            continue
        server_round, node = entry
        roster.count(node, "late-replies")
        if reply.has_error():
            roster.holds.pop(node, None)
        else:
            roster.holds[node] = server_round  # it took that round's broadcast
        log(INFO, "Round %d: dropped the late reply of %s", server_round, roster.label(node))
