"""MkDocs hook: keeps placeholders such as `<timestamp>` or `<output dir>` in the generated CLI reference.

mkdocs-click passes each command's docstring through as Markdown, where `<timestamp>` reads as an HTML tag and
the browser shows nothing; `mnist COMMAND --help` prints it as text. Tags HTML does not know are escaped back.
"""

from __future__ import annotations

import re
from typing import Any

PAGE = "reference/cli.md"
_HTML_TAGS = {"a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "div", "dl", "dt", "em", "h1", "h2", "h3",
              "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p", "pre", "small", "span", "strong",
              "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul"}
_TAG = re.compile(r"<(/?)([A-Za-z][\w-]*)([^<>]*)>")


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != PAGE:
        return html
    return _TAG.sub(lambda m: m.group(0) if m.group(2).lower() in _HTML_TAGS
                    else m.group(0).replace("<", "&lt;").replace(">", "&gt;"), html)
