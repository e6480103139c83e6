"""How a sweep names its parameters and values in progress lines, tables and figures. Plain strings only."""

from __future__ import annotations

from typing import Any


def short_labels(keys) -> dict[str, str]:
    """Each dotted config key -> its shortest trailing part that ends no other key: `rotation` and `translation`
    for data.augmentation.rotation and data.augmentation.translation, `learning_rate`; more of the path where
    two would collide (`head.units` and `params.units`). Full keys share long prefixes, so side by side in a
    figure or a table they run together or get cut to the same text."""
    split = {key: key.split(".") for key in keys}
    labels = {}
    for key, parts in split.items():
        others = [other for name, other in split.items() if name != key]
        for n in range(1, len(parts) + 1):
            if not any(other[-n:] == parts[-n:] for other in others):
                break
        labels[key] = ".".join(parts[-n:])
    return labels


def show_value(value) -> str:
    """A trial's value as a config would write it: `0.002911`, `true`, `null`, `[128, 64]` (not Python's `True`)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def values_text(params: dict[str, Any], labels: dict[str, str]) -> str:
    """`rotation=0.0187, learning_rate=0.002911`: a trial's values under their short labels."""
    return ", ".join(f"{labels.get(key, key)}={show_value(value)}" for key, value in params.items())
