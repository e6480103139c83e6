"""Reading a config: YAML file < `--set a.b=v` < dedicated flags, validated, with one-line errors."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mnist_pipeline.config.schema import MODEL_PARAMS, RunConfig
from mnist_pipeline.errors import ConfigError


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
    if not err["loc"] or isinstance(err.get("input"), dict):  # a check across the fields of one section:
        # naming the whole section's value says nothing
        return f"{source}: {loc.rstrip('.')}: {msg}{more}"
    return f"{source}: {loc} = {err.get('input')!r}{origin}: {msg}{more}"


def _field_names(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    node = schema
    for part in loc:
        node = node.model_fields[part].annotation  # sections are plain nested models
    return list(node.model_fields)
