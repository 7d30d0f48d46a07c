"""Command line: parse arguments, load settings, and run the supervisor. Exit codes: 0 ok, 2 usage/config."""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

import httpx
import trio

from . import __version__
from .config import Config, ConfigError, load_config, redacted, secrets
from .logs import configure_logging
from .status import fetch_status, render_table
from .supervisor import supervise

EXIT_USAGE = 2

NO_KEYS = (
    "trioproxy: no provider API key is set. Set CEREBRAS_API_KEY and/or CHUTES_API_KEY "
    "(in the environment or a .env file), or run `trioproxy --demo` to try it against "
    "built-in emulated providers."
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One clear line instead of argparse's usage dump."""
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="trioproxy",
        description="OpenAI-compatible proxy for Qwen3-Coder: Cerebras while it has quota, Chutes otherwise.",
    )
    parser.add_argument("--config", type=Path, metavar="PATH", help="TOML settings file (see config.toml.example)")
    parser.add_argument("--demo", action="store_true", help="run against built-in emulated providers; no keys needed")
    parser.add_argument("--check-config", action="store_true", help="validate the settings, print them with secrets redacted, and exit")
    parser.add_argument("--version", action="version", version=f"trioproxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    status = commands.add_parser("status", help="print a running proxy's providers, keys and quota as a table")
    status.add_argument("--url", default="http://127.0.0.1:3000", help="the proxy's address (default %(default)s)")
    status.add_argument("--key", default=None, help="a client key, when the proxy requires one (default: $PROXY_API_KEY)")
    status.add_argument("--json", action="store_true", help="print the raw JSON instead of a table")
    return parser


def _status(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get("PROXY_API_KEY")
    try:
        status = fetch_status(args.url, key)
    except httpx.HTTPStatusError as error:
        print(f"trioproxy: {args.url} answered {error.response.status_code}", file=sys.stderr)
        return 1
    except httpx.HTTPError as error:
        print(f"trioproxy: cannot reach {args.url}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json else render_table(status))
    return 0


def _print_effective(config: Config) -> None:
    print(json.dumps(redacted(config), indent=2))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "status":
        return _status(args)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"trioproxy: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.check_config:
        _print_effective(config)
        return 0
    if not args.demo and not secrets(config):
        print(NO_KEYS, file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.log_level, secrets(config))
    try:
        trio.run(supervise, config, args.demo)
    except (OSError, BaseExceptionGroup) as error:
        bind_error = _os_error_in(error)
        if bind_error is None:
            raise
        # e.g. the port is taken: one line, not a traceback
        print(f"trioproxy: cannot serve on {config.host}:{config.port}: {bind_error.strerror or bind_error}", file=sys.stderr)
        return 1
    return 0


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError inside Trio's (possibly nested) exception groups, if that is what failed."""
    if isinstance(error, OSError):
        return error
    if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        return _os_error_in(error.exceptions[0])
    return None
