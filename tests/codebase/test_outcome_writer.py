"""One module writes a request's routing outcome (the RouteRecord): the router. Patience,
settlement and the stream relay return their parts as values, and the server only reads the
record. Read from the source (ast), so a write added anywhere else fails here."""

import ast
from pathlib import Path

import attrs

from trioproxy.routing.request import RouteRecord

PACKAGE = Path(__file__).resolve().parents[2] / "trioproxy"
WRITER = PACKAGE / "routing" / "router.py"
FIELDS = frozenset(field.name for field in attrs.fields(RouteRecord))
# Methods that change a list (or other container) field in place.
MUTATORS = frozenset(("append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse", "update"))
# Writes of another type's attribute that shares a field's name, by module: (the target as
# written, what it is). The scan reads names, not types: each such write is named here.
NOT_THE_RECORD = {
    "routing/fair_share.py": {("share.provider", "a ProviderShare's provider settings")},
}


def _field_of(node: ast.expr) -> str | None:
    """The record field `node` names (`x.reason`, `x.failed_over[0]`), if any. `self.reason` is
    a class's own attribute, not the record's: a class with a field's name is no writer."""
    if isinstance(node, ast.Subscript):
        return _field_of(node.value)
    if not isinstance(node, ast.Attribute) or node.attr not in FIELDS:
        return None
    if isinstance(node.value, ast.Name) and node.value.id == "self":
        return None
    return node.attr


def _targets(node: ast.AST) -> list[ast.expr]:
    """What a statement assigns, augments or deletes."""
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor)):
        return [node.target]
    if isinstance(node, ast.Delete):
        return node.targets
    if isinstance(node, ast.withitem) and node.optional_vars is not None:
        return [node.optional_vars]
    return []


def _flattened(targets: list[ast.expr]) -> list[ast.expr]:
    out: list[ast.expr] = []
    for target in targets:
        if isinstance(target, (ast.Tuple, ast.List)):
            out += _flattened(list(target.elts))
        elif isinstance(target, ast.Starred):
            out += _flattened([target.value])
        else:
            out.append(target)
    return out


def record_writes(source: str, not_the_record: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, field) of each write of a record field in `source`: an assignment (tuples and
    augmented ones too), a deletion, an in-place change of a list field (`x.failed_over.append`),
    or `setattr(x, "field", ...)`. Targets written as in `not_the_record` are another type's."""
    found = []
    for node in ast.walk(ast.parse(source)):
        for target in _flattened(_targets(node)):
            if (name := _field_of(target)) is not None and ast.unparse(target) not in not_the_record:
                found.append((target.lineno, name))
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Attribute) and function.attr in MUTATORS:
            if (name := _field_of(function.value)) is not None:
                found.append((node.lineno, name))
        if isinstance(function, ast.Name) and function.id == "setattr" and len(node.args) >= 2:
            named = node.args[1]
            if isinstance(named, ast.Constant) and named.value in FIELDS:
                found.append((node.lineno, named.value))
    return sorted(found)


def test_only_the_router_writes_the_route_record() -> None:
    elsewhere = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = str(path.relative_to(PACKAGE))
        others = frozenset(target for target, _ in NOT_THE_RECORD.get(module, ()))
        if path != WRITER and (writes := record_writes(path.read_text(), others)):
            elsewhere[module] = writes
    assert elsewhere == {}


def test_each_write_named_as_another_types_is_still_there() -> None:
    """An exception that outlived its write would hide the next write of that name."""
    for module, named in NOT_THE_RECORD.items():
        writes = record_writes((PACKAGE / module).read_text())
        assert len(writes) == len(named), module


def test_the_router_writes_every_field_of_the_record() -> None:
    """The writer is the router indeed: each field the request log reads is set there."""
    assert {name for _, name in record_writes(WRITER.read_text())} == FIELDS


def test_the_scan_finds_every_way_of_writing_a_field() -> None:
    source = "\n".join((
        "record.reason = 'x'",
        "self._record.prompt_tokens, self._record.completion_tokens = usage",
        "record.waited_seconds += 1.0",
        "outcome.failed_over.append('cerebras')",
        "self.record.continuations[0] = ('cerebras', '503')",
        "setattr(record, 'account', 'chutes')",
        "del record.cached_tokens",
        "self.provider = 'cerebras'",  # a class's own attribute: not the record's
        "record.status = 200",  # not a field of the record
        "share.provider = settings",  # named as another type's below
    ))
    assert record_writes(source, frozenset({"share.provider"})) == [
        (1, "reason"), (2, "completion_tokens"), (2, "prompt_tokens"), (3, "waited_seconds"), (4, "failed_over"),
        (5, "continuations"), (6, "account"), (7, "cached_tokens"),
    ]
