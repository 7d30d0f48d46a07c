"""Settings: defaults, the TOML file, .env and environment overrides, and one-line refusals."""

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from support.settings import load, refusal
from trioproxy.config.env import ENV_VARS
from trioproxy.config.schema import Adaptation, Config, ModelRoute, ProviderConfig, RateLimitHeaders, RouteProvider
from trioproxy.config.validators import ConfigError
from trioproxy.config.load import load_config
from trioproxy.config.redaction import redacted

EXAMPLE = Path(__file__).resolve().parents[2] / "config.toml.example"


def _toml_value(value: Any) -> str:
    """A Python value as a TOML literal (enough for these tests: str, bool, int, list)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return repr(value)


def _toml(tree: Mapping[str, Any], prefix: str = "") -> str:
    """Render a nested dict as TOML: plain keys first, then one table per sub-dict."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in tree.items() if not isinstance(value, Mapping)]
    for key, value in tree.items():
        if isinstance(value, Mapping):
            name = f"{prefix}{key}"
            lines.append(f"\n[{name}]")
            lines.append(_toml(value, name + "."))
    return "\n".join(lines) + "\n"


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {path[-1]: value}
    for key in reversed(path[:-1]):
        tree = {key: tree}
    return tree


def _get(config: Config, path: tuple[str, ...]) -> Any:
    node: Any = config
    for key in path:
        node = getattr(node, key)
    return node


# --- defaults -------------------------------------------------------------------------------


def test_defaults_equal_the_original_design(tmp_path: Path) -> None:
    """With no file and no environment, the settings are the original proxy's defaults."""
    config = load(tmp_path)
    assert config == Config()
    assert (config.host, config.port, config.log_level) == ("127.0.0.1", 3000, "INFO")
    assert config.proxy_model_name == "qwen-3-coder"
    assert config.request_timeout_ms == 30_000
    assert config.cooldown_period_ms == 300_000
    cerebras, chutes = config.cerebras, config.chutes
    # Candidates: today's catalogue first, the original model kept last for accounts that list it.
    assert cerebras.model[0] == "gpt-oss-120b" and cerebras.model[-1] == "qwen-3-coder-480b"
    assert cerebras.base_url == "https://api.cerebras.ai/v1"
    # No ceilings: the code plan's figures start the count until Cerebras states its limits.
    assert (cerebras.requests_per_minute, cerebras.tokens_per_minute, cerebras.tokens_per_day) == (None, None, None)
    assert cerebras.plan == "code-pro" and chutes.plan is None
    assert cerebras.api_key == ""
    assert chutes.model[0] == "Qwen/Qwen3-Coder-Next-TEE"
    assert chutes.model[-1] == "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8"
    assert chutes.base_url == "https://llm.chutes.ai/v1"
    assert chutes.api_key == ""
    assert [p.name for p in config.providers] == ["cerebras", "chutes"]


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    """An empty TOML file is valid and changes nothing."""
    assert load(tmp_path, "") == Config()


# --- the TOML file --------------------------------------------------------------------------


def test_toml_values_apply(tmp_path: Path) -> None:
    """Values in the TOML file, top level and in provider tables, replace the defaults."""
    config = load(
        tmp_path,
        """
        host = "0.0.0.0"
        port = 8080
        log_level = "DEBUG"
        proxy_model_name = "coder"
        request_timeout_ms = 5000
        cooldown_period_ms = 60000
        max_body_bytes = 1024

        [cerebras]
        base_url = "http://cerebras.internal/v1"
        model = "qwen-3-coder-other"
        requests_per_minute = 3
        tokens_per_minute = 1000
        tokens_per_day = 50000

        [cerebras.adaptation]
        drop_fields = ["store"]

        [chutes]
        base_url = "https://chutes.example/v1"
        model = "Qwen/Other"
        requests_per_minute = 30
        """,
    )
    assert (config.host, config.port, config.log_level) == ("0.0.0.0", 8080, "DEBUG")
    assert config.proxy_model_name == "coder"
    assert (config.request_timeout_ms, config.cooldown_period_ms, config.max_body_bytes) == (5000, 60000, 1024)
    assert config.cerebras.base_url == "http://cerebras.internal/v1"
    assert config.cerebras.model == ("qwen-3-coder-other",)
    assert (config.cerebras.requests_per_minute, config.cerebras.tokens_per_minute) == (3, 1000)
    assert config.cerebras.tokens_per_day == 50000
    assert config.cerebras.adaptation.drop_fields == ("store",)
    # keys of a table the file does not mention keep their defaults
    assert config.cerebras.adaptation.strip_tool_strict is True
    assert config.cerebras.adaptation.allowed_tool_choice == ("auto", "none")
    assert config.chutes.base_url == "https://chutes.example/v1"
    assert config.chutes.model == ("Qwen/Other",)
    assert config.chutes.requests_per_minute == 30
    assert config.chutes.request_stream_usage is True


# --- environment overrides ------------------------------------------------------------------


def _value_for(name: str, kind: type, variant: int) -> str:
    """A valid raw value for env var `name`; `variant` picks one of two distinct values."""
    if name == "LOG_LEVEL":
        return ("ERROR", "DEBUG")[variant]
    if name == "LOG_FORMAT":
        return ("json", "text")[variant]
    if name == "REDIS_URL":
        return f"redis://10.0.0.{variant + 1}:6379/0"
    if name == "QUOTA_BACKEND":
        return ("redis", "memory")[variant]
    if name == "REDIS_OUTAGE":
        return ("refuse", "local")[variant]
    if name == "CEREBRAS_PLAN":
        return ("code-max", "free")[variant]
    if name == "HOSTED_TOOLS":
        return ("refuse", "drop")[variant]
    if name.endswith("_BASE_URL"):
        return f"http://10.0.0.{variant + 1}:8{variant}/v1"
    if kind is int:
        return str(4000 + variant)
    if kind is tuple:
        return f"{name.lower()}-a{variant}, {name.lower()}-b{variant}"
    return f"{name.lower()}-value-{variant}"


def _parsed(raw: str, kind: type) -> Any:
    if kind is tuple:
        return [item.strip() for item in raw.split(",")]
    return int(raw) if kind is int else raw


def _as_read(value: Any) -> Any:
    """Lists come back from the settings as tuples."""
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.parametrize("name", sorted(ENV_VARS))
def test_every_env_var_overrides_the_file(tmp_path: Path, name: str) -> None:
    """Each documented environment variable wins over the same key set in the TOML file."""
    path, kind = ENV_VARS[name]
    file_raw, env_raw = _value_for(name, kind, 0), _value_for(name, kind, 1)
    tree = _nested(path, _parsed(file_raw, kind))
    if name == "QUOTA_BACKEND":
        tree["redis_url"] = "redis://10.0.0.9:6379/0"  # "redis" needs one
    if name == "REDIS_SENTINEL_PASSWORD":
        tree["redis_url"] = "redis+sentinel://10.0.0.9:26379/ledger"  # read only with sentinels
    toml = _toml(tree)
    assert _get(load(tmp_path, toml), path) == _as_read(_parsed(file_raw, kind)), "the file value should apply alone"
    config = load(tmp_path, toml, environ={name: env_raw})
    assert _get(config, path) == _as_read(_parsed(env_raw, kind))


def test_env_var_names_of_the_original_design() -> None:
    """The environment variable names users of the original proxy already set are all honoured."""
    expected = {
        "PORT": ("port",),
        "HOST": ("host",),
        "LOG_LEVEL": ("log_level",),
        "PROXY_MODEL_NAME": ("proxy_model_name",),
        "REQUEST_TIMEOUT": ("request_timeout_ms",),
        "COOLDOWN_PERIOD": ("cooldown_period_ms",),
        "CEREBRAS_API_KEY": ("cerebras", "api_key"),
        "CEREBRAS_MODEL_NAME": ("cerebras", "model"),
        "CEREBRAS_REQUESTS_PER_MINUTE": ("cerebras", "requests_per_minute"),
        "CEREBRAS_TOKENS_PER_MINUTE": ("cerebras", "tokens_per_minute"),
        "CEREBRAS_TOKENS_PER_DAY": ("cerebras", "tokens_per_day"),
        "CHUTES_API_KEY": ("chutes", "api_key"),
        "CHUTES_MODEL_NAME": ("chutes", "model"),
    }
    for name, path in expected.items():
        assert name in ENV_VARS, name
        assert ENV_VARS[name][0] == path, name


def test_model_settings_take_one_id_or_a_list_of_candidates(tmp_path: Path) -> None:
    """`model` is one id or candidates in order, in the file (providers and route providers) and
    in the original environment names (a comma list); an empty list or id is refused by key."""
    config = load(tmp_path, toml='[cerebras]\nmodel = ["a", "b"]\n[[models]]\nname = "m"\n'
                                 'providers = [{ provider = "chutes", model = "c" }, { provider = "cerebras" }]\n')
    assert config.cerebras.model == ("a", "b")
    assert [entry.model for entry in config.models[0].providers] == [("c",), None]
    assert load(tmp_path, environ={"CEREBRAS_MODEL_NAME": "x, y"}).cerebras.model == ("x", "y")
    assert load(tmp_path, environ={"CHUTES_MODEL_NAME": "Qwen/One"}).chutes.model == ("Qwen/One",)
    for toml, key in (('[chutes]\nmodel = []\n', "chutes.model"), ('[chutes]\nmodel = [""]\n', "chutes.model"),
                      ('[chutes]\nmodel = [1]\n', "chutes.model")):
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: "):
            load(tmp_path, toml=toml)


def test_precedence_file_then_dotenv_then_environment(tmp_path: Path) -> None:
    """A key set in all three places takes the environment's value; .env beats the file."""
    toml = 'port = 1111\nhost = "10.1.1.1"\nproxy_model_name = "from-file"\n'
    dotenv = "PORT=2222\nHOST=10.2.2.2\n"
    config = load(tmp_path, toml, environ={"PORT": "3333"}, dotenv=dotenv)
    assert config.port == 3333  # environment > .env > file
    assert config.host == "10.2.2.2"  # .env > file
    assert config.proxy_model_name == "from-file"  # file > defaults


def test_dotenv_is_read_with_quotes_export_and_comments(tmp_path: Path) -> None:
    """A .env file with comments, quoted values and `export` lines sets the settings."""
    dotenv = (
        "# keys for trioproxy\n"
        'export CEREBRAS_API_KEY="csk-dotenv-key"\n'
        "CHUTES_API_KEY='cpk_dotenv key with spaces'\n"
        "export PORT=4545\n"
        'CHUTES_MODEL_NAME="Qwen/From-Dotenv"  # trailing comment\n'
        "\n"
        "LOG_LEVEL=debug\n"
    )
    config = load(tmp_path, dotenv=dotenv)
    assert config.cerebras.api_key == "csk-dotenv-key"
    assert config.chutes.api_key == "cpk_dotenv key with spaces"
    assert config.port == 4545
    assert config.chutes.model == ("Qwen/From-Dotenv",)
    assert config.log_level == "DEBUG"


def test_missing_dotenv_is_fine(tmp_path: Path) -> None:
    """No .env file at the given path is not an error."""
    config = load_config(None, environ={"PORT": "4000"}, dotenv_path=tmp_path / "absent" / ".env")
    assert config.port == 4000


@pytest.mark.parametrize(("raw", "level"), [("info", "INFO"), ("debug", "DEBUG"), ("WARNING", "WARN"), ("warning", "WARN"), ("Warn", "WARN"), ("error", "ERROR")])
def test_log_level_env_accepts_lower_case_and_warning(tmp_path: Path, raw: str, level: str) -> None:
    """LOG_LEVEL is case-insensitive and accepts WARNING for WARN."""
    assert load(tmp_path, environ={"LOG_LEVEL": raw}).log_level == level


def test_empty_env_value_means_unset(tmp_path: Path) -> None:
    """An environment variable set to an empty string leaves the file's value in place."""
    assert load(tmp_path, "port = 5555\n", environ={"PORT": ""}).port == 5555


# --- refusals -------------------------------------------------------------------------------


def _assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("colour = 'blue'\n", "colour"),
        ("[cerebras]\nrpm = 5\n", "cerebras.rpm"),
        ("[chutes.adaptation]\ndrop = []\n", "chutes.adaptation.drop"),
        ("[openrouter]\nmodel = 'x'\n", "openrouter"),
    ],
)
def test_unknown_key_is_refused(tmp_path: Path, toml: str, key: str) -> None:
    """A key the settings do not have (a typo) is refused, naming the key and the file."""
    message = refusal(tmp_path, toml)
    _assert_names(message, key, str(tmp_path / "config.toml"))
    assert "unknown" in message


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('port = "3000"\n', "port"),
        ("port = true\n", "port"),
        ("port = 3000.5\n", "port"),
        ("request_timeout_ms = false\n", "request_timeout_ms"),
        ('[cerebras]\nrequests_per_minute = "12"\n', "cerebras.requests_per_minute"),
        ("[cerebras]\ntokens_per_day = true\n", "cerebras.tokens_per_day"),
        ("host = 127\n", "host"),
        ("[chutes]\nmodel = 5\n", "chutes.model"),
        ("[chutes]\nrequest_stream_usage = 1\n", "chutes.request_stream_usage"),
        ('[cerebras.adaptation]\ndrop_fields = "store"\n', "cerebras.adaptation.drop_fields"),
        ("cerebras = 5\n", "cerebras"),
        ('chutes = "off"\n', "chutes"),
    ],
)
def test_wrong_type_is_refused(tmp_path: Path, toml: str, key: str) -> None:
    """A value of the wrong type (string or bool for a number, etc.) is refused, not coerced."""
    _assert_names(refusal(tmp_path, toml), key, str(tmp_path / "config.toml"))


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[cerebras]\nrequests_per_minute = -1\n", "cerebras.requests_per_minute"),
        ("[cerebras]\ntokens_per_minute = 0\n", "cerebras.tokens_per_minute"),
        ("[chutes]\ntokens_per_day = -100\n", "chutes.tokens_per_day"),
        ("request_timeout_ms = -5\n", "request_timeout_ms"),
        ("cooldown_period_ms = 0\n", "cooldown_period_ms"),
        ("max_body_bytes = -1\n", "max_body_bytes"),
        ("port = -1\n", "port"),
        ("port = 65536\n", "port"),
        ('log_level = "LOUD"\n', "log_level"),
        ('[cerebras]\nbase_url = "ftp://api.cerebras.ai/v1"\n', "cerebras.base_url"),
        ('[chutes]\nbase_url = "llm.chutes.ai/v1"\n', "chutes.base_url"),
    ],
)
def test_invalid_value_in_file_is_refused(tmp_path: Path, toml: str, key: str) -> None:
    """Negative limits, bad ports, unknown log levels and non-HTTP URLs are refused, naming key and file."""
    _assert_names(refusal(tmp_path, toml), key, str(tmp_path / "config.toml"))


@pytest.mark.parametrize(
    ("name", "raw", "key"),
    [
        ("PORT", "70000", "port"),
        ("PORT", "-1", "port"),
        ("LOG_LEVEL", "verbose", "log_level"),
        ("CEREBRAS_BASE_URL", "ftp://x/v1", "cerebras.base_url"),
        ("CHUTES_BASE_URL", "llm.chutes.ai", "chutes.base_url"),
        ("CEREBRAS_REQUESTS_PER_MINUTE", "-3", "cerebras.requests_per_minute"),
        ("CEREBRAS_TOKENS_PER_DAY", "0", "cerebras.tokens_per_day"),
        ("REQUEST_TIMEOUT", "0", "request_timeout_ms"),
    ],
)
def test_invalid_env_value_names_the_variable(tmp_path: Path, name: str, raw: str, key: str) -> None:
    """A bad value from the environment is refused, naming the key and the variable, not the file."""
    message = refusal(tmp_path, "port = 3000\n", environ={name: raw})
    _assert_names(message, key, name)
    assert str(tmp_path / "config.toml") not in message


@pytest.mark.parametrize("name", sorted(n for n, (_, kind) in ENV_VARS.items() if kind is int))
@pytest.mark.parametrize("raw", ["abc", "12.5", "1e3", "true"])
def test_non_numeric_env_value_is_refused(tmp_path: Path, name: str, raw: str) -> None:
    """A numeric environment variable that is not a whole number is refused, naming the variable."""
    message = refusal(tmp_path, environ={name: raw})
    _assert_names(message, name, raw)


def test_invalid_dotenv_value_names_the_variable(tmp_path: Path) -> None:
    """A bad value from .env is refused, naming the variable."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, dotenv="PORT=lots\n")
    message = str(caught.value)
    assert "\n" not in message
    _assert_names(message, "PORT", "lots")


@pytest.mark.parametrize("toml", ['port = "3001"\n', "port = 99999\n"])
def test_a_bad_file_value_is_refused_even_when_the_environment_overrides_it(tmp_path: Path, toml: str) -> None:
    """The file is wrong whatever the environment says today (it may not say it after a restart)."""
    message = refusal(tmp_path, toml, environ={"PORT": "3005"})
    _assert_names(message, "port", str(tmp_path / "config.toml"))


def test_file_error_names_the_file_when_env_sets_other_keys(tmp_path: Path) -> None:
    """A bad key in the file is blamed on the file even when the environment sets other keys."""
    message = refusal(tmp_path, "[cerebras]\ntokens_per_minute = -1\n", environ={"PORT": "8000", "CEREBRAS_REQUESTS_PER_MINUTE": "5"})
    _assert_names(message, "cerebras.tokens_per_minute", str(tmp_path / "config.toml"))
    assert "CEREBRAS_REQUESTS_PER_MINUTE" not in message


@pytest.mark.parametrize("toml", ["port = \n", "[cerebras\nmodel = 'x'\n", "host = 'a' 'b'\n", "port = 1\nport = 2\n"])
def test_invalid_toml_is_refused(tmp_path: Path, toml: str) -> None:
    """A file that is not valid TOML is refused in one line naming the file."""
    message = refusal(tmp_path, toml)
    _assert_names(message, str(tmp_path / "config.toml"))
    assert "TOML" in message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    """A --config path that does not exist is refused in one line naming the path."""
    missing = tmp_path / "nope" / "config.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing, environ={}, dotenv_path=tmp_path / "test.env")
    message = str(caught.value)
    assert "\n" not in message
    _assert_names(message, str(missing), "not found")


# --- secrets --------------------------------------------------------------------------------


def test_redacted_never_contains_key_values(tmp_path: Path) -> None:
    """The printable settings show whether each key is set, never the key itself."""
    cerebras_key, chutes_key = "csk-very-secret-1234", "cpk_other-secret-5678"
    config = load(
        tmp_path,
        f'[chutes]\napi_key = "{chutes_key}"\n',
        environ={"CEREBRAS_API_KEY": cerebras_key},
    )
    assert (config.cerebras.api_key, config.chutes.api_key) == (cerebras_key, chutes_key)
    tree = redacted(config)
    text = json.dumps(tree)
    for secret in (cerebras_key, chutes_key, "very-secret", "other-secret"):
        assert secret not in text
    assert tree["cerebras"]["api_key"] == "<set>"
    assert tree["chutes"]["api_key"] == "<set>"
    assert tree["port"] == config.port
    assert tuple(tree["cerebras"]["model"]) == config.cerebras.model
    unset = redacted(load(tmp_path))
    assert unset["cerebras"]["api_key"] != "<set>"
    assert unset["chutes"]["api_key"] != "<set>"


def test_repr_does_not_show_keys(tmp_path: Path) -> None:
    """Printing the settings object (e.g. in a traceback or debug log) does not reveal a key."""
    config = load(tmp_path, environ={"CEREBRAS_API_KEY": "csk-repr-secret", "CHUTES_API_KEY": "cpk_repr-secret"})
    assert "repr-secret" not in repr(config)


# --- config.toml.example --------------------------------------------------------------------


def test_example_file_loads_to_exactly_the_defaults(tmp_path: Path) -> None:
    """The shipped config.toml.example is valid and changes nothing when loaded unchanged."""
    assert EXAMPLE.is_file()
    assert load_config(EXAMPLE, environ={}, dotenv_path=tmp_path / "test.env") == Config()


def _mentions_key(text: str, key: str) -> bool:
    """`key = ...`, or `[[key]]` for an array of tables, possibly commented out."""
    pattern = rf"^\s*#?\s*({re.escape(key)}\s*=|\[\[{re.escape(key)}\]\])"
    return re.search(pattern, text, re.MULTILINE) is not None


def test_example_file_documents_every_setting() -> None:
    """Every settings key and every environment variable name appears in config.toml.example."""
    text = EXAMPLE.read_text()
    for cls in (Config, ProviderConfig, Adaptation, RateLimitHeaders, ModelRoute, RouteProvider):
        for attribute in attrs.fields(cls):
            if isinstance(attribute.type, type) and attrs.has(attribute.type):
                continue  # tables, checked below
            assert _mentions_key(text, attribute.name), f"{cls.__name__}.{attribute.name} not documented"
    for table in ("cerebras", "chutes", "cerebras.adaptation", "chutes.adaptation", "cerebras.rate_limit_headers"):
        assert re.search(rf"^\[{re.escape(table)}\]", text, re.MULTILINE), f"[{table}] missing"
    for name in ENV_VARS:
        assert re.search(rf"\b{name}\b", text), f"env var {name} not mentioned"


# --- providers as data ------------------------------------------------------------------------


def test_a_third_provider_is_added_by_configuration_alone(tmp_path: Path) -> None:
    """[[extra_providers]] with its own limits and headers; its key from <NAME>_API_KEY; order by name."""
    toml = """
provider_order = ["cerebras", "my-groq", "chutes"]
[[extra_providers]]
name = "my-groq"
base_url = "http://127.0.0.1:9/v1"
model = "qwen/qwen3-coder"
requests_per_minute = 30
[extra_providers.rate_limit_headers]
remaining_requests_minute = "x-ratelimit-remaining-requests"
reset_requests_minute = "x-ratelimit-reset-requests"
"""
    config = load(tmp_path, toml, environ={"MY_GROQ_API_KEYS": "gsk-1, gsk-2"})
    assert [p.name for p in config.providers] == ["cerebras", "my-groq", "chutes"]
    groq = config.providers[1]
    assert groq.keys == ("gsk-1", "gsk-2") and groq.requests_per_minute == 30
    assert groq.rate_limit_headers.pairs()["rpm"] == ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
    assert "gsk-1" not in json.dumps(redacted(config))


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('provider_order = ["chutes", "nobody"]', "provider_order"),
        ('[[extra_providers]]\nname = "chutes"\nbase_url = "http://x/v1"\nmodel = "m"', "extra_providers"),
        ('[[extra_providers]]\nname = "x"\nbase_url = "http://x/v1"', "extra_providers.0.model"),
        ('[cerebras]\nname = "renamed"', "cerebras.name"),
    ],
)
def test_provider_list_mistakes_are_refused_by_key(tmp_path: Path, toml: str, key: str) -> None:
    """An unknown name in the order, a duplicate or incomplete provider: one line naming the key."""
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, toml)
    assert str(refused.value).startswith(f"{key}:")
