"""Reading config YAML: bounded against hostile files, with duplicate keys refused, and a file's `base:`
chain merged under it. Plain mappings out; validating them is `loading`'s job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.config import shipped
from mnist_pipeline.config.docs import yaml_value
from mnist_pipeline.config.schema import ModelConfig
from mnist_pipeline.errors import ConfigError, brief, clip, quote

# A config is a few hundred bytes of a few levels. These bounds refuse hostile YAML (a "billion laughs" of
# nested aliases, thousands of nested brackets, a huge file) quickly and in bounded memory.
MAX_CONFIG_BYTES = 256 * 1024
MAX_VALUES = 10_000  # scalars, lists and mappings, counted after expanding aliases
MAX_DEPTH = 32


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


def read_yaml(path: Path, what: str = "config file", example: str = "configs/cnn.yaml") -> dict[str, Any]:
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


def read_with_bases(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's mapping over the one its `base:` key names (a path relative to the file, followed in
    turn): sections merge key by key, the file's own values win. Lets a variant say only how it differs."""
    raw = read_yaml(path)
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
    return _merged(read_with_bases(base_path, chain), raw)


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

