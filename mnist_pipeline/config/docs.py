"""Describing the schema for people: every field's type, range, default and meaning."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel

from mnist_pipeline.config.schema import MODEL_PARAMS, RunConfig


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
    if args and type(None) not in get_args(annotation) and get_origin(annotation) not in (Literal, list, dict):
        return " or ".join(_type_name(a) for a in args)  # a union such as int | tuple[int, ...]
    return getattr(annotation, "__name__", str(annotation))


_WORDS = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
          bool: ("true or false", "true or false")}


def type_in_words(annotation: Any, plural: bool = False) -> str:
    """What a field takes, as an error message says it: "a list of integers", "an integer or null"."""
    if get_origin(annotation) is Annotated:
        return type_in_words(get_args(annotation)[0], plural)
    args = get_args(annotation)
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(yaml_value(choice) for choice in args)
    if get_origin(annotation) in (tuple, list):
        return f"{'lists' if plural else 'a list'} of {type_in_words(args[0], plural=True)}"
    if args:  # a union: int | None, int | tuple[int, ...]
        return " or ".join("null" if a is type(None) else type_in_words(a, plural) for a in args)
    singular, many = _WORDS.get(annotation, (f"a {getattr(annotation, '__name__', annotation)}",) * 2)
    return many if plural else singular


def yaml_value(value: Any) -> str:
    """A config value written as YAML writes it: `true`, `null`, `[32, 64]`, not Python's `True`, `None`."""
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()


def flat_values(tree: dict, prefix: str = ""):
    """(dotted key, value) of every leaf of a nested config dict, in config order."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from flat_values(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
