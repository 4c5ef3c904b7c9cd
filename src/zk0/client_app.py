"""zk0 ClientApp: trains and evaluates the global SmolVLA on this node's private dataset.

Only trainable parameters arrive and leave; the dataset, its normalization statistics
and every frozen weight stay on the node.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from zk0.evaluate import evaluate_policy
from zk0.node import node_session
from zk0.train import train_local

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    session = node_session(context)
    session.load_global(msg.content["arrays"])
    config = msg.content["config"]
    lr = float(config["lr"])
    result = train_local(
        session.policy,
        session.preprocessor,
        session.train_batches(seed=int(config["server-round"])),
        steps=session.config.local_steps,
        lr=lr,
        proximal_mu=float(config["proximal-mu"]),
        desc=f"round {config['server-round']} {session.data.uri}",
    )
    metrics = MetricRecord(
        {
            "num-examples": result.samples,
            "train/loss": result.loss,
            "train/proximal-term": result.proximal_term,
            "train/lr": lr,
            "train/steps": result.steps,
            "train/seconds": result.seconds,
            "train/samples-per-second": result.samples_per_second,
            "startup-seconds": session.startup_seconds,
        }
    )
    content = RecordDict(
        {"arrays": ArrayRecord(session.trainable_arrays()), "metrics": metrics, "node": session.identity()}
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    session = node_session(context)
    session.load_global(msg.content["arrays"])
    result = evaluate_policy(session.policy, session.preprocessor, session.postprocessor, session.heldout_batches())
    metrics = MetricRecord(
        {
            "num-examples": result.samples,
            "eval/loss": result.loss,
            "eval/action_mse": result.action_mse,
            "startup-seconds": session.startup_seconds,
        }
    )
    return Message(content=RecordDict({"metrics": metrics, "node": session.identity()}), reply_to=msg)

