"""The documentation: the MkDocs site builds strictly, its generated references cover every command and config
key, the README stays a front door whose links resolve, and the design page names every module."""

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from mnist_pipeline.cli import cli
from mnist_pipeline.config.docs import describe_fields

PACKAGE = ROOT / "mnist_pipeline"
README_MAX_LINES = 200
# [text](target) and ![alt](target); a target ends at whitespace or ")" (an optional "title" is not captured).
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built once for this module, strictly: a warning (broken link, page missing from nav) fails it."""
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def page_text(site: Path, page: str) -> str:
    """The visible text of one built page's article, entities decoded, whitespace collapsed."""
    document = (site / page / "index.html").read_text()
    article = document[document.find("<article"):document.find("</article>")]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", article)).split())


def test_site_builds_strictly(site):
    assert (site / "index.html").is_file()
    assert (site / "reference/cli/index.html").is_file()
    assert not (site / "hooks").exists()  # the hooks are build code, not pages


def test_cli_reference_documents_every_command(site):
    text = page_text(site, "reference/cli")
    for name in cli.commands:
        assert f"Usage: mnist {name} [" in text, f"`mnist {name}` is missing from the CLI reference"


def test_config_reference_lists_every_key(site):
    text = page_text(site, "reference/config")
    missing = [key for key, *_ in describe_fields() if key not in text]
    assert not missing, f"config keys missing from the config reference: {missing}"
    assert "<!-- config-reference -->" not in (site / "reference/config/index.html").read_text()


def test_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES, "the README is a front door: move detail into docs/"
    targets = [t for t in MARKDOWN_LINK.findall(readme) if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]
    assert any(t.startswith("docs/") for t in targets), "the README should link into docs/"
    broken = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not broken, f"README links to files that do not exist: {broken}"


def test_design_page_names_every_module():
    design = (ROOT / "docs/design.md").read_text()
    modules = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    assert modules
    missing = [m for m in modules if f"`{m}`" not in design]
    assert not missing, f"docs/design.md does not name these modules: {missing}"
    listed = re.findall(r"^\| `([\w/]+\.py)` \|", design, flags=re.MULTILINE)  # the module table's first column
    gone = [m for m in listed if m not in modules]
    assert not gone, f"docs/design.md lists modules that no longer exist: {gone}"
