"""Every path the README and the docs name exists: a module, script or file that moves or goes
fails here until the text follows it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# From the repository's root (`bench/soak.py`), or inside the package (`quota/ledger.py`); not in
# a quoted string ("trioproxy/qwen-3-coder" is a model a client names).
FROM_ROOT = re.compile(r"(?<![\w/.\"-])((?:trioproxy|tests|bench|scripts|docs|\.ci)/[\w./*-]*[\w*/])")
IN_PACKAGE = re.compile(r"(?<![\w/.\"-])((?:server|doors|routing|providers|quota|testing|emulator|cli|process|config)/[\w./*-]*[\w*/])")
GENERATED = ("bench/.cache/",)  # what benchmarks write; not in the repository


def missing_paths(text: str) -> list[str]:
    """The paths `text` names that match no file or folder of the repository."""
    named = [(path, [ROOT / path]) for path in FROM_ROOT.findall(text) if not path.startswith(GENERATED)]
    named += [(path, [ROOT / "trioproxy" / path, ROOT / "trioproxy" / "testing" / path]) for path in IN_PACKAGE.findall(text)]
    return sorted({path for path, places in named if not any(_exists(place) for place in places)})


def _exists(place: Path) -> bool:
    if "*" in place.name:
        return any(place.parent.glob(place.name))
    return place.exists()


def test_every_path_the_docs_name_exists() -> None:
    missing = {doc.relative_to(ROOT).as_posix(): paths for doc in DOCS if (paths := missing_paths(doc.read_text()))}
    assert missing == {}


def test_a_path_that_is_gone_is_found() -> None:
    text = "See `trioproxy/quota/gone.py`, quota/ledger.py and bench/soak.py, or `routing/nowhere.py`."
    assert missing_paths(text) == ["routing/nowhere.py", "trioproxy/quota/gone.py"]
