"""A config's problems in words: each pydantic validation error as one line naming the key, the value as
the user wrote it, what is allowed and, for a typo, the key meant."""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from mnist_pipeline.config.docs import describe_fields, type_in_words, yaml_value
from mnist_pipeline.config.schema import DEVICE_PATTERN, RunConfig
from mnist_pipeline.errors import ConfigError, clip, plural, quote


class ConfigProblems(ConfigError):
    """Every problem of one config (up to MAX_PROBLEMS), each a line naming the key, the value and the fix;
    as one message, the first in full and the others by key, so the line stays readable (`config validate`
    prints each in full)."""

    def __init__(self, problems: list[str], total: int):
        self.problems = problems
        first, *rest = problems
        keys = ", ".join(_problem_key(p) for p in rest)
        unsaid = f" and {total - len(problems)} more" if total > len(problems) else ""
        super().__init__(first + (f" (and {plural(total - 1, 'more problem')}: {keys}{unsaid}; `mnist config "
                                  f"validate` shows each with its fix)" if rest else ""))


def _problem_key(problem: str) -> str:
    """The key a problem line is about: `unknown key 'a.b'` or `a.b = value` / `a.b is required` / `a.b: ...`."""
    text = problem.split(": ", 1)[-1]
    unknown = re.match(r"unknown key '([^']+)'", text)
    return unknown.group(1) if unknown else re.split(r" = | is required|: ", text, maxsplit=1)[0]


MAX_PROBLEMS = 10  # a file of 50 typos is a wrong file: the first ten say so


def describe_errors(exc: ValidationError, source: str, schema: type[BaseModel], prefix: str,
              from_cli: set[str]) -> list[str]:
    """Every validation error as a line: where, the field, the value, what is allowed. A value that fits no
    member of a union fails once per member: one problem, not several."""
    seen: set[tuple] = set()
    problems = []
    for err in exc.errors():
        if err["type"] == "too_short" and isinstance(err.get("input"), (list, tuple, dict)) \
                and len(err["input"]) >= err["ctx"]["min_length"]:
            continue  # pydantic counts the items that passed: an item failed, and its own error says why
        path, _, inside = _locate(schema, err["loc"])
        where = (*path, *inside)
        if where not in seen:
            seen.add(where)
            problems.append(_problem(err, source, schema, prefix, from_cli))
    return problems


def _problem(err: dict, source: str, schema: type[BaseModel], prefix: str, from_cli: set[str]) -> str:
    path, annotation, inside = _locate(schema, err["loc"])
    loc = prefix + ".".join(path) + "".join(f"[{i}]" for i in inside)
    key = prefix + ".".join(path)
    origin = " (from the command line)" if any(k == key or k.startswith(key + ".") for k in from_cli) else ""
    if err["type"] == "extra_forbidden":
        parent, _, leaf = loc.rpartition(".")
        allowed = _field_names(schema, err["loc"][:-1])
        hint = _did_you_mean(leaf, allowed)
        did_you_mean = f"did you mean {hint!r}? " if hint else ""
        return (f"{source}: unknown key {quote(loc)}{origin}; {did_you_mean}"
                f"allowed in {parent or 'the top level'}: {', '.join(allowed)}")
    if err["type"] == "missing":
        return f"{source}: {loc} is required; add it"
    msg = _expected(err, annotation, inside)
    if err["type"] in _BOUNDS and not inside:
        msg = f"{msg}{_bound_meaning(schema, path, err.get('input'))}"
    if not err["loc"] or isinstance(err.get("input"), dict):  # a check across the fields of one section:
        # naming the whole section's value says nothing
        return f"{source}: {loc.rstrip('.')}: {msg}"
    return f"{source}: {clip(loc, 120)} = {_shown(err.get('input'))}{origin}: {msg}"


def _shown(value: Any) -> str:
    """A value as the user wrote it: strings quoted (an empty or spaced one stays visible), the rest as YAML
    writes it (`true`, `null`, `[1, 2]`), never Python's `True` or `None`."""
    return quote(value) if isinstance(value, str) else clip(yaml_value(value))


_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _bound_meaning(schema: type[BaseModel], path: list[str], value: Any) -> str:
    """What the number means, from its field's description, so that a bound reads with its unit: a rotation
    of 15 is refused as "a fraction of a full turn", with what 15 degrees would be."""
    node: Any = schema
    info = None
    for part in path:
        if not (isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields):
            return ""
        info = node.model_fields[part]
        node = info.annotation
    if info is None or not info.description:
        return ""
    meaning = f" ({info.description})"
    if "fraction of a full turn" in info.description and isinstance(value, (int, float)) and 1 < value <= 360:
        meaning += f"; for {value} degrees write {value / 360:.3g}"
    return meaning


# Pydantic's words for a wrong type ("input should be a valid tuple") name Python's types; a config is YAML.
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
               "tuple": "a list", "list": "a list", "dict": "a section (key: value lines)",
               "model": "a section (key: value lines)"}


def _expected(err: dict, annotation: Any, inside: list[int]) -> str:
    kind = err["type"]
    if annotation is not None and not inside and (kind.endswith(("_type", "_parsing")) or kind in (
            "literal_error", "int_from_float")):
        return f"expected {type_in_words(annotation)}"  # the whole field's type, every member of a union
    word = _TYPE_WORDS.get(kind.split("_")[0]) if kind.endswith(("_type", "_parsing")) else None
    if word:
        return f"expected {word}"
    ctx = err.get("ctx") or {}
    if kind == "too_short":
        return f"must have at least {plural(ctx['min_length'], 'item')}"
    if kind == "too_long":
        return f"must have at most {plural(ctx['max_length'], 'item')}"
    if kind == "string_too_short":
        return "must not be empty" if ctx["min_length"] == 1 else \
            f"must have at least {plural(ctx['min_length'], 'character')}"
    if kind == "string_too_long":
        return f"must have at most {plural(ctx['max_length'], 'character')}"
    if kind == "string_pattern_mismatch":
        return _PATTERN_WORDS.get(ctx["pattern"], f"must match the pattern {ctx['pattern']}")
    msg = err["msg"].removeprefix("Value error, ")
    for pydantic_words, ours in _BOUND_WORDS:
        msg = msg.replace(pydantic_words, ours)
    return msg[:1].lower() + msg[1:]


_PATTERN_WORDS = {DEVICE_PATTERN: "expected a device: CPU or GPU, a colon and its number (e.g. GPU:0)"}

_BOUND_WORDS = (("Input should be less than or equal to", "must be at most"),
                ("Input should be greater than or equal to", "must be at least"),
                ("Input should be greater than", "must be more than"),
                ("Input should be less than", "must be less than"))


def _locate(schema: type[BaseModel], loc: tuple) -> tuple[list[str], Any, list[int]]:
    """(field path, the field's annotation or None for a section, list indices inside the field) of an error's
    `loc`, without the union-member tags pydantic adds ("constrained-int", "tuple[int, ...]")."""
    path: list[str] = []
    node: Any = schema
    annotation = None
    inside: list[int] = []
    for part in loc:
        if isinstance(part, int):
            inside.append(part)
        elif isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            path.append(part)
            node = annotation = node.model_fields[part].annotation
            if isinstance(node, type) and issubclass(node, BaseModel):
                annotation = None
        elif isinstance(node, type) and issubclass(node, BaseModel):
            path.append(str(part))  # an unknown key
    return path, annotation, inside


_ALIASES = {"lr": "learning_rate", "bs": "batch_size", "batch": "batch_size", "wd": "weight_decay",
            "dropout": "dropout_rate", "model_name": "name"}  # other tools' names for our keys


def _did_you_mean(leaf: str, siblings: list[str]) -> str | None:
    """A close sibling name, else the full key of a field of that name elsewhere in the config, from any
    section (model.params included): `epochs` -> `training.epochs`, `model.params.weight_decay` ->
    `training.weight_decay`."""
    close = difflib.get_close_matches(_ALIASES.get(leaf, leaf), siblings, n=1)
    if close:
        return close[0]
    fields = [key.split(".") for key, *_ in describe_fields(RunConfig)]
    keys = list(dict.fromkeys(".".join(parts[:i]) for parts in fields for i in range(2, len(parts) + 1)))
    leaf = _ALIASES.get(leaf, leaf)
    exact = [key for key in keys if key.rsplit(".", 1)[-1] == leaf]
    if exact:
        return exact[0]
    near = difflib.get_close_matches(leaf, [key.rsplit(".", 1)[-1] for key in keys], n=1)
    return next((key for key in keys if near and key.rsplit(".", 1)[-1] == near[0]), None)


def _field_names(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    node = schema
    for part in loc:
        node = node.model_fields[part].annotation  # sections are plain nested models
    return list(node.model_fields)
