"""Reading a config: YAML file < `--set a.b=v` < dedicated flags, validated, with one-line errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mnist_pipeline.config import shipped
from mnist_pipeline.config.footprint import MAX_TRAINING_BYTES, training_memory
from mnist_pipeline.config.model_params import MODEL_PARAMS
from mnist_pipeline.config.problems import MAX_PROBLEMS, ConfigProblems, describe_errors
from mnist_pipeline.config.schema import RunConfig
from mnist_pipeline.config.yaml_reading import parse_yaml, read_with_bases
from mnist_pipeline.errors import ConfigError, clip, quote


def load_config(path: str | Path | None, overrides: tuple[str, ...] | list[str] = (),
                flags: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML file (or start from defaults), apply `--set` overrides and flag values, validate.

    `flags` maps dotted keys to already-typed values (from dedicated CLI options); None values are skipped.
    Raises ConfigError with one line naming the field, the value and what is allowed.
    """
    path = shipped.find(path) if path else None
    source = str(path) if path else "config"
    raw = read_with_bases(path) if path else {}
    if path:
        if raw.get("output") is None:
            raw["output"] = {}
        if isinstance(raw["output"], dict) and raw["output"].get("name") is None:
            raw["output"]["name"] = _stem_as_name(Path(path))  # the file's stem names the run by default
    from_cli: set[str] = set()
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value, origin=f"--set {clip(item)}")
        from_cli.add(key)
    for key, value in (flags or {}).items():
        if value is not None:
            _set_dotted(raw, key, value, origin=f"--{key.split('.')[-1].replace('_', '-')}")
            from_cli.add(key)
    problems: list[str] = []
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems += describe_errors(exc, source, RunConfig, "", from_cli)
        cfg = None
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    name = cfg.model.name if cfg else model.get("name", "mlp")
    if name in MODEL_PARAMS and isinstance(model.get("params", {}), dict):  # every problem in one go
        try:
            params = MODEL_PARAMS[name].model_validate(cfg.model.params if cfg else model.get("params", {}))
        except ValidationError as exc:
            problems += describe_errors(exc, source, MODEL_PARAMS[name], "model.params.", from_cli)
    if problems:
        raise ConfigProblems(problems[:MAX_PROBLEMS], len(problems))
    # Store every parameter with its default filled in, so the saved config is complete.
    model = cfg.model.model_copy(update={"params": params.model_dump(mode="json")})
    needed = training_memory(model.name, model.params, cfg.training.batch_size)
    if needed > MAX_TRAINING_BYTES:
        raise ConfigError(f"{source}: model.params with training.batch_size = {cfg.training.batch_size} need about "
                          f"{needed / 2**30:,.0f} GiB to train, more than the {MAX_TRAINING_BYTES >> 30} GiB allowed; "
                          f"use fewer or smaller layers or a smaller batch")
    return cfg.model_copy(update={"model": model})


def parse_override(item: str) -> tuple[str, Any]:
    """`section.key=value` -> ("section.key", value parsed as a YAML scalar or flow list)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects section.key=value (e.g. training.epochs=5), got {quote(item)}")
    return key, parse_yaml(text, f"--set {quote(item)}") if text.strip() else None


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


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

