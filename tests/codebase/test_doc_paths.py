"""The docs hold together: every path the README and the docs name exists, every link between
them lands on a file and a heading that exist, and every page under docs/ is in the README's
contents. A module, script or file that moves or goes, or a heading that is renamed, fails here
until the text follows it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *PAGES]
# From the repository's root (`bench/soak.py`), or inside the package (`quota/ledger.py`); not in
# a quoted string ("trioproxy/qwen-3-coder" is a model a client names).
FROM_ROOT = re.compile(r"(?<![\w/.\"-])((?:trioproxy|tests|bench|scripts|docs|contrib|\.ci)/[\w./*-]*[\w*/])")
IN_PACKAGE = re.compile(
    r"(?<![\w/.\"-])((?:server|doors|routing|providers|quota|testing|emulator|config|cli|process)/[\w./*-]*[\w*/])")
# A module named on its own (`supervisor.py`): some file of the repository has that name.
MODULE = re.compile(r"`([A-Za-z_]\w*\.py)`")
GENERATED = ("bench/.cache/",)  # what benchmarks write; not in the repository
# A Markdown link to a local file, with an optional heading: [text](routing.md#patience).
LINK = re.compile(r"\]\((?!https?:|mailto:)([^)#\s]*)(?:#([^)\s]+))?\)")


def missing_paths(text: str) -> list[str]:
    """The paths `text` names that match no file or folder of the repository."""
    named = [(path, [ROOT / path]) for path in FROM_ROOT.findall(text) if not path.startswith(GENERATED)]
    named += [(path, [ROOT / "trioproxy" / path, ROOT / "trioproxy" / "testing" / path]) for path in IN_PACKAGE.findall(text)]
    missing = {path for path, places in named if not any(_exists(place) for place in places)}
    missing |= {name for name in MODULE.findall(text) if name not in _module_names()}
    return sorted(missing)


def broken_links(doc: Path) -> list[str]:
    """The links in `doc` to a local file that does not exist, or to a heading its target lacks."""
    broken = []
    for target, anchor in LINK.findall(doc.read_text()):
        place = (doc.parent / target).resolve() if target else doc
        if not place.exists():
            broken.append(f"{target}#{anchor}" if anchor else target)
        elif anchor and place.suffix == ".md" and anchor not in anchors(place.read_text()):
            broken.append(f"{target}#{anchor}")
    return broken


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of `markdown` (fenced code left out)."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return {_slug(heading) for heading in re.findall(r"^#{1,6} +(.+?) *$", prose, re.MULTILINE)}


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def unlisted_pages(readme: str) -> list[str]:
    """The docs pages the README's contents section does not link to."""
    contents = readme.split("\n## Contents\n", 1)[1].split("\n## ", 1)[0] if "\n## Contents\n" in readme else ""
    linked = {target for target, _ in LINK.findall(contents)}
    return [page.relative_to(ROOT).as_posix() for page in PAGES if page.relative_to(ROOT).as_posix() not in linked]


def _exists(place: Path) -> bool:
    if "*" in place.name:
        return any(place.parent.glob(place.name))
    return place.exists()


_MODULES: set[str] = set()


def _module_names() -> set[str]:
    if not _MODULES:
        _MODULES.update(path.name for folder in ("trioproxy", "bench", "tests", "scripts")
                        for path in (ROOT / folder).rglob("*.py"))
    return _MODULES


def test_every_path_the_docs_name_exists() -> None:
    missing = {doc.relative_to(ROOT).as_posix(): paths for doc in DOCS if (paths := missing_paths(doc.read_text()))}
    assert missing == {}


def test_every_link_between_the_docs_lands() -> None:
    broken = {doc.relative_to(ROOT).as_posix(): links for doc in DOCS if (links := broken_links(doc))}
    assert broken == {}


def test_every_docs_page_is_in_the_readme_contents() -> None:
    assert unlisted_pages((ROOT / "README.md").read_text()) == []


def test_a_path_that_is_gone_is_found() -> None:
    text = "See `trioproxy/quota/gone.py`, quota/ledger.py and bench/soak.py, `routing/nowhere.py` or `vanished.py`."
    assert missing_paths(text) == ["routing/nowhere.py", "trioproxy/quota/gone.py", "vanished.py"]


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Patience, and waiting\n\n```sh\n# not a heading\n```\n")
    doc = tmp_path / "page.md"
    doc.write_text("[ok](other.md#patience-and-waiting) [gone](gone.md) [no heading](other.md#not-a-heading)"
                   " [here](#other-page) [web](https://example.com/x.md)")
    assert broken_links(doc) == ["gone.md", "other.md#not-a-heading", "#other-page"]


def test_a_page_left_out_of_the_contents_is_found() -> None:
    readme = "# t\n\n## Contents\n\n- [Routing](docs/routing.md)\n\n## Other\n\n[API](docs/api.md)\n"
    unlisted = unlisted_pages(readme)
    assert "docs/routing.md" not in unlisted and "docs/api.md" in unlisted
