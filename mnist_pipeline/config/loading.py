"""Reading a config: YAML file < `--set a.b=v` < dedicated flags, validated, with one-line errors."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mnist_pipeline.config import shipped
from mnist_pipeline.config.docs import describe_fields, type_in_words, yaml_value
from mnist_pipeline.config.schema import (
    DEVICE_PATTERN,
    MAX_TRAINING_BYTES,
    MODEL_PARAMS,
    ModelConfig,
    RunConfig,
    training_memory,
)
from mnist_pipeline.errors import ConfigError, brief, clip, plural, quote

# A config is a few hundred bytes of a few levels. These bounds refuse hostile YAML (a "billion laughs" of
# nested aliases, thousands of nested brackets, a huge file) quickly and in bounded memory.
MAX_CONFIG_BYTES = 256 * 1024
MAX_VALUES = 10_000  # scalars, lists and mappings, counted after expanding aliases
MAX_DEPTH = 32


def load_config(path: str | Path | None, overrides: tuple[str, ...] | list[str] = (),
                flags: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML file (or start from defaults), apply `--set` overrides and flag values, validate.

    `flags` maps dotted keys to already-typed values (from dedicated CLI options); None values are skipped.
    Raises ConfigError with one line naming the field, the value and what is allowed.
    """
    path = shipped.find(path) if path else None
    source = str(path) if path else "config"
    raw = _read_with_bases(path) if path else {}
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
        problems += _describe(exc, source, RunConfig, "", from_cli)
        cfg = None
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    name = cfg.model.name if cfg else model.get("name", "mlp")
    if name in MODEL_PARAMS and isinstance(model.get("params", {}), dict):  # every problem in one go
        try:
            params = MODEL_PARAMS[name].model_validate(cfg.model.params if cfg else model.get("params", {}))
        except ValidationError as exc:
            problems += _describe(exc, source, MODEL_PARAMS[name], "model.params.", from_cli)
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


def parse_yaml(text: str, where: str):
    """YAML's safe loader with bounds: at most MAX_CONFIG_BYTES, MAX_VALUES values after expanding aliases
    and MAX_DEPTH levels, checked on the parsed node graph before any Python object is built."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters, more than a config can need "
                          f"({MAX_CONFIG_BYTES // 1024} KiB at most)")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_bounds(node, where, 1, {})
        return loader.construct_document(node)
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(f"{where}: YAML tag not allowed ({exc.problem}); configs hold plain values only") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}: invalid YAML{line}: {getattr(exc, 'problem', None) or 'syntax error'}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep; a config has a few") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"{where}: a value cannot be read ({str(exc)[:80]})") from None
    finally:
        loader.dispose()


def _check_bounds(node, where: str, depth: int, seen: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(values, levels) of `node` with aliases expanded; each distinct node is measured once, so an alias
    bomb costs time linear in the file, not in its expansion."""
    if id(node) in seen:
        count, height = seen[id(node)]
    else:
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep; a config has a few")
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(node, where)
        children = ([] if isinstance(node, yaml.ScalarNode) else
                    [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode)
                    else node.value)
        sizes = [_check_bounds(child, where, depth + 1, seen) for child in children]
        count = 1 + sum(c for c, _ in sizes)
        height = 1 + max((h for _, h in sizes), default=0)
        seen[id(node)] = (count, height)
    if depth - 1 + height > MAX_DEPTH:
        raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep; a config has a few")
    if count > MAX_VALUES:
        raise ConfigError(f"{where}: more than {MAX_VALUES:,} values once its aliases are expanded; refusing "
                          f"it (a config has a few dozen; is it a YAML alias bomb?)")
    return count, height


def _check_unique_keys(node: yaml.MappingNode, where: str) -> None:
    """YAML keeps the last of two equal keys without a word: `epochs: 3` then `epochs: 4` would train 4."""
    first_line: dict[str, int] = {}
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value != "<<":
            line = key.start_mark.line + 1
            if key.value in first_line:
                raise ConfigError(f"{where}: key {quote(key.value)} is written twice in one section (lines "
                                  f"{first_line[key.value]} and {line}); keep one")
            first_line[key.value] = line


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _read_yaml(path: Path, what: str = "config file", example: str = "configs/cnn.yaml") -> dict[str, Any]:
    """A YAML mapping read within the bounds of `parse_yaml`; `what` and `example` word the errors."""
    if not path.exists():
        space = what == "space file"
        close = shipped.closest(path, space)
        if close:
            raise ConfigError(f"{what} {quote(str(path))} not found; did you mean {' or '.join(close)} (shipped with "
                              f"mnist-pipeline: `mnist config list`)?")
        raise ConfigError(f"{what} {quote(str(path))} not found; pass a YAML file, or the name of one that ships "
                          f"with mnist-pipeline ({', '.join(shipped.names(space)[:6])}, ...: `mnist config list`)")
    if not path.is_file():
        problem = "is a folder, not" if path.is_dir() else "is not"
        raise ConfigError(f"{what} {quote(str(path))} {problem} a YAML file (e.g. {example})")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB, more than a config can need")
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the {what} as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror or clip(str(exc))})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        got = "a list" if isinstance(data, list) else f"the single value {clip(yaml_value(data))}"
        raise ConfigError(f"{path}: a {what} must be a mapping of sections (e.g. {example}), got {got}")
    return data


MAX_BASE_DEPTH = 8  # a chain of bases longer than this is a mistake, not a design


def _read_with_bases(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's mapping over the one its `base:` key names (a path relative to the file, followed in
    turn): sections merge key by key, the file's own values win. Lets a variant say only how it differs."""
    raw = _read_yaml(path)
    if "base" not in raw:
        return raw
    base = raw.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base must name another config file, relative to this one (e.g. base: "
                          f"../mlp.yaml), got {quote(base)}")
    if "\0" in base:
        raise ConfigError(f"{path}: base {quote(base)} contains a NUL character; name another config file, "
                          f"relative to this one (e.g. base: ../mlp.yaml)")
    try:
        chain = (*chain, path.resolve())
        base_path = (path.parent / base.strip()).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise ConfigError(f"{path}: base {quote(base)} cannot be followed ({brief(exc)}): a symlink loop or an "
                          f"unreadable path; name the config file itself") from None
    if base_path in chain:
        raise ConfigError(f"{path}: base {quote(base)} leads back to {base_path.name}: a config cannot build on "
                          f"itself")
    if len(chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: more than {MAX_BASE_DEPTH} configs deep in bases; build on a config with "
                          f"fewer bases")
    if not base_path.is_file():  # a folder, a device or a pipe is never read
        what = ("is a folder" if base_path.is_dir() else "is not a regular file" if base_path.exists()
                else "does not exist")
        raise ConfigError(f"{path}: base {quote(base)} is not a config file ({base_path} {what}); the path is "
                          f"relative to {path.parent}")
    return _merged(_read_with_bases(base_path, chain), raw)


DEFAULT_MODEL = ModelConfig.model_fields["name"].default  # what a config that names no model trains


def _merged(base: dict[str, Any], top: dict[str, Any], key: str = "") -> dict[str, Any]:
    """`top` over `base`, mappings merged recursively. Another model's params replace the base's whole: a CNN
    built on an MLP config must not inherit its `units`."""
    merged = dict(base)
    # The effective names, defaults included: a base that relies on the default model still names it.
    if key == "model" and top.get("name", base.get("name", DEFAULT_MODEL)) != base.get("name", DEFAULT_MODEL):
        merged.pop("params", None)
    for name, value in top.items():
        below = merged.get(name)
        merged[name] = _merged(below, value, name) if isinstance(value, dict) and isinstance(below, dict) else value
    return merged


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


def _describe(exc: ValidationError, source: str, schema: type[BaseModel], prefix: str,
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
