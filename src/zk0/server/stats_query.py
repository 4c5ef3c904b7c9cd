"""Round 0: ask every connected node for its normalization statistics, check each node's
report (zk0.server.screening: its cameras, then zk0.data.stats.check) and pool the rest
(zk0.data.stats.pool, which bounds what any one report counts for).

A node whose report is refused is named in one line and trains in no round of this run; a
node whose report the pool held to its limits is named in one line and takes part.
"""

from __future__ import annotations

from logging import INFO, WARNING

from flwr.app import Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from zk0.data import stats
from zk0.server import screening
from zk0.server.errors import FederationError
from zk0.server.rounds import Roster
from zk0.util.failures import shorten


def collect(grid: Grid, nodes: list[int], spares: list[int], roster: Roster, cameras: list[str], shapes: dict,
            min_nodes: int, timeout: float) -> dict:
    """The pooled statistics of the nodes whose reports pass; FederationError, with one line per
    refused or failed node, if fewer than `min_nodes` (min-train-clients) do. `nodes` are asked first;
    while refusals leave fewer than `min_nodes` reports, as many of `spares` (in their order)
    as are missing are asked too, so one refused node cannot stop a sampled run."""
    reports: dict[int, dict] = {}
    problems: list[str] = []
    spares = list(spares)
    batch = list(nodes)
    while batch:
        logged = len(problems)
        _ask(grid, batch, roster, cameras, shapes, timeout, reports, problems)
        for problem in problems[logged:]:
            log(WARNING, "Round 0: %s", problem)
        missing = min_nodes - len(reports)
        batch, spares = spares[:max(missing, 0)], spares[max(missing, 0):]
        if batch:
            log(INFO, "Round 0: asking %d more node(s) for statistics (%d usable, %d needed)", len(batch),
                len(reports), min_nodes)
    if len(reports) < min_nodes:
        raise FederationError(
            f"only {len(reports)} node(s) reported usable normalization statistics, min-train-clients is "
            f"{min_nodes}: {shorten('; '.join(problems), 600) or 'no replies'}"
        )
    order = sorted(reports, key=lambda n: (roster.claims.get(n, ""), n))
    pooled = stats.pool([reports[node] for node in order])
    for index, reason in stats.held_back([reports[node] for node in order]).items():
        log(INFO, "Round 0: %s: statistics held to the federation's limits: %s", roster.label(order[index]), reason)
    frames = int(next(iter(pooled.values()))["count"].sum()) if pooled else 0
    log(INFO, "Normalization: pooled statistics of %d node(s), %d frames counted (%s)", len(reports), frames, ", ".join(pooled))
    return pooled


def _ask(grid: Grid, nodes: list[int], roster: Roster, cameras: list[str], shapes: dict, timeout: float,
         reports: dict[int, dict], problems: list[str]) -> None:
    """Query `nodes`; add each passing report to `reports`, one line per other node to `problems`."""
    messages = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]
    replies = grid.send_and_receive(messages, timeout=timeout)
    # Message ids are given as the grid pushes the messages; a reply names the one it answers.
    addressees = {message.metadata.message_id: message.metadata.dst_node_id for message in messages}
    answered = screening.statistics_replies(replies, addressees, roster, cameras, shapes, reports, problems)
    for node in nodes:
        if node not in answered:
            roster.refuse(node, "no statistics")
            problems.append(f"{roster.label(node)}: no reply within round-timeout ({timeout:g}s)")

