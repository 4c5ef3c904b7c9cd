"""The server's copy of the policy: it holds the frozen weights, receives the aggregated
trainable ones, evaluates them on the held-out dataset and is what checkpoints save."""

from __future__ import annotations

import numpy as np

from zk0.config import ConfigError, RunConfig
from zk0.data.dataset import fixed_batches, open_node_data, open_split
from zk0.policy.evaluate import EvalResult, evaluate_policy
from zk0.policy.model import get_trainable, load_policy, make_processors, resolve_device, set_trainable
from zk0.data.stats import with_stats
from zk0.sim.rollout import RolloutResult, check_fits, score


class GlobalModel:
    def __init__(self, config: RunConfig) -> None:
        # The server evaluates on whole eval datasets: nothing of them is trained on.
        self.data = open_node_data(config.eval_dataset, config.action_dim, 0, config.state_dim)
        self.policy = load_policy(config.model, self.data.meta, resolve_device(config.device), lora=config.lora)
        self.preprocessor, self.postprocessor = make_processors(self.policy, self.data.stats)
        self._eval_set = open_split(self.data, self.data.train_episodes, self.policy.config)
        self.config = config
        if config.eval_env:
            try:
                check_fits(self.policy.config, config.eval_env)
            except ValueError as err:
                raise ConfigError(f"run-config key 'eval-env': {err}") from None

    def use_federation_stats(self, federation: dict) -> None:
        """Evaluate, and ship checkpoints, in the federation's units (zk0.data.stats)."""
        self.preprocessor, self.postprocessor = make_processors(self.policy, with_stats(self.data.stats, federation))

    def weights(self) -> dict[str, np.ndarray]:
        """The trainable parameters in fp32 (a copy: the policy keeps training nothing here,
        but the caller may hold these across loads)."""
        return {name: value.copy() for name, value in get_trainable(self.policy).items()}

    def load(self, weights: dict[str, np.ndarray]) -> None:
        set_trainable(self.policy, weights)

    def evaluate(self) -> EvalResult:
        batches = fixed_batches(self._eval_set, self.config.batch_size, self.config.num_workers, self.config.eval_batches)
        return evaluate_policy(self.policy, self.preprocessor, self.postprocessor, batches)

    def roll_out(self) -> RolloutResult:
        """Closed-loop scores in eval-env: the same seeded episodes every round."""
        return score(self.policy, self.preprocessor, self.postprocessor, self.config.eval_env,
                     self.config.eval_episodes, seed=self.config.seed)

    @property
    def num_parameters(self) -> tuple[int, int]:
        params = list(self.policy.parameters())
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
