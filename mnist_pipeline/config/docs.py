"""Describing the schema for people: every field's type, range, default and meaning."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args, get_origin

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
