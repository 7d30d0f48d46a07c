"""Settings loaded from a TOML text, explicit environment and `.env`, never the real environment;
and the one-line refusal loading must raise."""

from collections.abc import Mapping
from pathlib import Path

import pytest

from trioproxy.config.schema import Config
from trioproxy.config.validators import ConfigError
from trioproxy.config.load import load_config


def load(
    tmp_path: Path,
    toml: str | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv: str | None = None,
) -> Config:
    """load_config on a TOML text (or no file), explicit environ and .env; never the real environment."""
    config_path = None
    if toml is not None:
        config_path = tmp_path / "config.toml"
        config_path.write_text(toml)
    dotenv_path = tmp_path / "test.env"
    if dotenv is not None:
        dotenv_path.write_text(dotenv)
    return load_config(config_path, environ=dict(environ or {}), dotenv_path=dotenv_path)


def refusal(tmp_path: Path, toml: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The message of the ConfigError that loading must raise; checks that it is one line."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, toml, environ)
    message = str(caught.value)
    assert "\n" not in message, f"message is not one line: {message!r}"
    return message
