"""zk0 ClientApp: trains the global SmolVLA on this node's private dataset.

One message per round: a train message brings the global model (whole, or a delta
against the one this node already holds: zk0.wire.transfer) and the federation's pooled
normalization statistics; the node first scores that global model on its own held-out
episodes, then trains, and replies with its encoded update and both sets of metrics.
A query message at the start of a run asks for this dataset's normalization statistics
(zk0.data.stats: a few numbers per joint, never frames); an evaluate message after the last
round scores the final global model (and, with run-config `personalize`, fine-tunes it into
this node's personal model, kept on this node: zk0.node.personal; with `personalize = "adapter"`
each train message also trains the node's personal adapter after its reply is built). Frames,
frozen weights, personal weights and the dataset never leave.
"""

from __future__ import annotations

import time

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from zk0.node import drift, personal
from zk0.wire import transfer
from zk0.policy.evaluate import evaluate_policy
from zk0.node.session import NodeSession, node_session
from zk0.node.memory import NodeMemory, node_key
from zk0.wire.protocol import EvaluateInstructions, EvaluateReport, Scores, StatsReport, TrainInstructions, TrainReport
from zk0.policy.train import train_local

app = ClientApp()


def _receive_global(session: NodeSession, model: dict, stats: dict | None, reference_round: int | None = None,
                    memory: NodeMemory | None = None) -> dict:
    """The global model a message carries, built on the node's held copy for a delta."""
    if stats:
        session.use_federation_stats(stats)
    held = None
    if reference_round == transfer.START_ROUND:
        held = session.start_weights()
    elif reference_round is not None:
        if memory is None or memory.reference_round != reference_round or memory.reference is None:
            raise RuntimeError(
                f"the server sent a delta against round {reference_round}'s global model, but this node holds "
                f"{'none' if memory is None or memory.reference is None else f'round {memory.reference_round}'}; "
                f"it receives whole weights next round"
            )
        held = memory.reference
    weights = transfer.receive(model, held)
    session.load_weights(weights)
    return weights


def _evaluate(session: NodeSession) -> Scores:
    started = time.perf_counter()
    result = evaluate_policy(session.policy, session.preprocessor, session.postprocessor, session.heldout_batches())
    return Scores(result.samples, result.loss, result.action_mse, time.perf_counter() - started)


@app.query()
def query(msg: Message, context: Context) -> Message:
    session = node_session(context)
    return Message(StatsReport(session.statistics(), session.identity()).to_content(), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    session = node_session(context)
    ins = TrainInstructions.from_content(msg.content)
    if ins.cameras:
        session.check_cameras(list(ins.cameras))
    memory = NodeMemory.load(ins.run_key, node_key(context.node_config))
    memory.settle(ins.server_round, ins.attempts)
    received = _receive_global(session, ins.model, ins.stats, ins.reference_round, memory)
    # The global model as it arrived, scored on this node's held-out episodes: the
    # client-side metric of the previous round's aggregate, without a second message.
    held_out = _evaluate(session) if session.has_heldout else None
    scaffold = session.config.drift_correction == "scaffold"
    correction = (drift.correction(memory.control, memory.reference, memory.reference_round, ins.server_round,
                                   received) if scaffold else None)
    result = train_local(
        session.policy,
        session.preprocessor,
        session.train_batches(seed=ins.server_round),
        steps=session.config.local_steps,
        lr=ins.lr,
        proximal_mu=ins.proximal_mu,
        desc=f"round {ins.server_round} {session.data.uri}",
        optimizer_state=memory.optimizer if session.config.keep_optimizer_state else None,
        keep_optimizer_state=session.config.keep_optimizer_state,
        correction=correction,
    )
    codec = session.config.update_codec
    trained = session.trainable_weights()
    upload = transfer.upload(trained, received, codec, memory.feedback)
    if codec not in transfer.FULL_CODECS or scaffold:
        memory.reference, memory.reference_round = received, ins.broadcast_round
    if scaffold:
        memory.control = drift.own_update(trained, received, correction)
    memory.optimizer = result.optimizer_state
    memory.trained = (ins.server_round, ins.attempts.start, ins.attempt)
    adapter = session.config.personalize == "adapter"
    if adapter:
        # The reply is built; now this node's own adapter over the global model as received.
        session.load_weights(received)
        memory.adapter, memory.adapter_optimizer = personal.train_adapter(
            session, memory.adapter, memory.adapter_optimizer, ins.server_round)
    if codec not in transfer.FULL_CODECS or memory.optimizer or scaffold or adapter:
        memory.save()
    report = TrainReport(
        update=upload,
        num_examples=result.samples,
        metrics={
            "train/loss": result.loss,
            "train/proximal-term": result.proximal_term,
            "train/lr": ins.lr,
            "train/steps": result.steps,
            "train/seconds": result.seconds,
            "train/samples-per-second": result.samples_per_second,
            "startup-seconds": session.startup_seconds,
        },
        identity=session.identity(),
        received=held_out,
    )
    return Message(report.to_content(), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """After the last round: the final global model on this node's held-out episodes; with
    run-config `personalize`, this node's personal model too (zk0.node.personal: it stays on
    the node, the reply carries its scores only)."""
    session = node_session(context)
    ins = EvaluateInstructions.from_content(msg.content)
    received = _receive_global(session, ins.model, ins.stats)
    scores = _evaluate(session)
    metrics = {"startup-seconds": session.startup_seconds}
    mine = None
    if session.config.personalize != "none" and session.has_heldout:
        try:
            made = _personalize(session, ins, context)
            if made is not None:
                mine, metrics["personal/train-seconds"] = made
        finally:
            session.load_weights(received)  # the process's shared policy holds the global model again
    report = EvaluateReport(scores, session.identity(), metrics, personal=mine)
    return Message(report.to_content(), reply_to=msg)


def _personalize(session: NodeSession, ins: EvaluateInstructions, context: Context) -> tuple[Scores, float] | None:
    """This node's personal model from the received global model (fine-tuned, or with its
    adapter merged in), saved on this node; None: an adapter node that trained no round."""
    config = session.config
    key = node_key(context.node_config)
    directory = personal.personal_dir(dict(context.node_config), ins.run_dir, key)
    started = time.perf_counter()
    if config.personalize == "finetune":
        personal.finetune(session, directory, config.personal_steps, config.personal_lr or config.lr)
    else:
        adapter = NodeMemory.load(ins.run_key, key).adapter
        if adapter is None:
            return None
        personal.merge_adapter(session, directory, adapter)
    seconds = time.perf_counter() - started
    scores = _evaluate(session)
    personal.record_scores(directory, {"heldout": scores.metrics(), "server_round": ins.server_round})
    return scores, seconds
