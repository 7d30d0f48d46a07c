"""Every import points down the layering docs/architecture.md draws, and no modules import each
other in a circle: read from the source (ast), so a module nobody imports is checked too."""

import ast
from collections.abc import Iterator
from pathlib import Path

import attrs

PACKAGE = Path(__file__).resolve().parents[2] / "trioproxy"
# Top to bottom, as docs/architecture.md lists them: a module may import its own layer and those
# below it. A name is a folder (all its modules) or a module at the package's root.
LAYERS: list[tuple[str, set[str]]] = [
    ("cli", {"__main__", "cli"}),
    ("process", {"process"}),
    ("server", {"server"}),
    ("doors", {"doors"}),
    ("runtime", {"runtime"}),
    ("routing", {"routing"}),
    ("providers/quota", {"providers", "quota"}),
    ("config", {"config", "logs"}),
    ("testing", {"testing"}),
    ("errors/secrets", {"__init__", "errors", "secrets", "jsoncodec", "plans"}),
]

@attrs.frozen
class Import:
    module: str  # dotted, without "trioproxy."
    target: str  # the module imported, dotted, without "trioproxy."
    line: int
    for_types_only: bool  # under `if TYPE_CHECKING:`: no import at run time


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def existing(dotted: str) -> str:
    """The module a dotted name lives in (`from .x import name` may name a function of x)."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or "__init__"


def imports_of(module: str) -> Iterator[Import]:
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" and module != "__init__" else module.split(".")[:-1]
    tree = ast.parse(path.read_text(), str(path))
    type_only = {id(node) for block in ast.walk(tree) if _is_type_checking(block) for node in ast.walk(block)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                names = [f"{base}.{node.module}" if node.module else base]
                if not node.module:  # `from . import x`: x is a module
                    names = [f"{base}.{alias.name}".lstrip(".") for alias in node.names]
            elif node.module and node.module.split(".")[0] == "trioproxy":
                names = [node.module.removeprefix("trioproxy")]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [alias.name.removeprefix("trioproxy") for alias in node.names
                     if alias.name.split(".")[0] == "trioproxy"]
        else:
            continue
        for name in names:
            yield Import(module, existing(name.lstrip(".")), node.lineno, id(node) in type_only)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def layer_of(module: str) -> int:
    """The index of the module's layer in LAYERS (0 is the top)."""
    first = module.split(".")[0]
    for index, (_, names) in enumerate(LAYERS):
        if first in names or module in names:
            return index
    raise AssertionError(f"trioproxy/{module.replace('.', '/')} is in no layer: add it to LAYERS and docs/architecture.md")


def cycle_in(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of `graph` as a path that returns to its start, or [] when it has none."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str]:
        path.append(node)
        on_path.add(node)
        for following in sorted(graph[node]):
            if following in on_path:
                return path[path.index(following):] + [following]
            if following not in done and (found := visit(following)):
                return found
        on_path.discard(path.pop())
        done.add(node)
        return []

    for node in sorted(graph):
        if node not in done and (found := visit(node)):
            return found
    return []


def test_every_module_is_in_a_layer() -> None:
    assert all(layer_of(module) >= 0 for module in MODULES)


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"trioproxy/{i.module.replace('.', '/')}.py: line {i.line} imports {i.target} "
        f"({LAYERS[layer_of(i.module)][0]} imports {LAYERS[layer_of(i.target)][0]})"
        for module in MODULES for i in imports_of(module) if layer_of(i.target) < layer_of(i.module)
    ]
    assert upward == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    graph = {module: {i.target for i in imports_of(module) if not i.for_types_only} - {module} for module in MODULES}
    assert cycle_in(graph) == []


def test_the_scan_sees_upward_imports_and_cycles() -> None:
    """The checks above can fail: the scanner finds a known import, and the cycle finder a cycle."""
    assert Import("server.app", "runtime", 0, False).target in {i.target for i in imports_of("server.app")}
    assert layer_of("server.app") < layer_of("runtime") < layer_of("routing.router")
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) == []


def test_tests_import_support_never_each_other() -> None:
    """Shared helpers live in tests/support/; a test module (or conftest) is never imported."""
    tests = Path(__file__).resolve().parents[1]
    imported = [
        f"{path.relative_to(tests)}: line {node.lineno} imports {name}"
        for path in sorted(tests.rglob("*.py")) if "node_modules" not in path.parts
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        for name in (
            [alias.name for alias in node.names] if isinstance(node, ast.Import)
            else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        )
        if name.split(".")[0].startswith("test_") or name.split(".")[0] == "conftest"
    ]
    assert imported == []


def test_every_test_file_is_in_the_folder_of_its_area() -> None:
    """tests/ holds folders by area (docs/architecture.md draws them), conftest.py and support/;
    a test file at its root belongs in one of the folders."""
    tests = Path(__file__).resolve().parents[1]
    assert sorted(path.name for path in tests.glob("test_*.py")) == []


def test_no_module_imports_another_modules_private_name() -> None:
    """A name with a leading underscore is its module's own: one another module needs is public."""
    private = [f"trioproxy/{module.replace('.', '/')}.py:{node.lineno}: {alias.name}"
               for module, path in MODULES.items()
               for node in ast.walk(ast.parse(path.read_text(), str(path)))
               if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("trioproxy"))
               for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert private == []
