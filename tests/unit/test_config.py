"""Run-config parsing: pyproject's defaults parse, and every bad value stops with one line naming its key."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from zk0.config import ConfigError, RunConfig
from zk0.data.uri import DatasetURI

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@pytest.fixture(scope="module")
def defaults() -> dict:
    """The `[tool.flwr.app.config]` table exactly as Flower hands it to the apps."""
    with PYPROJECT.open("rb") as handle:
        return tomllib.load(handle)["tool"]["flwr"]["app"]["config"]


def parse_error(defaults: dict, **overrides) -> str:
    """Parse the defaults with `overrides` (underscores become dashes) and return the ConfigError text."""
    run_config = dict(defaults) | {key.replace("_", "-"): value for key, value in overrides.items()}
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_run_config(run_config)
    return str(caught.value)


def test_pyproject_defaults_parse(defaults):
    """The shipped defaults form a valid config: SmolVLA base, 12 hub datasets, a hub eval set."""
    config = RunConfig.from_run_config(defaults)
    assert config.model == "lerobot/smolvla_base"
    assert len(config.datasets) == 12
    assert all(uri.scheme == "hf" for uri in config.datasets)
    assert config.eval_dataset == DatasetURI("hf", "Hupy440/Two_Cubes_and_Two_Buckets_v2")
    assert config.lr_schedule == "cosine"
    assert isinstance(config.lr, float) and isinstance(config.num_rounds, int)


def test_every_field_has_a_default(defaults):
    """Each RunConfig field has a pyproject key and vice versa, so `flwr run` works with no overrides."""
    fields = {name.replace("_", "-") for name in RunConfig.__dataclass_fields__}
    assert fields == set(defaults)


def test_robust_aggregation_keys_accept_their_ranges(defaults):
    """Every aggregation name parses; a norm ratio of 0 turns the norm rule off, 1 is the strictest."""
    for name in ("fedprox", "fedtrimmedavg", "fedmedian", "krum", "multikrum"):
        assert RunConfig.from_run_config(defaults | {"aggregation": name}).aggregation == name
    assert RunConfig.from_run_config(defaults | {"max-update-norm-ratio": 0}).max_update_norm_ratio == 0.0
    assert RunConfig.from_run_config(defaults | {"max-update-norm-ratio": 1}).max_update_norm_ratio == 1.0
    config = RunConfig.from_run_config(defaults | {"trimmed-avg-beta": 0.0, "krum-num-malicious": 0})
    assert (config.trimmed_avg_beta, config.krum_num_malicious) == (0.0, 0)


def test_lora_keys_are_checked_and_give_the_adapters_spec(defaults):
    """`trainable`, `lora-*`: a bad value stops in one line; lora mode carries the run's seed."""
    from zk0.policy.lora import LoraSpec

    assert parse_error(defaults, trainable="adapters") == "run-config key 'trainable' must be one of expert, lora; got 'adapters'"
    assert parse_error(defaults, lora_rank=0) == "run-config key 'lora-rank' must be >= 1, got 0"
    assert parse_error(defaults, lora_alpha=0) == "run-config key 'lora-alpha' must be > 0, got 0.0"
    assert parse_error(defaults, lora_aggregation="fedex") == \
        "run-config key 'lora-aggregation' must be one of fedit, ffa; got 'fedex'"
    assert parse_error(defaults, lora_targets="all") == "run-config key 'lora-targets' must be one of lerobot, expert; got 'all'"
    assert parse_error(defaults, aggregation="fedavgg").endswith("got 'fedavgg'; did you mean 'fedavgm'?")
    assert parse_error(defaults, device="gpu") == "run-config key 'device' must be one of auto, cpu, cuda, mps; got 'gpu'"
    assert RunConfig.from_run_config(defaults).lora is None
    config = RunConfig.from_run_config(defaults | {"trainable": "lora", "seed": 3})
    assert config.lora == LoraSpec(rank=64, alpha=64.0, aggregation="ffa", seed=3, targets="lerobot")


def test_integer_is_accepted_where_a_number_is_expected(defaults):
    """TOML `lr = 1` is an int; a float field takes it as 1.0."""
    config = RunConfig.from_run_config(defaults | {"lr": 1})
    assert config.lr == 1.0 and isinstance(config.lr, float)


def test_dataset_list_tolerates_spaces_and_mixed_schemes(defaults):
    """`datasets` is a comma list of URIs; blanks around items and empty items are ignored."""
    config = RunConfig.from_run_config(defaults | {"datasets": " hf:a/b , c/d,, local:/data/e "})
    assert config.datasets == (DatasetURI("hf", "a/b"), DatasetURI("hf", "c/d"), DatasetURI("local", "/data/e"))


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"num_rounds": "3"}, "num-rounds"),
        ({"num_rounds": 2.5}, "num-rounds"),
        ({"batch_size": True}, "batch-size"),
        ({"lr": "fast"}, "lr"),
        ({"wandb": "yes"}, "wandb"),
        ({"model": 7}, "model"),
        ({"eval_dataset": "local:relative/path"}, "eval-dataset"),
        ({"datasets": "a/b,not a uri"}, "datasets"),
        ({"datasets": " , "}, "datasets"),
        ({"num_rounds": 0}, "num-rounds"),
        ({"proximal_mu": -0.1}, "proximal-mu"),
        ({"lr": 0}, "lr"),
        ({"fraction_train": 1.5}, "fraction-train"),
        ({"fraction_train": 0.0}, "fraction-train"),
        ({"lr_schedule": "linear"}, "lr-schedule"),
        ({"device": "tpu"}, "device"),
        ({"model": "  "}, "model"),
        ({"model": "smolvla base"}, "model"),
        ({"heldout_episodes": 0}, "heldout-episodes"),
        ({"output_dir": ""}, "output-dir"),
        ({"aggregation": "fedsgd"}, "aggregation"),
        ({"max_update_norm_ratio": 0.5}, "max-update-norm-ratio"),
        ({"max_update_norm_ratio": -1.0}, "max-update-norm-ratio"),
        ({"trimmed_avg_beta": 0.5}, "trimmed-avg-beta"),
        ({"trimmed_avg_beta": -0.1}, "trimmed-avg-beta"),
        ({"krum_num_malicious": -1}, "krum-num-malicious"),
        ({"multikrum_keep": 0}, "multikrum-keep"),
        ({"aggregation": "fedadam"}, "server-lr"),  # with the default server-lr 1.0: a wrecked model
        ({"aggregation": "fedadagrad", "server_lr": 0.5}, "server-lr"),
        ({"train_quorum": 0.0}, "train-quorum"),
        ({"train_quorum": 1.5}, "train-quorum"),
    ],
)
def test_bad_value_names_its_key_on_one_line(defaults, overrides, key):
    """A mistyped, out-of-range or unparsable value raises a one-line ConfigError quoting the key."""
    message = parse_error(defaults, **overrides)
    assert f"'{key}'" in message
    assert "\n" not in message


def test_unknown_key_is_named(defaults):
    """A typo in a key is reported, not silently ignored."""
    message = parse_error(defaults, num_round=3)
    assert "'num-round'" in message and "\n" not in message


def test_missing_key_is_named(defaults):
    """A run config lacking a key says which one and where to add it."""
    run_config = dict(defaults)
    del run_config["batch-size"]
    with pytest.raises(ConfigError, match="'batch-size' is missing"):
        RunConfig.from_run_config(run_config)


def test_config_is_frozen(defaults):
    """The parsed config cannot be changed by accident."""
    config = RunConfig.from_run_config(defaults)
    with pytest.raises(AttributeError):
        config.lr = 1.0


def test_evaluation_and_checkpoint_rounds(defaults):
    """Evaluate at round 0, every eval-every rounds and at the end; checkpoint likewise, never at 0."""
    config = RunConfig.from_run_config({**defaults, "num-rounds": 7, "eval-every": 3, "checkpoint-every": 5})
    assert [r for r in range(8) if config.evaluates_after(r)] == [0, 3, 6, 7]
    assert [r for r in range(8) if config.checkpoints_after(r)] == [5, 7]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{oops", "run-config key 'rename-maps' is not JSON"),
        ('["x"]', "run-config key 'rename-maps' must be a JSON object of dataset URI -> rename map"),
        ('{"local:relative": {}}', "run-config key 'rename-maps': 'local:relative' is not a valid dataset URI"),
        ('{"owner/not-listed": {"observation.images.top": "observation.images.front"}}',
         "names hf:owner/not-listed, which run-config 'datasets' does not list"),
        ('{"shaunkirby/record-test": {"action": "observation.images.front"}}',
         "run-config 'rename-maps' for hf:shaunkirby/record-test maps 'action' -> 'observation.images.front'"),
    ],
)
def test_bad_rename_maps_are_one_line(defaults, value, message):
    text = parse_error(defaults, rename_maps=value)
    assert message in text and "\n" not in text


def test_rename_maps_give_each_simulated_dataset_its_map(defaults):
    """An entry per dataset URI, matched however 'datasets' spells it (hf: prefix or not)."""
    mapping = {"observation.images.top": "observation.images.front"}
    config = RunConfig.from_run_config(defaults | {"rename-maps": json.dumps({"hf:shaunkirby/record-test": mapping})})
    assert json.loads(config.rename_map_json(config.datasets[0])) == mapping
    assert config.rename_map_json(config.datasets[1]) == ""


def test_a_node_parses_its_run_config_once_per_run(defaults):
    """Every message of a run carries the same run config: the node checks it on the first and
    hands the same parsed object to the rest; another run's values are parsed afresh, and a bad
    value is refused on every message, never remembered as good."""
    from zk0.node.session import run_config

    first = run_config(defaults)
    assert run_config(dict(defaults)) is first
    other = run_config(defaults | {"local-steps": 3})
    assert other is not first and other.local_steps == 3
    for _ in range(2):
        with pytest.raises(ConfigError, match="local-steps"):
            run_config(defaults | {"local-steps": 0})
