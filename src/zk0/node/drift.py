"""Drift correction (run-config `drift-correction = "scaffold"`): SCAFFOLD's control variates
(Karimireddy et al., 2020), kept in node memory and estimated from what the node already
receives, so that nothing extra travels and the server is unchanged.

SCAFFOLD corrects each local step by `c - c_i`: the federation's mean update direction minus
this node's own. With option II and every node training every round, the server's `c` is the
mean of the nodes' `c_i`, which is the plain average of their last raw updates: exactly the
last change of the global model under an averaging aggregation (fedprox, or fedavgm with
server-lr 1 and no momentum). A node therefore holds:
- `c_i`: its own last raw update (the trained weights minus the received ones, without the
  correction it applied), in node memory (zk0.node.memory, CONTROL);
- `c`: the last global update, the model it receives minus the one it received the round
  before (node memory's reference, which `scaffold` keeps for every codec).
Each of the round's K local steps then moves the weights by `(c - c_i) / K` after the
optimizer's step (step units: zk0's clients run AdamW, whose step is not lr x gradient, so
the variates are kept as displacements rather than gradients). A node that missed the last
round (no previous global model) or has no `c_i` yet trains uncorrected that round. With
partial participation, clipping or a server step other than the plain average, `c` is only
an estimate of the nodes' mean direction.
"""

from __future__ import annotations

import numpy as np


def correction(control: dict[str, np.ndarray] | None, reference: dict[str, np.ndarray] | None,
               reference_round: int | None, server_round: int,
               received: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The round's whole correction `c - c_i` (spread over the local steps by the training), or
    None when this node cannot tell one (no own variate yet, or not the last round's global model)."""
    if control is None or reference is None or reference_round != server_round - 1:
        return None
    if set(control) != set(received) or set(reference) != set(received):
        return None  # another model (e.g. the trainable set changed): start afresh
    return {name: (received[name] - reference[name]) - control[name] for name in received}


def own_update(trained: dict[str, np.ndarray], received: dict[str, np.ndarray],
               applied: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """This round's `c_i`: the trained weights minus the received ones, less the correction applied."""
    return {name: (trained[name] - received[name] - (applied[name] if applied else 0.0)).astype(np.float32)
            for name in received}
