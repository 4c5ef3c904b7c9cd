"""What of the strategy a run's saved state keeps after every round (zk0.run.state), so that a
resumed run continues exactly as the uninterrupted one would have:

- the run key, the rounds earlier resumes continued after and the attempts that made retried
  rounds: the nodes find their memories by the key, and tell from the rest which of their
  trainings the server used (zk0.node.memory);
- the last broadcast (delta codecs): the next round's weights are a delta against it, not the
  global model rounded afresh;
- what Flower's server optimizer carries from round to round: FedAvgM's momentum and the
  weights it steps from, FedOpt's moments (FedAdam, FedYogi, FedAdagrad);
- participation counts, and the nodes refused for the run (by Flower node id: a restarted
  SuperLink gives new ids, and then nothing to match).

Arrays go in one named set; everything else is JSON.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAvgM
from flwr.serverapp.strategy.fedopt import FedOpt

from zk0.server.strategy import ZK0Strategy
from zk0.wire import transfer
from zk0.wire.codec import decode, encode

BROADCAST = "broadcast/"
MOMENTS = ("m_t", "v_t")  # FedOpt's


def saved(strategy: ZK0Strategy) -> tuple[dict, dict[str, np.ndarray]]:
    """The strategy's part of the run state: JSON values, named arrays."""
    values = {
        "run-key": strategy.run_key,
        "resumed-after": strategy.resumed_after,
        "retried": {str(server_round): attempt for server_round, attempt in strategy.retried.items()},
        "participation": strategy.roster.participation_table(),
        "refused": {str(node): reason for node, reason in strategy.roster.refused.items()},
        "broadcast-round": None,
    }
    arrays = {}
    broadcast = strategy.broadcast
    if broadcast is not None and strategy.config.update_codec not in transfer.FULL_CODECS:
        values["broadcast-round"] = broadcast.round
        arrays |= {BROADCAST + name: bits for name, bits in encode(broadcast.weights, "bf16").items()}  # exact
    if isinstance(strategy, FedAvgM) and strategy.current_arrays is not None:
        current = strategy.current_arrays
        arrays |= {f"fedavgm/current/{name}": array.numpy() for name, array in current.items()}
        if strategy.momentum_vector is not None:
            arrays |= {f"fedavgm/momentum/{name}": value
                       for name, value in zip(current.keys(), strategy.momentum_vector, strict=True)}
    if isinstance(strategy, FedOpt):
        for moment in MOMENTS:
            arrays |= {f"fedopt/{moment}/{name}": value for name, value in (getattr(strategy, moment) or {}).items()}
    return values, arrays


def restore(strategy: ZK0Strategy, values: dict, arrays: dict[str, np.ndarray], done: int, order: list[str]) -> None:
    """A resumed run's strategy, after round `done`. `order` is the global model's tensor order,
    which arrays regain (saved files keep them by name): FedAvgM pairs its weights, momentum and
    the average by position, and the robust aggregations concatenate tensors in that order."""
    if "run-key" in values:  # a state saved before zk0 kept these starts them afresh
        strategy.run_key = values["run-key"]
    strategy.resumed_after = [*values.get("resumed-after", []), done]
    strategy.retried = {int(server_round): attempt for server_round, attempt in values.get("retried", {}).items()}
    strategy.roster.earlier = values.get("participation", {})
    strategy.roster.refused = {int(node): reason for node, reason in values.get("refused", {}).items()}
    if values.get("broadcast-round") is not None:
        weights = decode({name[len(BROADCAST):]: value for name, value in arrays.items() if name.startswith(BROADCAST)})
        # Every node that took part holds it (or gets the next one whole): only the base of a delta.
        strategy.broadcast = transfer.Broadcast(values["broadcast-round"], {name: weights[name] for name in order},
                                                {}, None, None)
    if isinstance(strategy, FedAvgM) and f"fedavgm/current/{order[0]}" in arrays:
        strategy.current_arrays = ArrayRecord({name: Array(arrays[f"fedavgm/current/{name}"]) for name in order})
        if f"fedavgm/momentum/{order[0]}" in arrays:
            strategy.momentum_vector = [arrays[f"fedavgm/momentum/{name}"] for name in order]
    if isinstance(strategy, FedOpt):
        for moment in MOMENTS:
            if f"fedopt/{moment}/{order[0]}" in arrays:
                setattr(strategy, moment, {name: arrays[f"fedopt/{moment}/{name}"] for name in order})
