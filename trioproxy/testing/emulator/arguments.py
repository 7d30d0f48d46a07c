"""Tool-call arguments that satisfy the JSON Schema a tool offers, deterministically.

The emulated model has no intent, so it fills what the schema demands and nothing more: the
`required` properties of objects, one item per array (or `minItems`), and for each value the
first of `const`, `default`, `enum`, `examples`, then the first branch of `anyOf`/`oneOf`, then
a plain value of the type: the string "emulated" (shaped by `format` and the length bounds),
the number 1 moved into its bounds, `false`, `null`. Local `$ref`s are followed; recursion
stops at `_MAX_DEPTH` with the emptiest value of the type.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .actions import Json

_MAX_DEPTH = 12
_WORD = "emulated"
_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "duration": "PT1S",
    "email": "emulated@example.com",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/emulated",
    "url": "https://example.com/emulated",
    "uri-reference": "/emulated",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def tool_arguments(parameters: Any) -> str:
    """The JSON text of the arguments object for a tool whose parameters are `parameters`."""
    value = _value(parameters, parameters, 0, 0) if isinstance(parameters, dict) else {}
    return json.dumps(value if isinstance(value, dict) else {})


def _value(schema: Any, root: Json, depth: int, index: int) -> Any:
    """A value valid for `schema`; `index` tells apart the items of one array."""
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return _WORD  # `true`, `{}`-like or broken schemas accept any value; a loop stops
    schema = _resolved(schema, root)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    for key in ("enum", "examples", "anyOf", "oneOf"):
        choices = schema.get(key)
        if isinstance(choices, list) and choices:
            if key in ("enum", "examples"):
                return choices[min(index, len(choices) - 1)]
            return _value({**_without(schema, key), **_resolved(choices[0], root)}, root,
                          depth + 1, index)
    if isinstance(schema.get("allOf"), list):
        return _value(_merged(schema, root), root, depth + 1, index)
    kind = _type(schema)
    if kind == "object":
        return _object(schema, root, depth)
    if kind == "array":
        return _array(schema, root, depth)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer", index)
    if kind == "boolean":
        return index % 2 == 1
    if kind == "null":
        return None
    return _string(schema, index)


def _resolved(schema: Any, root: Json) -> Json:
    """`schema` with a local `$ref` ("#/$defs/x", "#/definitions/x") replaced by its target."""
    if not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    for _ in range(_MAX_DEPTH):  # refs to refs, but never forever
        if not isinstance(ref, str) or not ref.startswith("#"):
            break
        target: Any = root
        for part in filter(None, ref[1:].split("/")):
            target = target.get(part.replace("~1", "/").replace("~0", "~")) \
                if isinstance(target, dict) else None
        if not isinstance(target, dict):
            break
        schema = {**_without(schema, "$ref"), **target}
        ref = target.get("$ref")
    return schema


def _without(schema: Json, key: str) -> Json:
    return {name: value for name, value in schema.items() if name != key}


def _merged(schema: Json, root: Json) -> Json:
    """One schema holding every `allOf` part: later keys win, properties and required add up."""
    merged = _without(schema, "allOf")
    for part in (_resolved(part, root) for part in schema["allOf"]):
        properties = {**merged.get("properties", {}), **part.get("properties", {})}
        required = [*merged.get("required", []), *part.get("required", [])]
        merged = {**merged, **part, "properties": properties, "required": required}
    return merged


def _type(schema: Json) -> str:
    """The type to produce: the first non-null one named, else what the keywords imply."""
    kind = schema.get("type")
    if isinstance(kind, list):
        named = [k for k in kind if k != "null"] or kind
        kind = named[0] if named else None
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _object(schema: Json, root: Json, depth: int) -> Json:
    """The required properties, in the order `required` names them."""
    if depth >= _MAX_DEPTH:
        return {}
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = [str(name) for name in schema.get("required") or [] if isinstance(name, str)]
    return {name: _value(properties.get(name, {}), root, depth + 1, 0)
            for name in dict.fromkeys(required)}


def _array(schema: Json, root: Json, depth: int) -> list[Any]:
    """`minItems` items (at least one, at most `maxItems`), tuple positions first."""
    if depth >= _MAX_DEPTH:
        return []
    prefix = schema.get("prefixItems")
    items = schema.get("items")
    if isinstance(items, list):  # the older tuple form
        prefix, items = items, schema.get("additionalItems", {})
    prefix = prefix if isinstance(prefix, list) else []
    wanted = max(_int(schema.get("minItems"), 1), len(prefix), 1)
    limit = _int(schema.get("maxItems"), wanted)
    count = min(wanted, limit)
    return [_value(prefix[i] if i < len(prefix) else items, root, depth + 1, i)
            for i in range(count)]


def _number(schema: Json, integer: bool, index: int) -> int | float:
    """1 + index, moved into the bounds and onto the steps (`multipleOf`; 1 for integers)."""
    low = _bound(schema, "minimum", "exclusiveMinimum")
    high = _bound(schema, "maximum", "exclusiveMaximum")
    step = schema.get("multipleOf")
    step = step if _is_number(step) and step > 0 else (1 if integer else None)
    value: float = 1 + index
    if low is not None:
        value = max(value, low[0])
    if high is not None:
        value = min(value, high[0])
    if step is not None:
        value = math.ceil(value / step) * step
        value += step if _breaks(value, low, lower=True) else 0
        value -= step if _breaks(value, high, lower=False) else 0
    elif _breaks(value, low, lower=True) or _breaks(value, high, lower=False):
        # Sitting on an exclusive bound: step inside it.
        value = (low[0] + high[0]) / 2 if low and high else (low[0] + 1 if low else high[0] - 1)
    return int(value) if integer and float(value).is_integer() else value


def _bound(schema: Json, inclusive: str, exclusive: str) -> tuple[float, bool] | None:
    """(limit, is_exclusive) from either draft's way of writing a bound, or None."""
    if _is_number(schema.get(exclusive)):
        return schema[exclusive], True
    if _is_number(schema.get(inclusive)):
        return schema[inclusive], schema.get(exclusive) is True  # draft 4: a boolean flag
    return None


def _breaks(value: float, bound: tuple[float, bool] | None, *, lower: bool) -> bool:
    """Whether `value` lies outside a lower (or upper) bound."""
    if bound is None:
        return False
    limit, exclusive = bound
    if value == limit:
        return exclusive
    return value < limit if lower else value > limit


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(value: Any, fallback: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else fallback


def _string(schema: Json, index: int) -> str:
    """A string for the `format`, else "emulated" (numbered after the first array item),
    stretched or cut to the length bounds."""
    text = _FORMATS.get(str(schema.get("format")), _WORD if index == 0 else f"{_WORD}-{index}")
    shortest, longest = _int(schema.get("minLength"), 0), schema.get("maxLength")
    if len(text) < shortest:
        text = (text + "-" + _WORD * (shortest // len(_WORD) + 1))[:shortest]
    if isinstance(longest, int) and len(text) > longest:
        text = text[:max(0, longest)]
    return text
