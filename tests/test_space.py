"""Sweep search spaces: read, typed, and checked against the base config before any trial could run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import MLP, ROOT
from mnist_pipeline.config.space import (
    Choice,
    FloatRange,
    IntRange,
    check_space,
    grid,
    load_space,
    override,
)
from mnist_pipeline.errors import ConfigError


def space_file(tmp_path, data) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_each_entry_becomes_its_distribution(tmp_path):
    path = space_file(tmp_path, """
sampler: random
trials: 7
objective: val_loss
params:
  training.learning_rate: {low: 1e-4, high: 1e-2, log: true}   # PyYAML reads 1e-4 as a string
  model.params.units: {choices: [64, 128]}
  training.epochs: {low: 1, high: 3}
  model.params.dropout_rate: {low: 0, high: 0.5, step: 0.25}
""")
    space = load_space(path)
    assert (space.sampler, space.trials, space.direction) == ("random", 7, "minimize")
    assert space.params["training.learning_rate"] == FloatRange(low=1e-4, high=1e-2, log=True)
    assert space.params["model.params.units"] == Choice(choices=(64, 128))
    assert load_space(space_file(tmp_path, "params:\n  training.learning_rate: {choices: [1e-3, 3e-3]}\n")).params[
        "training.learning_rate"] == Choice(choices=(1e-3, 3e-3))  # numbers, though PyYAML read strings
    assert space.params["training.epochs"] == IntRange(low=1, high=3)
    assert space.params["model.params.dropout_rate"] == FloatRange(low=0.0, high=0.5, step=0.25)
    check_space(space, path, MLP)  # every end and choice passes as --set on the MLP config


def test_a_grid_lists_every_combination_and_checks_each(tmp_path):
    path = space_file(tmp_path, {"sampler": "grid", "params": {
        "model.params.units": {"choices": [32, 64]}, "training.epochs": {"low": 1, "high": 5, "step": 2},
        "model.params.dropout_rate": {"low": 0.0, "high": 0.3, "step": 0.1}}})
    space = load_space(path)
    assert grid(space) == {"model.params.units": [32, 64], "training.epochs": [1, 3, 5],
                           "model.params.dropout_rate": [0.0, 0.1, 0.2, 0.3]}
    check_space(space, path, MLP)
    # One combination that the config refuses (warm-up must end before the last epoch) fails the whole grid.
    bad = space_file(tmp_path, {"sampler": "grid", "params": {"training.epochs": {"choices": [2, 5]},
                                                              "training.schedule.warmup_epochs": {"choices": [0, 3]}}})
    with pytest.raises(ConfigError, match=r"training.epochs=2, training.schedule.warmup_epochs=3.* are refused"):
        check_space(load_space(bad), bad, MLP)


def test_values_pass_through_set_as_yaml():
    assert override("model.params.filters", [16, 32]) == "model.params.filters=[16, 32]"
    assert override("model.params.activation", "relu") == 'model.params.activation="relu"'
    assert override("data.augmentation.horizontal_flip", True) == "data.augmentation.horizontal_flip=true"


@pytest.mark.parametrize("data, words", [
    ({"params": {"model.params.unit": {"choices": [64]}}}, ["'model.params.unit=64' are refused",
                                                           "unknown key 'model.params.unit'", "did you mean 'units'"]),
    ({"params": {"training.epochs": {"low": 0, "high": 3}}}, ["'training.epochs=0' are refused",
                                                             "must be at least 1"]),
    ({"params": {"model.params.filters": {"choices": [[16, 32]]}}}, ["unknown key 'model.params.filters'"]),  # MLP
    ({"params": {"training.learning_rate": {"low": 0, "high": 1, "log": True}}},
     ["params.training.learning_rate: a log scale needs low > 0"]),
    ({"params": {"training.epochs": {"low": 3, "high": 3}}}, ["low (3) must be less than high (3)"]),
    ({"params": {"training.epochs": {"low": 1, "high": 9, "step": 2, "log": True}}}, ["step and log"]),
    ({"params": {"training.epochs": 5}}, ["params.training.epochs: got 5, not a mapping", "{choices: [...]}"]),
    ({"params": {"training.epochs": {"low": 1}}}, ["params.training.epochs.high: field required"]),
    ({"params": {"training.epochs": {"choices": []}}}, ["params.training.epochs.choices", "at least 1"]),
    ({"params": {}}, ["params: must have at least 1 item"]),
    ({"trials": 0, "params": {"training.epochs": {"choices": [1]}}}, ["trials = 0"]),
    ({"sampler": "bayes", "params": {"training.epochs": {"choices": [1]}}}, ["sampler = 'bayes'"]),
    ({"param": {"training.epochs": {"choices": [1]}}}, ["unknown key 'param'"]),
    ({"sampler": "grid", "params": {"training.learning_rate": {"low": 0.1, "high": 1.0}}},
     ["a grid needs a choices list or a range with a step"]),
    ({"sampler": "grid", "params": {f"model.params.{k}": {"low": 0.0, "high": 0.99, "step": 0.01}
                                    for k in ("dropout_rate", "l1", "l2")}}, ["1,000,000 combinations"]),
    ([1, 2], ["must be a mapping"]),
    ("params: [", ["invalid YAML"]),
])
def test_a_bad_space_is_one_line_naming_the_entry(data, words, tmp_path):
    path = space_file(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        check_space(load_space(path), path, MLP)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for word in words:
        assert word in message, message


def test_keys_the_sweep_sets_itself_cannot_be_swept(tmp_path):
    path = space_file(tmp_path, {"params": {"training.seed": {"choices": [1, 2]}}})
    with pytest.raises(ConfigError, match="params.training.seed is set by the sweep itself"):
        check_space(load_space(path), path, MLP, reserved=("training.seed",))


@pytest.mark.parametrize("space", sorted((ROOT / "configs/sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_space_fits_its_config(space):
    check_space(load_space(space), space, ROOT / "configs" / f"{space.stem}.yaml", reserved=("training.seed",))
