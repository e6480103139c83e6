"""Describing the schema for people: every field's type, range, default and meaning."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel

from mnist_pipeline.config.model_params import MODEL_PARAMS
from mnist_pipeline.config.schema import RunConfig


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
        rows.append((f"{prefix}{name}", _type_text(schema, name), default, info.description or ""))
    return rows


@functools.cache
def _json_schema(schema: type[BaseModel]) -> dict:
    return schema.model_json_schema()


def _type_text(schema: type[BaseModel], name: str) -> str:
    """A field's type and limits, each limit once: "int, 1 to 7", "list of int, each 1 to 2048, 1 to 4 items",
    "int at least 10, or null".

    Read from pydantic's JSON schema, not from the annotations: the schema holds the limits pydantic enforces
    once it has merged them. Two `le` on an int (an alias's and the field's) leave only the last in force, and
    the annotations would show both."""
    root = _json_schema(schema)
    node = _resolve(root, root["properties"][name])
    described = [_describe(root, _resolve(root, option)) for option in node.get("anyOf", [node])]
    if len(described) == 1:
        return ", ".join(described[0])
    described.sort(key=lambda parts: parts == ["null"])  # "int at least 10, or null": null last
    texts = [" ".join([head, ", ".join(limits)]).rstrip() for head, *limits in described]
    # Commas inside an option ("list of str each ..., 1 to 64 items") call for a stronger break between them.
    joiner = ("; or " if any(len(parts) > 2 for parts in described)
              else ", or " if any(len(parts) > 1 for parts in described) else " or ")
    return joiner.join(texts)


def _resolve(root: dict, node: dict) -> dict:
    while "$ref" in node:  # "#/$defs/Name": an enum or a model shared by several fields
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


_JSON_TYPES = {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "null": "null",
               "object": "dict"}


def _describe(root: dict, node: dict) -> list[str]:
    """[type name, limit, ...] of one JSON schema node."""
    if "enum" in node:
        return [" | ".join(map(yaml_value, node["enum"]))]  # spaced: a long list wraps between choices
    if "const" in node:
        return [yaml_value(node["const"])]
    if node.get("type") == "array":
        head, *each = _describe(root, _resolve(root, node.get("items", {})))
        return [f"list of {head}", *(f"each {limit}" for limit in each),
                *_span(node.get("minItems"), False, node.get("maxItems"), False, " items")]
    head = _JSON_TYPES.get(node.get("type"), str(node.get("type", "any")))
    limits = _span(*_bounds(node))
    limits += _span(node.get("minLength"), False, node.get("maxLength"), False, " characters")
    if "pattern" in node:
        limits.append(f"matching {node['pattern']}")
    return [head, *limits]


def _bounds(node: dict) -> tuple[Any, bool, Any, bool]:
    """(low, low excluded, high, high excluded), the tightest where several are given. Pydantic writes a
    bound as JSON schema's `minimum`, or keeps its own `ge` where a validator runs before the type's check
    (our `Number`)."""
    low = high = None
    low_open = high_open = False
    for key, open_ in (("minimum", False), ("ge", False), ("exclusiveMinimum", True), ("gt", True)):
        value = node.get(key)
        if value is not None and (low is None or value > low or (value == low and open_)):
            low, low_open = value, open_
    for key, open_ in (("maximum", False), ("le", False), ("exclusiveMaximum", True), ("lt", True)):
        value = node.get(key)
        if value is not None and (high is None or value < high or (value == high and open_)):
            high, high_open = value, open_
    return low, low_open, high, high_open


def _span(low, low_open: bool, high, high_open: bool, unit: str = "") -> list[str]:
    """One limit in words: "1 to 7", "0 to below 1", "above 0 to 10", "at least 10", "at most 4096 characters"."""
    if low is None and high is None:
        return []
    if high is None:
        return [f"{'above' if low_open else 'at least'} {_number(low)}{unit}"]
    if low is None:
        return [f"{'below' if high_open else 'at most'} {_number(high)}{unit}"]
    return [f"{'above ' if low_open else ''}{_number(low)} to {'below ' if high_open else ''}{_number(high)}{unit}"]


def _number(value: float) -> str:
    """10.0 as 10 and 0.5 as 0.5, as a user would type them (never 1e+06)."""
    return str(int(value)) if float(value).is_integer() else repr(value)


_WORDS = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
          bool: ("true or false", "true or false")}


def type_in_words(annotation: Any, plural: bool = False) -> str:
    """What a field takes, as an error message says it: "a list of integers", "an integer or null",
    "true, false or auto"."""
    if get_origin(annotation) is Annotated:
        return type_in_words(get_args(annotation)[0], plural)
    args = get_args(annotation)
    if get_origin(annotation) is Literal and len(args) > 1:
        return "one of " + ", ".join(yaml_value(choice) for choice in args)
    if get_origin(annotation) in (tuple, list):
        return f"{'lists' if plural else 'a list'} of {type_in_words(args[0], plural=True)}"
    if get_origin(annotation) is dict or annotation is dict:  # model.params: keys and values of its own
        return "sections (key: value lines)" if plural else "a section (key: value lines)"
    if args:  # a union: int | None, int | tuple[int, ...], bool | Literal["auto"]
        options = [option for a in args for option in _options(a, plural)]
        return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"
    singular, many = _WORDS.get(annotation, (f"a {getattr(annotation, '__name__', annotation)}",) * 2)
    return many if plural else singular


def _options(annotation: Any, plural: bool) -> list[str]:
    """One member of a union as the values or kinds it allows: ["true", "false"], ["auto"], ["an integer"]."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if annotation is type(None):
        return ["null"]
    if annotation is bool:
        return ["true", "false"]
    if get_origin(annotation) is Literal:
        return [yaml_value(choice) for choice in get_args(annotation)]
    return [type_in_words(annotation, plural)]


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


# Last parts that say nothing alone: `name` under training.schedule is the schedule's, not the run's.
_VAGUE_LAST_PARTS = {"name", "enabled"}


def short_key_labels(keys, reserved=()) -> dict[str, str]:
    """Each dotted config key -> its shortest trailing part that ends no other key and is not `reserved` (a
    table's fixed column, e.g. `epochs` beside training.epochs): `rotation` and `translation` for
    data.augmentation.rotation and data.augmentation.translation, `learning_rate`; more of the path where two
    would collide (`head.units` and `params.units`) or where the last part says nothing alone (`schedule.name`).
    Full keys share long prefixes, so side by side in a figure or a table they run together or get cut alike."""
    split = {key: key.split(".") for key in keys}
    labels = {}
    for key, parts in split.items():
        others = [other for name, other in split.items() if name != key]
        n = 2 if len(parts) > 1 and parts[-1] in _VAGUE_LAST_PARTS else 1
        while n < len(parts) and (any(other[-n:] == parts[-n:] for other in others)
                                  or ".".join(parts[-n:]) in reserved):
            n += 1
        labels[key] = ".".join(parts[-n:])
    return labels
