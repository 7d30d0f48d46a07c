"""Command line: parse arguments, load settings, and run the supervisor. Exit codes: 0 ok, 2 usage/config."""

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import httpx
import trio

from .. import __version__
from ..process import daemon
from . import catalogue
from ..config.schema import Config
from ..config.validators import ConfigError
from ..config.checks import keyless_route
from ..config.load import load_config
from ..config.redaction import redacted, secrets
from ..process.demo import demo_choices, show_demo_banner
from ..errors import found_in
from ..logs import configure_logging
from ..secrets import Sanitizer
from ..quota.persist import default_state_path
from ..quota.redis.client import QuotaStoreError
from .status_table import fetch_status, render_table
from ..process.supervisor import supervise
from ..process.workers import WorkerStartError, serve_as_worker, supervise_workers

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
        description="A proxy for coding agents (model qwen-3-coder): Cerebras while it has quota, Chutes otherwise.",
    )
    parser.add_argument("--config", type=Path, metavar="PATH", help="TOML settings file (see config.toml.example)")
    parser.add_argument("--host", metavar="HOST", help="address to listen on (wins over HOST and the file)")
    parser.add_argument("--port", type=int, metavar="PORT", help="port to listen on (wins over PORT and the file)")
    parser.add_argument("--demo", action="store_true", help="run against built-in emulated providers; no keys needed")
    parser.add_argument("--check-config", action="store_true", help="validate the settings, print them with secrets redacted, and exit")
    parser.add_argument("--probe", action="store_true", help="with --check-config: also do what `trioproxy models` does")
    parser.add_argument("--daemon", action="store_true", help="detach and run in the background (foreground is the default)")
    parser.add_argument("--pidfile", type=Path, metavar="PATH", help=f"write the pid here (default with --daemon: {default_pidfile()})")
    parser.add_argument("--log-file", type=Path, metavar="PATH", help=f"append logs here (default with --daemon: {default_log_file()})")
    parser.add_argument("--workers", type=_positive_int, metavar="N", help="serve the port with N worker processes (needs quota_backend = \"redis\")")
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # a worker of --workers
    parser.add_argument("--report-fd", type=int, help=argparse.SUPPRESS)  # where a worker says it serves
    parser.add_argument("--lifeline-fd", type=int, help=argparse.SUPPRESS)  # EOF: a worker's supervisor is gone
    parser.add_argument("--version", action="version", version=f"trioproxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    status = commands.add_parser("status", help="print a running proxy's providers, keys and quota as a table")
    status.add_argument("--url", default=None, help="the proxy's address (default: from HOST/PORT/--config, else http://127.0.0.1:3000)")
    status.add_argument("--key", default=None, help="an operator or client key, when the proxy requires one (default: $OPERATOR_API_KEY, $PROXY_API_KEY, then the settings' own keys)")
    status.add_argument("--json", action="store_true", help="print the raw JSON instead of a table")
    commands.add_parser("models", help="ask each provider key which models it offers today, say which serves each route, and print a ready [[models]] block (exit 1 if a route has none)")
    stop_command = commands.add_parser("stop", help="stop a trioproxy started with --daemon (SIGTERM, then wait)")
    # SUPPRESS: `trioproxy --pidfile X stop` keeps the X given before the command.
    stop_command.add_argument("--pidfile", type=Path, default=argparse.SUPPRESS, help=f"default {default_pidfile()}")
    stop_command.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default %(default)s)")
    return parser


def _positive_int(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {raw!r}")
    return int(raw)


def _workers_refusal(workers: int, config: Config, demo: bool) -> str | None:
    """Why `workers` processes cannot serve these settings, if they cannot."""
    if workers > 1 and config.quota_backend == "memory":
        return (
            f"workers {workers}: each process would spend the whole quota on its own (memory ledger); "
            'set quota_backend = "redis" and redis_url (docs/scaling.md)'
        )
    if workers > 1 and demo:
        return f"workers {workers}: --demo runs in one process"
    return None


def default_pidfile() -> Path:
    """Where `--daemon` writes its pid and `stop` looks for it: beside the state file."""
    return default_state_path().with_name("trioproxy.pid")


def default_log_file() -> Path:
    """Where a daemon's output goes unless `--log-file` says otherwise: beside the state file."""
    return default_state_path().with_name("trioproxy.log")


def _status(args: argparse.Namespace) -> int:
    try:
        config = _load(args)
    except ConfigError as error:
        print(f"trioproxy: {error}", file=sys.stderr)
        return EXIT_USAGE
    url = args.url or local_url(config)
    key = args.key or os.environ.get("OPERATOR_API_KEY") or os.environ.get("PROXY_API_KEY") or _own_key(config)
    try:
        status = fetch_status(url, key)
    except httpx.HTTPStatusError as error:
        print(f"trioproxy: {url} answered {error.response.status_code}", file=sys.stderr)
        return 1
    except httpx.HTTPError as error:
        print(f"trioproxy: cannot reach {url}: {error}", file=sys.stderr)
        return 1
    _output(json.dumps(status, indent=2) if args.json else render_table(status))
    return 0


def local_url(config: Config) -> str:
    """Where a proxy with these settings answers from this machine."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(config.host, config.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{config.port}"


def _own_key(config: Config) -> str | None:
    """A key from the settings the proxy itself reads, so `status` works where it runs."""
    named = tuple(key for client in config.clients for key in client.api_keys)
    return next(iter(config.operator_api_keys or config.client_api_keys or named), None)


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, flags={"host": args.host, "port": args.port})


def _print_effective(config: Config) -> None:
    _output(json.dumps(redacted(config), indent=2))


def _output(text: str) -> None:
    """Print to stdout; a reader that went away (`trioproxy --check-config | head`) is not an
    error worth a traceback, and the command keeps its own exit code."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python would fail again flushing stdout at exit, so point stdout at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _probe(config: Config) -> int:
    """Ask the providers which models each key offers; 1 when a route has no provider for any of its models."""
    if not any(provider.keys for provider in config.providers):
        print(NO_KEYS, file=sys.stderr)
        return EXIT_USAGE
    text, every_route_served = catalogue.report(config, trio.run(catalogue.list_every_key, config))
    _output(text)
    return 0 if every_route_served else 1


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` asks for (the process's arguments when None); returns the exit
    code: 0 done, 1 failed at run time, 2 wrong usage or settings. A usage error, `--help`
    and `--version` raise SystemExit, as argparse does."""
    args = _parser().parse_args(argv)
    if args.command == "status":
        return _status(args)
    if args.command == "models":
        try:
            return _probe(_load(args))
        except ConfigError as error:
            print(f"trioproxy: {error}", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "stop":
        try:
            _output(daemon.stop(args.pidfile or default_pidfile(), args.timeout))
        except daemon.DaemonError as error:
            print(f"trioproxy: {error}", file=sys.stderr)
            return 1
        return 0
    try:
        config = _load(args)
    except ConfigError as error:
        print(f"trioproxy: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.probe and not args.check_config:
        print("trioproxy: --probe goes with --check-config (see trioproxy --help)", file=sys.stderr)
        return EXIT_USAGE
    has_keys = any(provider.keys for provider in config.providers)
    if has_keys and (keyless := keyless_route(config)) is not None:
        print(f"trioproxy: {keyless} (from {args.config or 'defaults'})", file=sys.stderr)
        return EXIT_USAGE
    missing_keys = not args.demo and not has_keys
    if args.check_config and args.probe:
        return _probe(config)
    if args.check_config:
        _print_effective(config)
        if missing_keys:  # serving these settings would stop here too
            print(NO_KEYS, file=sys.stderr)
        return EXIT_USAGE if missing_keys else 0
    if missing_keys:
        print(NO_KEYS, file=sys.stderr)
        return EXIT_USAGE
    workers = 1 if args.listen_fd is not None else args.workers or config.workers
    if (refusal := _workers_refusal(workers, config, args.demo)) is not None:
        print(f"trioproxy: {refusal}", file=sys.stderr)
        return EXIT_USAGE
    pidfile = args.pidfile or (default_pidfile() if args.daemon else None)
    if pidfile is not None and (other := daemon.running_pid(pidfile)) is not None:
        print(f"trioproxy: already running (pid {other}, pidfile {pidfile})", file=sys.stderr)
        return 1
    log_file = args.log_file or (default_log_file() if args.daemon else None)
    report = daemon.detach(log_file) if args.daemon and log_file is not None else None
    if args.report_fd is not None:
        report = daemon.reporter(args.report_fd)
    if pidfile is not None:
        daemon.claim_pidfile(pidfile)
    log_stream = open(log_file, "a", buffering=1) if log_file is not None and report is None else sys.stderr
    configure_logging(config.log_level, Sanitizer(secrets(config)), log_stream, config.log_format)
    try:
        banner = _demo_banner(config, report is not None, pidfile) if args.demo else None
        if workers > 1:
            return _serve_workers(config, workers, args.config, report)
        return _serve(config, banner, report, lambda: _load(args), args.listen_fd, args.lifeline_fd)
    finally:
        if pidfile is not None:
            daemon.release_pidfile(pidfile)


def _demo_banner(config: Config, detached: bool, pidfile: Path | None) -> Callable[[str], None]:
    """How the demo introduces itself: printed for a person at a terminal, logged otherwise
    (a daemon's log file, JSON lines), with the way to stop that fits."""
    stop = f"trioproxy stop --pidfile {pidfile}" if detached and pidfile else "Ctrl-C"
    as_log = detached or config.log_format == "json"
    served_by = demo_choices(config)
    return lambda base_url: show_demo_banner(base_url, config.routes[0].name, served_by, stop, as_log)


def _serve_workers(config: Config, workers: int, config_path: Path | None, report: Callable[[bytes], None] | None) -> int:
    path = str(config_path.resolve()) if config_path is not None else None
    return _run_reporting(config, None, report, lambda ready: trio.run(supervise_workers, config, workers, path, ready))


def _serve(
    config: Config,
    banner: Callable[[str], None] | None,
    report: Callable[[bytes], None] | None,
    reload: Callable[[], Config],
    listen_fd: int | None,
    lifeline_fd: int | None,
) -> int:
    def run(ready: Callable[[str], None]) -> None:
        serve = functools.partial(supervise, config, banner is not None, ready, reload, listen_fd)
        if lifeline_fd is None:
            trio.run(serve)
        else:  # a worker of --workers
            trio.run(serve_as_worker, serve, lifeline_fd)

    return _run_reporting(config, banner, report, run, say_failure=listen_fd is None)


def _run_reporting(
    config: Config,
    banner: Callable[[str], None] | None,
    report: Callable[[bytes], None] | None,
    run: Callable[[Callable[[str], None]], None],
    *,
    say_failure: bool = True,
) -> int:
    """Run until shut down (with the demo's emulators when `banner` is given); with `report`
    (daemon mode, or a worker of --workers), tell the waiting parent how start-up went. A
    worker leaves saying a failure to its supervisor (`say_failure`), so it is said once."""

    def ready(base_url: str) -> None:
        if banner is not None:
            banner(base_url)
        if report is not None:
            report(daemon.READY + base_url.encode())

    try:
        run(ready)
    except (OSError, QuotaStoreError, WorkerStartError, BaseExceptionGroup) as error:
        failure = _start_failure(config, error)
        if failure is None:
            if report is not None:
                report(daemon.FAILED + b"an internal error; see the log file")
            raise
        message, exit_code = failure
        if report is not None:
            report(daemon.FAILED + message.encode())
        if say_failure:
            print(f"trioproxy: {message}", file=sys.stderr)
        return exit_code
    return 0


def _start_failure(config: Config, error: BaseException) -> tuple[str, int] | None:
    """Why serving could not start, in one line, and the exit code; None for anything else."""
    if (store_error := found_in(error, QuotaStoreError)) is not None:
        return str(store_error), EXIT_USAGE
    if (worker_error := found_in(error, WorkerStartError)) is not None:
        return str(worker_error), worker_error.exit_code
    if (bind_error := _os_error_in(error)) is not None:  # e.g. the port is taken
        return f"cannot serve on {config.host}:{config.port}: {bind_error.strerror or bind_error}", 1
    return None


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError inside Trio's (possibly nested) exception groups, if that is what failed."""
    if isinstance(error, OSError):
        return error
    if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        return _os_error_in(error.exceptions[0])
    return None
