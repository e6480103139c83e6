"""A sweep's search space: which config keys to vary (the dotted keys of `--set`) over which values, read from
YAML and checked against the run config before any trial runs. Imports neither Optuna nor TensorFlow.

    sampler: tpe            # tpe (Optuna's default), random, or grid (every combination, in order)
    trials: 30              # how many trials the study runs in all, over every worker
    objective: val_accuracy # the best epoch's val_accuracy (maximized) or val_loss (minimized); never test
    params:
      training.learning_rate: {low: 1e-4, high: 1e-2, log: true}   # float range, log scale
      model.params.units: {choices: [64, 128, 256]}                # a list of values (any YAML value)
      training.epochs: {low: 2, high: 8, step: 2}                  # int range (both ends integers)
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, StrictBool, StrictInt, Tag, ValidationError, field_validator, model_validator

from mnist_pipeline.config import shipped
from mnist_pipeline.config.fields import Number, Section
from mnist_pipeline.config.loading import load_config
from mnist_pipeline.config.problems import MAX_PROBLEMS, ConfigProblems, describe_errors
from mnist_pipeline.config.yaml_reading import read_yaml
from mnist_pipeline.errors import ConfigError, quote

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
MAX_GRID = 10_000  # combinations a grid may have: more would never finish on this kind of machine
# Keys a sweep must not vary, with why: trials would write to one another's folders or elsewhere, or their
# objectives would be measured on different data and not compare. (prefix, reason)
FIXED_KEYS = (("output.", "the sweep places every trial's run folder itself"),
              ("data.data_dir", "every trial must train on the same data"),
              ("data.dataset", "every trial must train on the same data"),
              ("data.validation_split", "the objective must be measured on the same validation split"),
              ("training.distribute.", "each trial trains in its own process; --workers runs trials in parallel"))


class Choice(Section):
    choices: tuple[Any, ...] = Field(min_length=1, max_length=1000, description="the values to try")

    @field_validator("choices")
    @classmethod
    def _numbers_as_numbers(cls, choices: tuple[Any, ...]) -> tuple[Any, ...]:
        # PyYAML reads 1e-3 (no dot) as a string; a trial would still pass it, but Optuna would treat the
        # learning rates as labels (and plot them so). No config value is a string that reads as a number.
        return tuple(float(v) if isinstance(v, str) and _NUMBER.fullmatch(v.strip()) else v for v in choices)


class IntRange(Section):
    low: StrictInt
    high: StrictInt
    step: Annotated[StrictInt, Field(ge=1)] = 1
    log: StrictBool = False

    @model_validator(mode="after")
    def _ordered(self):
        _check_range(self.low, self.high, self.log, self.step != 1)
        return self


class FloatRange(Section):
    low: Number
    high: Number
    step: Annotated[Number, Field(gt=0)] | None = None
    log: StrictBool = False

    @model_validator(mode="after")
    def _ordered(self):
        _check_range(self.low, self.high, self.log, self.step is not None)
        return self


def _check_range(low, high, log: bool, stepped: bool) -> None:
    if low >= high:
        raise ValueError(f"low ({low}) must be less than high ({high}); a single value is a choices list")
    if log and low <= 0:
        raise ValueError(f"a log scale needs low > 0 (got {low})")
    if log and stepped:
        raise ValueError("step and log do not go together (Optuna samples one or the other)")


def _kind(value: Any) -> str:
    """Which distribution a params entry is: choices, or a range of integers (both ends) or of floats."""
    if not isinstance(value, dict):
        return "float"  # whatever it is, FloatRange's error names it
    if "choices" in value:
        return "choice"
    ends = (value.get("low"), value.get("high"), value.get("step", 1))
    return "int" if all(isinstance(v, int) and not isinstance(v, bool) for v in ends) else "float"


Distribution = Annotated[Annotated[Choice, Tag("choice")] | Annotated[IntRange, Tag("int")]
                         | Annotated[FloatRange, Tag("float")], Discriminator(_kind)]


class SweepSpace(Section):
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="how trials pick their values")
    trials: Annotated[StrictInt, Field(ge=1, le=10_000)] = Field(20, description="trials in the study, in all")
    objective: Literal["val_accuracy", "val_loss"] = Field(
        "val_accuracy", description="the best epoch's validation accuracy (maximized) or loss (minimized)")
    params: dict[str, Distribution] = Field(min_length=1, max_length=64, description="config key -> values")

    @property
    def direction(self) -> str:
        return "maximize" if self.objective == "val_accuracy" else "minimize"


def load_space(path: str | Path) -> SweepSpace:
    """Read and validate a space file (its own schema only: `check_space` checks it against a config)."""
    path = shipped.find(path, space=True)
    raw = read_yaml(path, what="space file", example="configs/sweeps/mlp.yaml")
    for key in raw:  # a misspelt section first: "params is required" would hide the cause
        if key not in SweepSpace.model_fields:
            hint = difflib.get_close_matches(str(key), list(SweepSpace.model_fields), n=1)
            raise ConfigError(f"{path}: unknown key {quote(key)}; {f'did you mean {hint[0]!r}? ' if hint else ''}"
                              f"allowed: {', '.join(SweepSpace.model_fields)}")
    try:
        return SweepSpace.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["loc"][:1] != ("params",) or len(err["loc"]) < 2:
            problems = describe_errors(exc, str(path), SweepSpace, "", set())
            raise ConfigProblems(problems[:MAX_PROBLEMS], len(problems)) from None
        key, where = err["loc"][1], err["loc"][3:]  # [2] is the distribution's tag
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "model_type":
            message = f"got {quote(err['input'])}, not a mapping"
        if err["type"] in ("model_type", "extra_forbidden", "missing") or not where and err["type"] != "value_error":
            message = (f"{message}; write {{choices: [...]}}, or {{low: L, high: H}} with optional step and log "
                       f"(integers at both ends make an int range)")
        field = ".".join(str(p) for p in where)
        raise ConfigError(f"{path}: params.{key}{'.' + field if field else ''}: {message[:1].lower()}"
                          f"{message[1:]}") from None


def grid_size(key: str, distribution) -> int:
    """How many values a grid tries for one key, from the range's arithmetic alone: nothing is built, so a range
    of 10^12 integers (or a float step of 1e-9) costs no memory to refuse."""
    if isinstance(distribution, Choice):
        return len(distribution.choices)
    if isinstance(distribution, IntRange) and not distribution.log:
        return (distribution.high - distribution.low) // distribution.step + 1
    if isinstance(distribution, FloatRange) and distribution.step is not None:
        steps = (distribution.high - distribution.low) / distribution.step
        return math.floor(steps + 1e-9) + 1 if math.isfinite(steps) and steps < 2**62 else 2**62
    raise ConfigError(f"params.{key}: a grid needs a choices list or a range with a step; give one, or use "
                      f"sampler tpe or random")


def grid_values(key: str, distribution) -> list[Any]:
    """Every value a grid tries for one key (call `grid`, which checks the size first)."""
    count = grid_size(key, distribution)
    if isinstance(distribution, Choice):
        return list(distribution.choices)
    if isinstance(distribution, IntRange):
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    return [round(distribution.low + i * distribution.step, 12) for i in range(count)]


def grid(space: SweepSpace) -> dict[str, list[Any]]:
    """Every key's grid values, once the number of combinations is known to be at most MAX_GRID."""
    size = math.prod(grid_size(key, d) for key, d in space.params.items())  # at most 64 factors below 2^62
    if size > MAX_GRID:
        count = f"{size:,}" if size < 10**18 else f"about 10^{len(str(size)) - 1}"
        raise ConfigError(f"the grid has {count} combinations, more than {MAX_GRID:,}; narrow it, or use sampler "
                          f"tpe or random")
    return {key: grid_values(key, d) for key, d in space.params.items()}


def override(key: str, value: Any) -> str:
    """`key=value` as `--set` reads it (a YAML flow value: JSON is one)."""
    return f"{key}={json.dumps(value)}"


def check_space(space: SweepSpace, space_path: str | Path, base: str | Path | None, overrides=(),
                reserved: tuple[str, ...] = (), check=None) -> None:
    """Every key names a config value, and every value a trial can be given passes as `--set` on the base
    config: each choice, both ends of each range, and with a grid every combination. One line otherwise.
    `reserved` keys are set by the sweep itself (e.g. training.seed with --seeds) and may not be swept; `check`,
    given each trial config, raises ConfigError for what `mnist train` refuses beyond the schema (the machine)."""
    for key in space.params:
        for prefix, reason in FIXED_KEYS:
            if key == prefix or (prefix.endswith(".") and (key.startswith(prefix) or key == prefix[:-1])):
                raise ConfigError(f"{space_path}: params.{key} cannot be swept ({reason}); drop it from the space "
                                  f"(set it once for every trial with --set)")
        if key in reserved:
            raise ConfigError(f"{space_path}: params.{key} is set by the sweep itself (--seeds gives each trial its "
                              f"seeds); drop it from the space, or drop --seeds")
    if space.sampler == "grid":
        try:
            values = grid(space)
        except ConfigError as exc:
            raise ConfigError(f"{space_path}: {exc}") from None
        combinations = [dict(zip(values, combo, strict=True)) for combo in itertools.product(*values.values())]
    else:
        combinations = [{key: value} for key, d in space.params.items()
                        for value in (d.choices if isinstance(d, Choice) else (d.low, d.high))]
    for combination in combinations:
        trial = [override(key, value) for key, value in combination.items()]
        try:
            cfg = load_config(base, [*overrides, *trial])
            if check:
                check(cfg)
        except ConfigError as exc:
            reason = str(exc).replace(" (from the command line)", "")
            raise ConfigError(f"{space_path}: the trial values {quote(', '.join(trial), 200)} are refused: "
                              f"{reason}") from None
