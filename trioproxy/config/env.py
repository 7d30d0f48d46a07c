"""Settings from the environment (and `.env`): the original design's variable names, and each
provider's `<PREFIX>_API_KEY(S)`."""

from collections.abc import Mapping
from typing import Any

from .validators import ConfigError


# Environment variable -> (path in the settings tree, type). Names of the original design.
ENV_VARS: Mapping[str, tuple[tuple[str, ...], type]] = {
    "HOST": (("host",), str),
    "PORT": (("port",), int),
    "LOG_LEVEL": (("log_level",), str),
    "LOG_FORMAT": (("log_format",), str),
    "PROXY_MODEL_NAME": (("proxy_model_name",), str),
    "MODEL_ALIASES": (("model_aliases",), tuple),
    "MODEL_CONTEXT_WINDOW": (("model_context_window",), int),
    "MODEL_MAX_OUTPUT_TOKENS": (("model_max_output_tokens",), int),
    "REQUEST_TIMEOUT": (("request_timeout_ms",), int),
    "FIRST_EVENT_TIMEOUT": (("first_event_timeout_ms",), int),
    "ANSWER_TIMEOUT": (("answer_timeout_ms",), int),
    "STREAM_IDLE_TIMEOUT": (("stream_idle_timeout_ms",), int),
    "COOLDOWN_PERIOD": (("cooldown_period_ms",), int),
    "MAX_BODY_BYTES": (("max_body_bytes",), int),
    "STATE_FILE": (("state_file",), str),
    "QUOTA_BACKEND": (("quota_backend",), str),
    "REDIS_URL": (("redis_url",), str),
    "REDIS_SENTINEL_PASSWORD": (("redis_sentinel_password",), str),
    "REDIS_OUTAGE": (("redis_outage",), str),
    "MAX_WAIT_MS": (("max_wait_ms",), int),
    "HOSTED_TOOLS": (("hosted_tools",), str),
    "PROXY_API_KEYS": (("client_api_keys",), tuple),
    "ALLOWED_HOSTS": (("allowed_hosts",), tuple),
    "ALLOWED_ORIGINS": (("allowed_origins",), tuple),
    "OPERATOR_API_KEYS": (("operator_api_keys",), tuple),
    "CEREBRAS_API_KEY": (("cerebras", "api_key"), str),
    "CEREBRAS_API_KEYS": (("cerebras", "api_keys"), tuple),
    "CEREBRAS_BASE_URL": (("cerebras", "base_url"), str),
    "CEREBRAS_MODEL_NAME": (("cerebras", "model"), tuple),  # one id or a comma list of candidates
    "CEREBRAS_REQUESTS_PER_MINUTE": (("cerebras", "requests_per_minute"), int),
    "CEREBRAS_TOKENS_PER_MINUTE": (("cerebras", "tokens_per_minute"), int),
    "CEREBRAS_UNCACHED_TOKENS_PER_MINUTE": (("cerebras", "uncached_tokens_per_minute"), int),
    "CEREBRAS_TOKENS_PER_DAY": (("cerebras", "tokens_per_day"), int),
    "CEREBRAS_PLAN": (("cerebras", "plan"), str),
    "CHUTES_API_KEY": (("chutes", "api_key"), str),
    "CHUTES_API_KEYS": (("chutes", "api_keys"), tuple),
    "CHUTES_BASE_URL": (("chutes", "base_url"), str),
    "CHUTES_MODEL_NAME": (("chutes", "model"), tuple),
}


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        node = tree.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path[:-1])}: expected a table")
        tree = node
    tree[path[-1]] = value


def parse_env_value(name: str, raw: str, kind: type, origin: str) -> Any:
    """The value of variable `name` as `kind` (int, a comma list as tuple, else the text);
    raises ConfigError naming the variable and `origin` for a number that is none."""
    if kind is int:
        try:
            return int(raw.strip().replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number, got {raw!r} (from {origin})") from None
    if kind is tuple:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw.strip()


def env_overrides(environ: Mapping[str, str], dotenv_names: frozenset[str] = frozenset()) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings tree the environment sets, and the source of each dotted key."""
    tree: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, (path, kind) in ENV_VARS.items():
        raw = environ.get(name)
        if raw is None or raw.strip() == "":
            continue
        origin = ".env" if name in dotenv_names else "the environment"
        value = parse_env_value(name, raw, kind, origin)
        _set_path(tree, path, value)
        sources[".".join(path)] = f"{name} in .env" if name in dotenv_names else f"environment variable {name}"
    return tree, sources


def env_prefix(provider_name: str) -> str:
    """`my-groq` -> `MY_GROQ`: the prefix of a provider's `<PREFIX>_API_KEY(S)` variables."""
    return "".join(ch if ch.isalnum() else "_" for ch in provider_name).upper()


def extra_provider_keys_from_env(tree: dict[str, Any], env: Mapping[str, str]) -> None:
    """Keys of [[extra_providers]] come from `<NAME>_API_KEY` / `<NAME>_API_KEYS`, like the others'."""
    extras = tree.get("extra_providers")
    if not isinstance(extras, list):
        return
    for entry in extras:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        prefix = env_prefix(entry["name"])
        if env.get(f"{prefix}_API_KEY", "").strip():
            entry["api_key"] = env[f"{prefix}_API_KEY"].strip()
        if env.get(f"{prefix}_API_KEYS", "").strip():
            entry["api_keys"] = parse_env_value(f"{prefix}_API_KEYS", env[f"{prefix}_API_KEYS"], tuple, "the environment")
