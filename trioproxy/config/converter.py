"""The cattrs converter settings are built and written with: strict types, a model setting as one
id or a list."""

from typing import Any

import cattrs

from .schema import Candidates, candidates


def _strict_converter() -> cattrs.Converter:
    """A converter that refuses wrong types instead of coercing them ("12" is not an int)."""
    converter = cattrs.Converter(forbid_extra_keys=True)

    def exact(kind: type) -> Any:
        def structure(value: Any, _: type) -> Any:
            # bool is an int subclass; `port = true` is a mistake, not port 1.
            if type(value) is not kind and not (kind is float and type(value) is int):
                raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
            return kind(value)

        return structure

    for kind in (int, float, str, bool):
        converter.register_structure_hook(kind, exact(kind))
    converter.register_structure_hook_func(
        lambda kind: kind == tuple[str, ...], lambda value, _: _string_tuple(value)
    )
    converter.register_structure_hook(Candidates, lambda value, _: _model_setting(value))
    return converter


def _string_tuple(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError("expected a list of strings")
    return tuple(value)


def _model_setting(value: Any) -> Candidates:
    if isinstance(value, str):
        return candidates(value)
    try:
        return candidates(_string_tuple(value))
    except TypeError:
        raise TypeError("expected a model id or a list of model ids") from None


CONVERTER = _strict_converter()
