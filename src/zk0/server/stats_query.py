"""Round 0: ask every connected node for its normalization statistics, check each node's
report (its cameras, then zk0.data.stats.check) and pool the rest (zk0.data.stats.pool,
which bounds what any one report counts for).

A node whose report is refused is named in one line and trains in no round of this run; a
node whose report the pool held to its limits is named in one line and takes part.
"""

from __future__ import annotations

from logging import INFO, WARNING

from flwr.app import Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from zk0.data import stats
from zk0.data.cameras import check as check_cameras
from zk0.util.failures import one_line
from zk0.wire.protocol import ProtocolError, StatsReport, claimed_identity
from zk0.server.rounds import Roster
from zk0.server.validation import Rejected, guarded


def _screen(content, cameras: list[str], shapes: dict) -> StatsReport:
    """A statistics reply that may be pooled, or Rejected / ProtocolError with the reason."""
    try:
        report = StatsReport.from_content(content)
    except ProtocolError as err:
        raise Rejected(f"unusable statistics ({err})") from None
    reason = (check_cameras(list(report.identity.cameras), cameras, report.identity.rename_via) if cameras else None) \
        or stats.check(report.stats, shapes)
    if reason:
        raise Rejected(reason)
    return report


def collect(grid: Grid, nodes: list[int], spares: list[int], roster: Roster, cameras: list[str], shapes: dict,
            min_nodes: int, timeout: float) -> tuple[dict | None, int, list[str]]:
    """The pooled statistics of the nodes whose reports pass (None if fewer than `min_nodes`
    do), how many passed, and one line per refused or failed node. `nodes` are asked first;
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
        return None, len(reports), problems
    order = sorted(reports, key=lambda n: (roster.claims.get(n, ""), n))
    pooled = stats.pool([reports[node] for node in order])
    for index, reason in stats.held_back([reports[node] for node in order]).items():
        log(INFO, "Round 0: %s: statistics held to the federation's limits: %s", roster.label(order[index]), reason)
    frames = int(next(iter(pooled.values()))["count"].sum()) if pooled else 0
    log(INFO, "Normalization: pooled statistics of %d node(s), %d frames counted (%s)", len(reports), frames, ", ".join(pooled))
    return pooled, len(reports), problems


def _ask(grid: Grid, nodes: list[int], roster: Roster, cameras: list[str], shapes: dict, timeout: float,
         reports: dict[int, dict], problems: list[str]) -> None:
    """Query `nodes`; add each passing report to `reports`, one line per other node to `problems`."""
    messages = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]
    replies = grid.send_and_receive(messages, timeout=timeout)
    # Message ids are given as the grid pushes the messages; a reply names the one it answers.
    addressees = {message.metadata.message_id: message.metadata.dst_node_id for message in messages}
    answered: set[int] = set()
    for reply in replies:
        node = addressees.get(reply.metadata.reply_to_message_id)
        if node is None or node in answered or node in roster.refused:
            continue  # not an answer to this query, or a second one
        answered.add(node)
        if reply.has_error():
            roster.refuse(node, "no statistics")
            problems.append(f"{roster.label(node)}: {one_line(reply.error.reason)}")
            continue
        identity = claimed_identity(reply.content)
        report, reason = guarded(_screen, reply.content, cameras, shapes)
        if reason:
            _refuse(roster, problems, node, reason, identity)
            continue
        roster.label(node, report.identity)
        roster.starts[node] = report.identity.start
        reports[node] = report.stats
    for node in nodes:
        if node not in answered:
            roster.refuse(node, "no statistics")
            problems.append(f"{roster.label(node)}: no reply within round-timeout ({timeout:g}s)")


def _refuse(roster: Roster, problems: list[str], node: int, reason: str, identity=None) -> None:
    roster.refuse(node, reason)
    problems.append(f"{roster.label(node, identity)}: refused: {reason}")
