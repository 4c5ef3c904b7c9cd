"""Joining vs alone: does a client get a better policy from the federation than from its own data?

For each client of a finished run, its local-only twin: `lerobot-train` on that client's
training episodes alone (its held-out ones left out, as in the federation), from the same
start model, for as many steps as the client itself took in the run (the sum of its
`train/steps` in metrics.jsonl, each round's at most local-steps), with the run's batch size,
seed and lr schedule (round length: the client's steps per round). Then the federated model (the final round's checkpoint) and
every twin are scored, each with its own saved processors, on every client's held-out
episodes and on the server's eval dataset. Under `<run>/baseline/alone/client_<i>/`: data/
(when episodes are held out), start_model/, train/, lerobot-train.log.

"all clients' held-out" is the MSE over the union of the clients' held-out samples scored:
each client's MSE weighted by its number of samples.
"""

from __future__ import annotations

from pathlib import Path

from zk0.tools.baseline import (
    BaselineError,
    FederatedRun,
    lerobot_train_command,
    reported_steps,
    run_lerobot_train,
    score,
    training_part,
    trusted_claim,
    write_start_model,
)
from zk0.data.dataset import DatasetError, open_node_data, open_split
from zk0.run.directory import LEROBOT_CHECKPOINTS, PRETRAINED
from zk0.data.uri import DatasetURI

UNION = "all clients' held-out"
EVAL = "eval dataset"


def client_steps(run: FederatedRun) -> dict[DatasetURI, int]:
    """Optimizer steps each dataset's client took over the run: per round the most any client
    claiming it reported (reported_steps: at most local-steps), summed over the rounds."""
    steps = dict.fromkeys(run.datasets, 0)
    for row in run.rows.values():
        this_round: dict[DatasetURI, int] = {}
        for key, client in row.get("clients", {}).items():
            uri = trusted_claim(key, run.config)
            if uri in steps:
                this_round[uri] = max(this_round.get(uri, 0), reported_steps(client, run.config.local_steps))
        for uri, count in this_round.items():
            steps[uri] += count
    # Runs whose metrics do not name datasets (or a client that reported no step): local-steps each round.
    return {uri: count or run.config.num_rounds * run.config.local_steps for uri, count in steps.items()}


def train_twin(run: FederatedRun, index: int, uri: DatasetURI, steps: int, out: Path, device: str) -> Path:
    """Client `index`'s local-only twin; returns its final pretrained_model directory."""
    from lerobot.utils.train_utils import get_step_checkpoint_dir

    try:
        dataset = training_part(run, uri, out / "data", f"zk0-alone/client-{index}")
    except DatasetError as err:
        raise BaselineError(str(err)) from None
    except Exception as err:  # LeRobot raises many types
        raise BaselineError(f"cannot take client {index}'s training episodes ({type(err).__name__}: {err})") from None
    start_model = write_start_model(run, dataset.meta, out / "start_model")
    per_round = max(1, steps // run.config.num_rounds)
    command = lerobot_train_command(run.config, start_model, dataset.meta, out / "train", device,
                                    steps_per_round=per_round, total_steps=steps, save_freq=steps)
    run_lerobot_train(command, out / "lerobot-train.log", device, out / "train" / LEROBOT_CHECKPOINTS, {steps})
    return get_step_checkpoint_dir(out / "train", steps, steps) / PRETRAINED


def scoring_sets(run: FederatedRun, policy_config) -> dict[str, object]:
    """Every client's held-out episodes and the server's eval dataset, as LeRobot datasets."""
    sets = {}
    for index, uri in enumerate(run.datasets):
        data = open_node_data(uri, run.config.action_dim, run.config.heldout_episodes, run.config.state_dim)
        if data.heldout_episodes:
            sets[f"client {index} held-out"] = open_split(data, data.heldout_episodes, policy_config)
    eval_data = open_node_data(run.config.eval_dataset, run.config.action_dim, 0, run.config.state_dim)
    sets[EVAL] = open_split(eval_data, eval_data.train_episodes, policy_config)
    return sets


def scores(model: Path, sets: dict, run: FederatedRun, device: str) -> dict[str, float]:
    """Held-out action MSE of `model` on each set, plus the union of the clients' held-out sets."""
    results = {name: score(model, model, split, run.config, device, run.eval_batches) for name, split in sets.items()}
    held_out = [result for name, result in results.items() if name != EVAL]
    mse = {name: result.action_mse for name, result in results.items()}
    if held_out:
        mse[UNION] = sum(r.action_mse * r.samples for r in held_out) / sum(r.samples for r in held_out)
    return mse


def final_checkpoint(run: FederatedRun) -> Path:
    """The federated model every twin is compared with, or a one-line BaselineError."""
    federated = run.checkpoint(run.config.num_rounds)
    if federated is None:
        raise BaselineError(f"{run.paths.path}: no checkpoint of the final round {run.config.num_rounds}; "
                            f"comparing with each client alone needs the federated model")
    return federated


def personal_model(run: FederatedRun, uri: DatasetURI) -> Path | None:
    """The personal model (run-config personalize) of the client that trained on `uri`, where a
    simulation left it in the run directory (zk0.node.personal); deployed nodes keep theirs."""
    from zk0.node.personal import PERSONAL, simulation_dir

    if uri not in run.config.datasets:
        return None
    path = simulation_dir(run.paths.path, run.config.datasets.index(uri)) / PERSONAL / PRETRAINED
    return path if (path / "config.json").is_file() else None


def reported_personal(run: FederatedRun, uri: DatasetURI) -> float | None:
    """The personal model's score on its own held-out episodes as its node reported it in the final
    evaluation (metrics.jsonl), for nodes whose model the baseline cannot reach."""
    row = run.rows.get(run.config.num_rounds, {})
    for key, metrics in row.get("client_eval", {}).items():
        if trusted_claim(key, run.config) == uri and "personal/eval/action_mse" in metrics:
            return float(metrics["personal/eval/action_mse"])
    return None


def run_alone(run: FederatedRun, out: Path, device: str, log=print) -> dict:
    """Train every client's twin and score it beside the federated model and, where the run made
    them (run-config personalize), the client's personal model; comparison.json's `alone`."""
    from lerobot.configs.policies import PreTrainedConfig

    federated = final_checkpoint(run)
    sets = scoring_sets(run, PreTrainedConfig.from_pretrained(federated))
    fl = scores(federated, sets, run, device)
    clients = []
    for index, (uri, steps) in enumerate(client_steps(run).items()):
        log(f"client {index} alone: lerobot-train, {steps} steps on its training episodes ({uri})")
        twin = train_twin(run, index, uri, steps, out / f"client_{index}", device)
        mine = personal_model(run, uri)
        clients.append({"client": index, "dataset": str(uri), "steps": steps, "alone": scores(twin, sets, run, device),
                        "personalized": scores(mine, sets, run, device) if mine else None,
                        "personalized_reported": reported_personal(run, uri)})
    return {"sets": [*sets, UNION] if len(sets) > 1 else list(sets), "federated": fl, "clients": clients,
            "personalize": run.config.personalize, "personal_steps": run.config.personal_steps}


def alone_table(alone: dict) -> str:
    """'Per owner: alone, global, personalized': per client, on its own held-out episodes, on all
    clients' and on the eval dataset; the gaps are against the client's model alone (negative
    when the federation's model, or the personal one made from it, is better)."""
    personalized = any(client.get("personalized") or client.get("personalized_reported") is not None
                       for client in alone["clients"])

    def value(client: dict, which: str, name: str) -> float | None:
        if which == "global":
            return alone["federated"].get(name)
        if which == "personalized":
            mine = (client.get("personalized") or {}).get(name)
            if mine is None and name == f"client {client['client']} held-out":
                mine = client.get("personalized_reported")  # the node's own report (its model stayed there)
            return mine
        return client["alone"].get(name)

    def gap(mine: float | None, base: float | None) -> str:
        return "-" if mine is None or base is None else f"{100.0 * (mine - base) / base:+.1f}%"

    models = ("alone", "global", "personalized") if personalized else ("alone", "global")
    columns = ("its own held-out", UNION, EVAL)
    headings, rule = [], ""
    for column in columns:
        headings += [f"{column}: {model}" for model in models] + [f"{column}: {model} vs alone" for model in models[1:]]
        rule += "---:|" * (2 * len(models) - 1)
    lines = [
        "## Per owner: alone, global" + (", personalized" if personalized else ""),
        "",
        "Each client's local-only twin (alone: `lerobot-train` on its own training episodes, from the same start "
        "model, for the steps it took in the federation), the federation's final model (global)"
        + (f" and the client's personal model (personalized, run-config personalize = '{alone.get('personalize')}': "
           + (f"the global model fine-tuned on its own training episodes for {alone.get('personal_steps')} steps"
              if alone.get("personalize") == "finetune" else
              f"the global model with its personal LoRA adapter merged in, trained on its own training episodes "
              f"over the rounds, {alone.get('personal_steps')} steps in all")
           + ")" if personalized else "")
        + ". Held-out action MSE over every frame (lower is better); gaps against alone, negative when it pays.",
        "",
        "| client | dataset | steps | " + " | ".join(headings) + " |",
        "|---:|---|---:|" + rule,
    ]
    for client in alone["clients"]:
        cells = [str(client["client"]), f"`{client['dataset']}`", str(client["steps"])]
        for column in columns:
            name = f"client {client['client']} held-out" if column == "its own held-out" else column
            values = {model: value(client, model, name) for model in models}
            cells += [fmt(values[model], ".4f") for model in models]
            cells += [gap(values[model], values["alone"]) for model in models[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
