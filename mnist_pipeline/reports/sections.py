"""A report as a list of sections (heading, text, a table, a figure), rendered as markdown and as one
self-contained HTML file. Shared by a run's report, the run comparison and the sweep report; knows nothing of
what the sections say."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Section:
    heading: str
    text: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    image: str | None = None  # file name inside the run folder
    style: str = ""  # "notice" (a stopped run: first, boxed), "headline" (the numbers, as tiles) or ""
    details: bool = False  # in report.html, folded away under its heading (config, model, history...)


def render_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        if section.style == "notice":  # a quote block right under the title, where it cannot be missed
            lines += [f"> **{section.heading}.** {section.text}", ""]
            continue
        lines += [f"## {section.heading}", ""]
        if section.text:
            lines += [section.text, ""]
        if section.rows:
            columns = section.columns if any(section.columns) else ["", ""]
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "|".join(" --- " for _ in columns) + "|")
            lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in section.rows]
            lines.append("")
        if section.image:
            lines += [f"![{section.heading}]({section.image})", ""]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: .92em; }
.scroll { overflow-x: auto; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
th { background: #f4f4f4; } tr:nth-child(even) td { background: #fafafa; }
td:not(:first-child) { font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.notice { border: 2px solid #c62828; background: #fdecea; padding: .8em 1em; border-radius: 6px; }
.notice code { background: #fff; padding: 0 .3em; }
.tiles { display: flex; flex-wrap: wrap; gap: .6em; margin: .5em 0; }
.tile { border: 1px solid #ddd; border-radius: 6px; padding: .5em .9em; min-width: 9em; background: #fafafa; }
.tile .value { font-size: 1.5em; font-weight: 600; font-variant-numeric: tabular-nums; }
.tile .label { font-size: .85em; color: #555; }
details { margin-top: 1.2em; } summary { cursor: pointer; font-size: 1.25em; font-weight: 600; }
"""


def render_html(title: str, sections: list[Section], image_dir: Path) -> str:
    """One file with the images inlined as data URIs, so it opens offline and can be mailed around. The
    headline numbers come first as tiles; detail sections are folded (<details>), one click away."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{_CSS}</style>",
             f"</head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        if section.style == "notice":
            parts.append(f"<div class=\"notice\" role=\"alert\" id=\"notice\">{_inline(section.text)}</div>")
            continue
        body = _html_body(section, image_dir)
        if section.details:
            parts.append(f"<details><summary>{html.escape(section.heading)}</summary>{body}</details>")
        else:
            parts.append(f"<h2>{html.escape(section.heading)}</h2>{body}")
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_body(section: Section, image_dir: Path) -> str:
    parts = []
    if section.text:
        parts.append(f"<p>{_inline(section.text)}</p>")
    if section.style == "headline":
        parts.append("<div class=\"tiles\">" + "".join(
            f"<div class=\"tile\"><div class=\"value\">{html.escape(str(value))}</div>"
            f"<div class=\"label\">{html.escape(str(label))}</div></div>" for label, value in section.rows) + "</div>")
    elif section.rows:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in section.columns) if any(section.columns) else ""
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                       for row in section.rows)
        thead = f"<thead><tr>{head}</tr></thead>" if head else ""
        # In a box that scrolls sideways: a table wider than the page (a sweep's column per parameter) must
        # not make the whole page scroll.
        parts.append(f"<div class=\"scroll\"><table>{thead}<tbody>{body}</tbody></table></div>")
    if section.image:
        encoded = base64.b64encode((image_dir / section.image).read_bytes()).decode("ascii")
        parts.append(f"<img alt=\"{html.escape(section.heading)}\" src=\"data:image/png;base64,{encoded}\">")
    return "".join(parts)


def _inline(text: str) -> str:
    """The two markdown marks the texts use: **emphasis** and `code`."""
    escaped = html.escape(text)
    for mark, tag in (("**", "strong"), ("`", "code")):
        while escaped.count(mark) >= 2:
            escaped = escaped.replace(mark, f"<{tag}>", 1).replace(mark, f"</{tag}>", 1)
    return escaped
