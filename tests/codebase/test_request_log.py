"""One module writes every request-log line: the INFO lines on `trioproxy.request` that account
for a whole request (`request <id> api=...`, `request <id> refused: ...`). Read from the source
(ast), so a line added anywhere else fails here."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent.parent / "trioproxy"
WRITER = PACKAGE / "server" / "request_log.py"


def request_lines(path: Path) -> list[int]:
    """Lines of `path` that log.info a format naming a request and its outcome fields."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "info"):
            continue
        first = node.args[0] if node.args else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.startswith("request %s ") \
                and ("status=" in first.value):
            found.append(node.lineno)
    return found


def test_every_request_log_line_is_written_by_one_module() -> None:
    elsewhere = {str(path.relative_to(PACKAGE)): lines for path in PACKAGE.rglob("*.py")
                 if path != WRITER and (lines := request_lines(path))}
    assert elsewhere == {}
    assert len(request_lines(WRITER)) == 3  # served, refused before a door, refused at the edges
