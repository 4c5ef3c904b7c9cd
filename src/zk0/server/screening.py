"""What a node's reply must pass before the server uses it, one pipeline per message kind:
a training reply (its update enters the round's pool, then the round's norm rules), an
evaluation reply (its scores enter the round's record), a statistics report (it is pooled,
or its node is refused for the run).

Every pipeline starts the same way (`addressed`): a reply counts for the node its message was
sent to (never the sender id it carries: the SuperLink's own error replies carry its id) and
only once. The checks themselves are
zk0.wire.protocol's (parsing), zk0.server.validation's (what a training reply claims and
holds) and zk0.data's (statistics, cameras). Nothing a reply holds raises past a pipeline:
the worst it can do is cost its own node the round (or, for statistics, the run).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from logging import INFO, WARNING

from flwr.app import Message, MessageType
from flwr.common import log

from zk0.config import RunConfig
from zk0.data import stats
from zk0.data.cameras import check as check_cameras
from zk0.server.rounds import RoundRecord, Roster
from zk0.server.validation import Pool, Rejected, guarded, norm_clips, norm_outliers, screen_reply
from zk0.util.failures import one_line
from zk0.wire.protocol import EvaluateReport, ProtocolError, Scores, StatsReport, TrainReport, claimed_identity


def addressed(replies: Iterable[Message], addressees: Mapping[str, int], answered: set[int],
              ignored: Callable[[Message], None] = lambda reply: None) -> Iterator[tuple[int, Message]]:
    """Each reply with the node it answers for (`addressees`: message id -> node), the first one per
    node (added to `answered`); a reply to no message sent, or a node's second, goes to `ignored`."""
    for reply in replies:
        node = addressees.get(reply.metadata.reply_to_message_id)
        if node is None or node in answered:
            ignored(reply)
            continue
        answered.add(node)
        yield node, reply


# ------------------------------------------------------------------ train replies

def train_replies(server_round: int, record: RoundRecord, replies: Iterable[Message], pool: Pool, roster: Roster,
                  config: RunConfig, max_examples: int) -> tuple[dict[int, TrainReport], set[int]]:
    """Every reply, as it arrives, filed under the node it answers for: failed, rejected or
    accepted into `pool`; then the norm rules over the accepted ones. The accepted reports
    (their updates are in the pool) and the nodes that answered."""
    accepted: dict[int, TrainReport] = {}
    answered: set[int] = set()
    record.aggregate_seconds = 0.0

    def ignored(reply: Message) -> None:
        log(WARNING, "Round %d: ignored a reply to no message of this round (from node %s)",
            server_round, reply.metadata.src_node_id)

    for node, reply in addressed(replies, record.addressees, answered, ignored):
        started = time.perf_counter()
        report = _train_reply(server_round, record, roster, node, reply, pool, config, max_examples)
        if report is not None:
            accepted[node] = report
            record.passed += 1
        _release(reply)
        record.aggregate_seconds += time.perf_counter() - started
    record.answered = len(answered)
    started = time.perf_counter()
    _norm_rules(server_round, record, roster, accepted, pool, config)
    record.aggregate_seconds += time.perf_counter() - started
    return accepted, answered


def _train_reply(server_round: int, record: RoundRecord, roster: Roster, node: int, reply: Message, pool: Pool,
                 config: RunConfig, max_examples: int) -> TrainReport | None:
    if reply.has_error():
        fail(server_round, record, roster, node, one_line(reply.error.reason))
        roster.holds.pop(node, None)  # unknown whether it kept this round's broadcast
        return None
    roster.holds[node] = record.broadcast.round
    record.received(node, reply)
    roster.label(node, claimed_identity(reply.content))
    if reply.metadata.message_type != MessageType.TRAIN:
        reject(server_round, record, roster, node, f"a '{reply.metadata.message_type}' reply to a train message")
        return None
    screened = screen_reply(reply.content, pool, node, config.update_codec, max_examples)
    if isinstance(screened, str):
        reject(server_round, record, roster, node, screened)
        return None
    return dataclasses.replace(screened.report, update={})  # the update is in the pool: don't hold it twice


def _norm_rules(server_round: int, record: RoundRecord, roster: Roster, accepted: dict[int, TrainReport], pool,
                config: RunConfig) -> None:
    """Once the round's norms are all known: updates above max-update-norm-ratio x their median
    are taken out, then those above clip-update-norm-ratio x the median of the ones left
    count scaled down to that norm (the same as if the rejected ones had never come)."""
    for node, reason in norm_outliers(pool.norms, config.max_update_norm_ratio).items():
        pool.remove(node)
        del accepted[node]
        reject(server_round, record, roster, node, reason)
    limit, factors = norm_clips(pool.norms, config.clip_update_norm_ratio)
    for node, factor in factors.items():
        norm = pool.norms[node]
        pool.scale(node, factor)
        label = roster.label(node)
        log(INFO, "Round %d: clipped the update of %s: norm %.4g counts as %.4g (%g x the round's median)",
            server_round, label, norm, limit, config.clip_update_norm_ratio)
        record.clipped.append({"node": label, "norm": norm, "clipped-to": limit})


def reject(server_round: int, record: RoundRecord, roster: Roster, node: int, reason: str) -> None:
    roster.count(node, "rejected")
    label = roster.label(node)
    log(WARNING, "Round %d: rejected the update of %s: %s", server_round, label, reason)
    record.rejected.append({"node": label, "reason": reason})


def fail(server_round: int, record: RoundRecord, roster: Roster, node: int, reason: str) -> None:
    roster.count(node, "failed")
    label = roster.label(node)
    log(WARNING, "Round %d: %s failed: %s", server_round, label, reason)
    record.failures.append(f"{label}: {reason}")


def _release(reply: Message) -> None:
    """Drops a handled reply's arrays now. Flower's records refer to each other in a cycle, so a
    reply outlives its last use until the garbage collector's next pass: at hundreds of replies
    of 39 MB, that is gigabytes."""
    if reply.has_content():
        for record in reply.content.array_records.values():
            record.clear()


# ------------------------------------------------------------------ evaluate replies

def evaluate_replies(server_round: int, record: RoundRecord, replies: Iterable[Message], roster: Roster,
                     max_examples: int) -> dict[int, Scores]:
    """The global model's scores per node, each reply's numbers filed in `record`; a failed
    reply, a refused node's or one claiming more examples than the node could have used is
    left out (an unusable one with a warning)."""
    scores: dict[int, Scores] = {}
    for node, reply in addressed(replies, record.addressees, set()):
        if reply.has_error() or node in roster.refused:
            continue
        roster.label(node, claimed_identity(reply.content))
        report, reason = guarded(EvaluateReport.from_content, reply.content)
        counts = [report.scores.num_examples, report.personal.num_examples if report.personal else 0] if report else []
        if any(count > max_examples for count in counts):
            reason = f"'num-examples' is {max(counts)}, more than the {max_examples} the node could have used"
        if reason:
            log(WARNING, "Round %d: ignored the evaluation reply of %s: %s", server_round, roster.label(node), reason)
            continue
        record.evaluated(node, roster.label(node), report.scores, report.metrics, report.personal)
        scores[node] = report.scores
    return scores


# ------------------------------------------------------------------ statistics reports

def statistics_replies(replies: Iterable[Message], addressees: dict[str, int], roster: Roster, cameras: list[str],
                       shapes: dict, reports: dict[int, dict], problems: list[str]) -> set[int]:
    """Round 0's replies: each passing report's statistics into `reports` (its node's label and
    start model into `roster`); a failed or refused node is refused for the run, with one line
    in `problems`. The nodes that answered."""
    answered: set[int] = set()
    for node, reply in addressed(replies, addressees, answered):
        if reply.has_error():
            roster.refuse(node, "no statistics")
            problems.append(f"{roster.label(node)}: {one_line(reply.error.reason)}")
            continue
        identity = claimed_identity(reply.content)
        report, reason = guarded(_statistics_report, reply.content, cameras, shapes)
        if reason:
            roster.refuse(node, reason)
            problems.append(f"{roster.label(node, identity)}: refused: {reason}")
            continue
        roster.label(node, report.identity)
        roster.starts[node] = report.identity.start
        reports[node] = report.stats
    return answered


def _statistics_report(content, cameras: list[str], shapes: dict) -> StatsReport:
    """A statistics reply that may be pooled, or Rejected with the reason."""
    try:
        report = StatsReport.from_content(content)
    except ProtocolError as err:
        raise Rejected(f"unusable statistics ({err})") from None
    reason = (check_cameras(list(report.identity.cameras), cameras, report.identity.rename_via) if cameras else None) \
        or stats.check(report.stats, shapes)
    if reason:
        raise Rejected(reason)
    return report
