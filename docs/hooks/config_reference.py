"""MkDocs hook: fills the `<!-- config-reference -->` marker in reference/config.md with tables of every config
key and every model's parameters, built from the pydantic schema (the same source as `mnist config fields`).

Imports only the config package (pydantic and PyYAML), never TensorFlow: the site builds in seconds.
"""

from __future__ import annotations

from typing import Any

from mnist_pipeline.config import MODEL_PARAMS, describe_fields, describe_model_params, yaml_value

MARKER = "<!-- config-reference -->"
PAGE = "reference/config.md"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE}: the marker {MARKER} is missing; the config reference has nowhere to go")
    return markdown.replace(MARKER, config_reference())


def config_reference() -> str:
    """Markdown: one table of every dotted config key, then one table per registered model's parameters."""
    parts = ["## Config keys", "", _table(("key", "type and range", "default", "meaning"), describe_fields()), "",
             "## Model parameters", "",
             "`model.params` takes exactly the chosen model's constructor arguments (`mnist models` lists the same).",
             ""]
    for name in MODEL_PARAMS:  # the registry names, in registry order
        parts += [f"### `{name}`", "", _table(("parameter", "type and range", "default", "meaning"),
                                              describe_model_params(name)), ""]
    return "\n".join(parts)


def _table(header: tuple[str, ...], rows: list[tuple[str, str, Any, str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for key, kind, default, meaning in rows:
        value = yaml_value(default)
        shown = f"`{value}`" if "|" not in value and "`" not in value else _cell(value)  # no escapes in code
        cells = [f"`{key}`", _cell(kind), shown, _cell(meaning)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: `|` would end the cell, a newline the row, and `<dir>` would read
    as an HTML tag."""
    text = " ".join(str(text).split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|")
