"""zk0 ClientApp: trains the global SmolVLA on this node's private dataset.

One message per round: a train message brings the global model (whole, or a delta
against the one this node already holds: zk0.transfer) and the federation's pooled
normalization statistics; the node first scores that global model on its own held-out
episodes, then trains, and replies with its encoded update and both sets of metrics.
A query message at the start of a run asks for this dataset's normalization statistics
(zk0.stats: a few numbers per joint, never frames); an evaluate message after the last
round scores the final global model. Frames, frozen weights and the dataset never leave.
"""

from __future__ import annotations

import time

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from zk0 import node_state, stats, transfer
from zk0.evaluate import evaluate_policy
from zk0.node import NodeSession, node_session
from zk0.train import train_local

app = ClientApp()


def _arrays(record: ArrayRecord) -> dict:
    return {name: array.numpy() for name, array in record.items()}


def _receive_global(session: NodeSession, msg: Message, context: Context) -> dict:
    """The global model this message carries, built on the node's held copy for a delta."""
    config = msg.content["config"]
    if "stats" in msg.content:
        session.use_federation_stats(stats.from_record(msg.content["stats"]))
    state = node_state.load(context.run_id, context.node_id)
    base = int(config.get("reference-round", -1))
    held = None
    if base >= 0:
        if state.reference_round != base or state.reference is None:
            raise RuntimeError(
                f"the server sent a delta against round {base}'s global model, but this node holds "
                f"{'none' if state.reference is None else f'round {state.reference_round}'}; it receives whole weights next round"
            )
        held = state.reference
    weights = transfer.receive(_arrays(msg.content["arrays"]), held)
    session.load_weights(weights)
    return weights


def _evaluate(session: NodeSession) -> MetricRecord:
    started = time.perf_counter()
    result = evaluate_policy(session.policy, session.preprocessor, session.postprocessor, session.heldout_batches())
    return MetricRecord({"num-examples": result.samples, "eval/loss": result.loss, "eval/action_mse": result.action_mse,
                         "eval/seconds": time.perf_counter() - started})


@app.query()
def query(msg: Message, context: Context) -> Message:
    session = node_session(context)
    content = RecordDict({"stats": stats.to_record(session.statistics()), "node": session.identity()})
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    session = node_session(context)
    config = msg.content["config"]
    if config.get("cameras"):
        session.check_cameras(str(config["cameras"]).split(","))
    received = _receive_global(session, msg, context)
    server_round = int(config["server-round"])
    # The global model as it arrived, scored on this node's held-out episodes: the
    # client-side metric of the previous round's aggregate, without a second message.
    held_out = _evaluate(session) if session.has_heldout else None
    lr = float(config["lr"])
    result = train_local(
        session.policy,
        session.preprocessor,
        session.train_batches(seed=server_round),
        steps=session.config.local_steps,
        lr=lr,
        proximal_mu=float(config["proximal-mu"]),
        desc=f"round {server_round} {session.data.uri}",
    )
    codec = session.config.update_codec
    state = node_state.load(context.run_id, context.node_id)
    upload = transfer.upload(session.trainable_weights(), received, codec, state.feedback)
    if codec not in transfer.FULL_CODECS:
        state.reference, state.reference_round = received, int(config["broadcast-round"])
        node_state.save(context.run_id, context.node_id, state)
    metrics = {
        "num-examples": result.samples,
        "train/loss": result.loss,
        "train/proximal-term": result.proximal_term,
        "train/lr": lr,
        "train/steps": result.steps,
        "train/seconds": result.seconds,
        "train/samples-per-second": result.samples_per_second,
        "startup-seconds": session.startup_seconds,
    }
    if held_out is not None:
        metrics.update({"received/eval-examples": held_out["num-examples"], "received/eval-loss": held_out["eval/loss"],
                        "received/eval-action-mse": held_out["eval/action_mse"],
                        "received/eval-seconds": held_out["eval/seconds"]})
    content = RecordDict({
        "arrays": ArrayRecord({name: Array(value) for name, value in upload.items()}),
        "metrics": MetricRecord(metrics),
        "node": session.identity(),
    })
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """After the last round: the final global model on this node's held-out episodes."""
    session = node_session(context)
    _receive_global(session, msg, context)
    metrics = _evaluate(session)
    metrics["startup-seconds"] = session.startup_seconds
    return Message(content=RecordDict({"metrics": metrics, "node": session.identity()}), reply_to=msg)
