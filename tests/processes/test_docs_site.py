"""The built docs site works from the file system: every internal link of every page,
followed as a file (as a browser does on ``file://``), reaches a file, and every
``#anchor`` exists on its page.

The site is built afresh into a temporary directory (``mkdocs build --strict``, about
3 s), so the test needs no earlier ``make docs`` and never reads a stale ``site/``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from mkdocs.exceptions import PluginError

ROOT = Path(__file__).parents[2]
MKDOCS = Path(sys.executable).parent / "mkdocs"


class Links(HTMLParser):
    """The ``href``/``src`` values and the ``id``s of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("href", "src"):
                self.links.append(value)
            elif name in ("id", "name"):
                self.ids.add(value)


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text(encoding="utf-8"))
    return links


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    subprocess.run(
        [str(MKDOCS), "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=True,
        timeout=120,
    )
    return out


def internal_links(page: Path) -> list[str]:
    return [
        link
        for link in parse(page).links
        if not urlsplit(link).scheme and not link.startswith("//")  # not http:, mailto:, data:
    ]


def test_every_internal_link_of_the_built_site_is_a_file(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    ids: dict[Path, set[str]] = {}
    broken: list[str] = []
    checked = 0
    for page in pages:
        if page.name == "404.html":
            continue  # served by a web server for any missing path: its links are root-relative
        for link in internal_links(page):
            parts = urlsplit(link)
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            where = f"{page.relative_to(site)}: {link}"
            checked += 1
            if not target.is_file():  # a directory would be a file:// directory listing
                broken.append(f"{where} -> no such file")
                continue
            if parts.fragment and target.suffix == ".html":
                if target not in ids:
                    ids[target] = parse(target).ids
                if unquote(parts.fragment) not in ids[target]:
                    broken.append(f"{where} -> no #{parts.fragment} there")
    assert checked > 500
    assert not broken, "\n".join(broken)


def test_no_link_relies_on_a_web_server(site: Path) -> None:
    """No root-relative link and no link to a folder: both break on file://."""
    bad = [
        f"{page.relative_to(site)}: {link}"
        for page in sorted(site.rglob("*.html"))
        if page.name != "404.html"
        for link in internal_links(page)
        if link.startswith("/") or urlsplit(link).path.endswith("/")
    ]
    assert not bad, "\n".join(bad)


def test_the_readme_links_to_files_that_exist() -> None:
    """The README is read in the repository (or on a forge): its links are paths."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [t for t in targets if not urlsplit(t).scheme]
    assert len(local) > 10
    missing = [t for t in local if not (ROOT / unquote(urlsplit(t).path)).is_file()]
    assert not missing, missing


def test_the_docs_build_fails_while_the_configuration_table_is_stale() -> None:
    """A setting added to jarvis_trio/config.py without `make config-docs` fails `make docs`."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = (ROOT / "docs" / "reference" / "configuration.md").read_text(encoding="utf-8")
    hooks.check_settings_table("reference/configuration.md", page)  # up to date: no error
    stale = page.replace("| `JARVIS_PORT` | `8000` |", "| `JARVIS_PORT` | `8001` |")
    assert stale != page
    with pytest.raises(PluginError, match="make config-docs"):
        hooks.check_settings_table("reference/configuration.md", stale)


def test_the_docs_build_fails_while_a_simulator_fault_is_undocumented() -> None:
    """A fault added to the Ollama simulator without a row in its reference fails `make docs`."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = (ROOT / "docs" / "reference" / "ollama-sim.md").read_text(encoding="utf-8")
    hooks.check_sim_faults("reference/ollama-sim.md", page)  # complete: no error
    row = next(line for line in page.splitlines() if line.startswith("| `slow=S`"))
    with pytest.raises(PluginError, match=r"not documented: \['slow'\]"):
        hooks.check_sim_faults("reference/ollama-sim.md", page.replace(row + "\n", ""))
    extra = page.replace(row, row + "\n| `hang=S` | a fault the simulator does not know |")
    with pytest.raises(PluginError, match=r"does not know: \['hang'\]"):
        hooks.check_sim_faults("reference/ollama-sim.md", extra)
