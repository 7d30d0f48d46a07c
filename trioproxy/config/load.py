"""Loading settings: defaults, the TOML file, a `.env` file in the working directory, the process
environment and command-line flags, lowest first. Every refusal names the key and where its
value came from.
"""

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from .converter import CONVERTER
from .env import env_overrides, extra_provider_keys_from_env
from .schema import Config
from .validators import ConfigError, InvalidValue


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _default_tree() -> dict[str, Any]:
    return CONVERTER.unstructure(Config())


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _first_error(exc: BaseException, path: tuple[str, ...] = ()) -> tuple[tuple[str, ...], str]:
    """Dig the first leaf error out of cattrs' exception groups, with the key path to it."""
    if isinstance(exc, ForbiddenExtraKeysError):
        return path + (sorted(exc.extra_fields)[0],), "unknown key"
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        for sub in exc.exceptions:
            note = next((n for n in getattr(sub, "__notes__", []) if "attribute" in n or "index" in n), "")
            attr = getattr(note, "name", None) or _attribute_from_note(note)
            return _first_error(sub, path + ((attr,) if attr else ()))
    if isinstance(exc, InvalidValue):
        return path + (exc.key,), str(exc)
    if isinstance(exc, AttributeError) and exc.name == "keys":  # cattrs read a table's keys from a non-table
        return path, f"expected a table, got {_TOML_NAMES.get(type(exc.obj), type(exc.obj).__name__)}"
    if isinstance(exc, KeyError):
        key = str(exc.args[0])
        return (path if path[-1:] == (key,) else path + (key,)), "missing required value"
    return path, str(exc)


_TOML_NAMES = {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "an array"}


def _attribute_from_note(note: str) -> str | None:
    # cattrs notes read "Structuring class Config @ attribute port" or "... @ index 0".
    for marker in ("@ attribute ", "@ index "):
        if marker in note:
            return note.split(marker, 1)[1].strip()
    return None


def load_config(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective settings, or raise ConfigError with one line naming the key and
    where its value came from. The Config returned is new and frozen: share it freely.

    `flags` are command-line settings (`{"port": 3005}`); they win over everything else.
    """
    from dotenv import dotenv_values  # handles quoting, `export`, comments the way users expect

    process_env = os.environ if environ is None else environ
    dotenv_file = dotenv_path if dotenv_path is not None else Path.cwd() / ".env"
    from_dotenv: dict[str, str] = {}
    if dotenv_file.is_file():
        from_dotenv = {k: v for k, v in dotenv_values(dotenv_file).items() if v is not None}
    env = {**from_dotenv, **process_env}
    dotenv_names = frozenset(name for name in from_dotenv if name not in process_env)

    file_tree = _read_toml(path) if path is not None else {}
    extra_provider_keys_from_env(file_tree, env)
    env_tree, sources = env_overrides(env, dotenv_names)
    flag_tree = {key: value for key, value in (flags or {}).items() if value is not None}
    sources.update({key: f"--{key}" for key in flag_tree})
    file_label = str(path) if path is not None else "defaults"
    effective = _structure(_merge(_merge(_merge(_default_tree(), file_tree), env_tree), flag_tree), sources, file_label)
    # A value in the file that the environment overrides is still wrong: check the file's values
    # winning over the rest too (the rest fills what the file leaves out, e.g. REDIS_URL).
    _structure(_merge(_merge(_merge(_default_tree(), env_tree), flag_tree), file_tree), {}, file_label)
    return effective


def _structure(tree: dict[str, Any], sources: Mapping[str, str], file_label: str) -> Config:
    try:
        return CONVERTER.structure(tree, Config)
    except Exception as exc:  # cattrs raises groups of many kinds; reduce them to one line
        key_path, reason = _first_error(exc)
        dotted = ".".join(key_path) or "(top level)"
        source = sources.get(dotted, file_label)
        raise ConfigError(f"{dotted}: {reason} (from {source})") from None
