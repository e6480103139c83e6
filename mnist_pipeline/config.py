"""Typed, frozen run configuration: schema defaults < YAML file < `--set a.b=v` < dedicated flags.

Owns validation and the one-line messages for bad configs. Imports neither TensorFlow nor click.
The model parameter schemas live here too (not in `models`) so that configs validate without TensorFlow;
each model class's constructor takes exactly the fields of its schema (tests/test_models.py checks that).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from mnist_pipeline.errors import ConfigError


def _number(value: Any) -> Any:
    # PyYAML reads `1e-3` (no dot) as a string; accept any numeric string, but not booleans.
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, got the string {value!r}") from None
    return value


Number = Annotated[float, BeforeValidator(_number)]
Fraction = Annotated[Number, Field(ge=0.0, lt=1.0)]
Penalty = Annotated[Number, Field(ge=0.0)]
Width = Annotated[StrictInt, Field(ge=1)]

Activation = Literal["relu", "elu", "gelu", "selu", "swish", "leaky_relu", "sigmoid", "tanh", "linear"]
Initializer = Literal[
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
    "random_normal", "random_uniform", "zeros",
]
# Run names become folder names: no separators, no leading dot, so they cannot leave the output dir.
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}


# ---- model parameters: the fields are exactly each model class's constructor keyword arguments ----


class _DenseKnobs(_Section):
    activation: Activation = Field("relu", description="hidden-layer activation")
    dropout_rate: Fraction = Field(0.0, description="dropout after each hidden layer (0 = off)")
    batch_norm: StrictBool = Field(False, description="batch normalization before each activation")
    l1: Penalty = Field(0.0, description="L1 weight penalty on hidden and output kernels")
    l2: Penalty = Field(0.0, description="L2 weight penalty on hidden and output kernels")
    kernel_initializer: Initializer = Field("glorot_uniform", description="initializer of every kernel")


class MLPParams(_DenseKnobs):
    """Flatten -> one hidden Dense -> 10 logits."""

    units: Width = Field(128, description="hidden units")


class DeepMLPParams(_DenseKnobs):
    """Flatten -> several hidden Dense layers -> 10 logits."""

    units: tuple[Width, ...] = Field((512, 256, 128), min_length=1, description="hidden units per layer")
    dropout_rate: Fraction = Field(0.2, description="dropout after each hidden layer (0 = off)")


class CNNParams(_DenseKnobs):
    """Conv blocks (conv x N, pool, dropout) -> Dense head -> 10 logits, with training-only augmentation."""

    filters: tuple[Width, ...] = Field((32, 64), min_length=1, max_length=4, description="filters per block")
    convs_per_block: Width = Field(2, le=4, description="conv layers before each 2x2 max-pool")
    kernel_size: Width = Field(3, le=7, description="square conv kernel size")
    dense_units: Width = Field(128, description="units of the Dense layer before the logits")
    dropout_rate: Fraction = Field(0.25, description="dropout after each conv block")
    dense_dropout_rate: Fraction = Field(0.5, description="dropout before the logits")
    rotation: Annotated[Number, Field(ge=0.0, le=0.5)] = Field(
        0.03, description="max random rotation, fraction of a full turn (0.03 = +-11 deg; 0 = off)"
    )
    translation: Annotated[Number, Field(ge=0.0, le=0.5)] = Field(
        0.1, description="max random shift, fraction of the image size (0 = off)"
    )
    zoom: Annotated[Number, Field(ge=0.0, le=0.5)] = Field(
        0.1, description="max random zoom in or out, fraction (0 = off)"
    )


MODEL_PARAMS: dict[str, type[_Section]] = {"mlp": MLPParams, "deep_mlp": DeepMLPParams, "cnn": CNNParams}


# ---- run configuration ----


class DataConfig(_Section):
    dataset: Literal["mnist", "fashion_mnist"] = Field("mnist", description="which dataset (sets class names)")
    data_dir: StrictStr | None = Field(
        None, description="folder with IDX or .npz files; else $MNIST_DATA_DIR; else Keras's download cache"
    )
    normalization: Literal["scale", "standardize"] = Field(
        "scale", description="scale: pixels to [0, 1]; standardize: mean 0, std 1 from the training split")
    validation_split: Number = Field(0.1, gt=0.0, lt=1.0, description="stratified fraction held out to validate")
    subset: Annotated[StrictInt, Field(ge=10)] | None = Field(
        None, description="train on this many stratified training examples (None = all)"
    )


class ModelConfig(_Section):
    name: StrictStr = Field("mlp", description="registry name: mlp, deep_mlp or cnn")
    params: dict[str, Any] = Field(default_factory=dict, description="the model's arguments (`mnist models`)")

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        if name not in MODEL_PARAMS:
            raise ValueError(f"unknown model; known models: {', '.join(MODEL_PARAMS)}")
        return name


class ScheduleConfig(_Section):
    name: Literal["constant", "step", "cosine", "reduce_on_plateau"] = Field(
        "constant", description="learning-rate schedule, applied per epoch")
    step_size: Annotated[StrictInt, Field(ge=1)] = Field(10, description="step: epochs between decays")
    factor: Number = Field(0.1, gt=0.0, lt=1.0, description="step, reduce_on_plateau: multiply the rate by this")
    patience: Annotated[StrictInt, Field(ge=1)] = Field(
        3, description="reduce_on_plateau: epochs without a lower val_loss before reducing")
    min_learning_rate: Number = Field(0.0, ge=0.0, description="floor of every schedule; cosine ends there")


class EarlyStoppingConfig(_Section):
    enabled: StrictBool = Field(False, description="stop when the monitored value stops improving")
    monitor: Literal["val_loss", "val_accuracy"] = Field("val_loss", description="the value watched")
    patience: Annotated[StrictInt, Field(ge=1)] = Field(5, description="epochs without improvement before stopping")
    min_delta: Number = Field(0.0, ge=0.0, description="smallest change that counts as an improvement")


class TrainingConfig(_Section):
    epochs: Annotated[StrictInt, Field(ge=1, le=10_000)] = Field(10, description="epochs to train (at most)")
    batch_size: Annotated[StrictInt, Field(ge=1, le=65_536)] = Field(128, description="global batch size")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam, or sgd with momentum")
    learning_rate: Number = Field(1e-3, gt=0.0, le=10.0, description="initial learning rate")
    momentum: Fraction = Field(0.9, description="SGD momentum (ignored by adam)")
    device: Literal["auto", "cpu", "gpu"] = Field("auto", description="auto uses a GPU when TensorFlow sees one")
    seed: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] = Field(
        42, description="seeds Python, NumPy, TensorFlow, the split and the data order")
    jit_compile: StrictBool = Field(False, description="compile the train step with XLA (fast for MLPs)")
    mixed_precision: StrictBool = Field(
        False, description="GPU only: mixed_float16 compute with loss scaling; logits and loss stay float32")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)


class OutputConfig(_Section):
    dir: StrictStr = Field("outputs", description="runs go to <dir>/runs/<UTC timestamp>-<name>/")
    name: StrictStr | None = Field(None, description="run name; defaults to the config file's name")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(_NAME_PATTERN, name):
            raise ValueError("a run name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or "
                             "digit (no path separators)")
        return name


class RunConfig(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @property
    def run_name(self) -> str:
        return self.output.name or self.model.name


# ---- loading ----


def load_config(path: str | Path | None, overrides: tuple[str, ...] | list[str] = (),
                flags: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML file (or start from defaults), apply `--set` overrides and flag values, validate.

    `flags` maps dotted keys to already-typed values (from dedicated CLI options); None values are skipped.
    Raises ConfigError with one line naming the field, the value and what is allowed.
    """
    source = str(path) if path else "config"
    raw = _read_yaml(Path(path)) if path else {}
    if path:
        if raw.get("output") is None:
            raw["output"] = {}
        if isinstance(raw["output"], dict) and raw["output"].get("name") is None:
            raw["output"]["name"] = _stem_as_name(Path(path))  # the file's stem names the run by default
    from_cli: set[str] = set()
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value, origin=f"--set {item}")
        from_cli.add(key)
    for key, value in (flags or {}).items():
        if value is not None:
            _set_dotted(raw, key, value, origin=f"--{key.split('.')[-1].replace('_', '-')}")
            from_cli.add(key)
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, RunConfig, "", from_cli)) from None
    schema = MODEL_PARAMS[cfg.model.name]
    try:
        params = schema.model_validate(cfg.model.params)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, schema, "model.params.", from_cli)) from None
    # Store every parameter with its default filled in, so the saved config is complete.
    model = cfg.model.model_copy(update={"params": params.model_dump(mode="json")})
    return cfg.model_copy(update={"model": model})


def parse_override(item: str) -> tuple[str, Any]:
    """`section.key=value` -> ("section.key", value parsed as a YAML scalar or flow list)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects section.key=value (e.g. training.epochs=5), got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML; quote it or fix the syntax") from None
    return key, value


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def describe_model_params(name: str) -> list[tuple[str, str, Any, str]]:
    """(parameter, type and range, default, description) rows for `mnist models`."""
    return sorted(describe_fields(MODEL_PARAMS[name]))


def describe_fields(schema: type[BaseModel] = RunConfig, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type and range, default, description) of every field, for `mnist config fields`."""
    rows = []
    for name, info in schema.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += describe_fields(annotation, f"{prefix}{name}.")
            continue
        default = info.default_factory() if info.default_factory else info.default
        rows.append((f"{prefix}{name}", _type_name(annotation) + _range(info), default, info.description or ""))
    return rows


def _range(info) -> str:
    bounds = []
    for item in [*info.metadata, *_nested_metadata(info.annotation)]:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                bounds.append(f"{symbol} {getattr(item, attr)}")
    return f" ({', '.join(bounds)})" if bounds else ""


def _nested_metadata(annotation: Any) -> list:
    metadata = []
    for arg in (annotation, *get_args(annotation)):
        if get_origin(arg) is Annotated:
            for item in get_args(arg)[1:]:
                metadata += [item, *getattr(item, "metadata", [])]
            metadata += _nested_metadata(get_args(arg)[0])
    return metadata


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found; pass an existing YAML file, e.g. configs/cnn.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(f"{path}: YAML tag not allowed ({exc.problem}); configs hold plain values only") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"{path}: invalid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections (data, model, training, output), "
                          f"got a {type(data).__name__}")
    return data


def _stem_as_name(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem).lstrip(".-_") or "run"
    return stem[:64]


def _set_dotted(raw: dict[str, Any], key: str, value: Any, origin: str) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {'.'.join(parts[:i + 1])} is not a section, cannot set {key}")
        node = child
    node[parts[-1]] = value


def _describe(exc: ValidationError, source: str, schema: type[BaseModel], prefix: str,
              from_cli: set[str]) -> str:
    """The first validation error as one line: where, the field, the value, what is allowed."""
    err = exc.errors()[0]
    loc = prefix + ".".join(str(p) for p in err["loc"])
    origin = " (from the command line)" if loc in from_cli else ""
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        parent, _, leaf = loc.rpartition(".")
        allowed = _field_names(schema, err["loc"][:-1])
        hint = difflib.get_close_matches(leaf, allowed, n=1)
        did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
        return (f"{source}: unknown key {loc!r}{origin}; {did_you_mean}"
                f"allowed in {parent or 'the top level'}: {', '.join(allowed)}{more}")
    if err["type"] == "missing":
        return f"{source}: {loc} is required{more}"
    msg = err["msg"].removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    return f"{source}: {loc} = {err.get('input')!r}{origin}: {msg}{more}"


def _field_names(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    node = schema
    for part in loc:
        node = node.model_fields[part].annotation  # sections are plain nested models
    return list(node.model_fields)


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Annotated:
        return _type_name(get_args(annotation)[0])
    args = [a for a in get_args(annotation) if a is not type(None)]
    if type(None) in get_args(annotation) and len(args) == 1:
        return f"{_type_name(args[0])} or null"
    if get_origin(annotation) is Literal:
        return "|".join(str(choice) for choice in get_args(annotation))
    if get_origin(annotation) is tuple:
        return f"list of {_type_name(get_args(annotation)[0])}"
    return getattr(annotation, "__name__", str(annotation))
