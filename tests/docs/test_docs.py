"""The documentation site builds with --strict, and the README stays a front page whose links and example hold.

A broken link, a missing anchor, a page left out of the navigation or a page named in the
navigation but missing fails ``mkdocs build --strict`` (``validation`` in ``mkdocs.yml``). The
README is not part of the site, so its links, its size and its pipeline example are checked here.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from batchscore.pipeline.config import load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = sorted((REPO / "docs").glob("*.md"))
README_MAX_BYTES = 12 * 1024  # the "at most about 12 KB": one five-minute screen of what and why


def test_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(site)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    built = sorted(
        page.stem for page in PAGES if (site / ("" if page.stem == "index" else page.stem) / "index.html").is_file()
    )
    assert built == sorted(page.stem for page in PAGES)
    assert (site / "img" / "scoring-view.png").is_file()


def _links(markdown: str) -> list[str]:
    """Relative link and image targets of a Markdown text, without their #anchor."""
    targets = re.findall(r"\]\(([^)\s]+)\)", markdown)
    return [t.split("#")[0] for t in targets if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]


def test_readme_links_resolve() -> None:
    links = _links(README.read_text())
    missing = [link for link in links if not (REPO / link).exists()]
    assert missing == []
    linked_pages = {link for link in links if link.startswith("docs/") and link.endswith(".md")}
    assert linked_pages >= {f"docs/{p.name}" for p in PAGES if p.stem != "performance-history"}


def test_readme_is_a_front_page() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size:,} bytes: move detail into a page under docs/"


def test_readme_make_targets_exist() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))
    named = set(re.findall(r"\bmake ([a-z][a-z-]*)", README.read_text()))
    assert named >= {"demo", "test", "docs", "bench"}
    assert named - targets == set()


def test_readme_pipeline_is_the_demo_churn_pipeline() -> None:
    """The README's pipeline file is valid, and says what include/pipelines/churn.yaml says."""
    section = README.read_text().split("## A pipeline is one file", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None
    example = parse_config(yaml.safe_load(block.group(1)), Path("churn.yaml"))
    demo = load_config(REPO / "include" / "pipelines" / "churn.yaml")
    for field in ("name", "schedule", "start_date", "entity_key", "features", "model", "output"):
        assert getattr(example, field) == getattr(demo, field), field
    assert example.source.conn_id == demo.source.conn_id
    assert " ".join(example.source.query.split()) == " ".join(demo.source.query.split())
