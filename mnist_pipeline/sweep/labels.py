"""How a sweep names its parameters and values in progress lines, tables and figures. Plain strings only."""

from __future__ import annotations

from typing import Any

from mnist_pipeline.config.docs import short_key_labels as short_labels  # noqa: F401 (the sweep's name for it)


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
