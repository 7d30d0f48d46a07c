"""The real `trioproxy` command in a subprocess, run to completion with its output captured, in
an environment without this machine's trioproxy settings and keys."""

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import attrs
import trio

from trioproxy.config.env import ENV_VARS

COMMAND = [sys.executable, "-m", "trioproxy"]
RUN_TIMEOUT = 20  # seconds for a command that should exit by itself


def scrubbed_env(**extra: str) -> dict[str, str]:
    """This process's environment without any trioproxy setting (keys included), plus `extra`."""
    env = {name: value for name, value in os.environ.items() if name not in ENV_VARS}
    env.pop("PYTHONUNBUFFERED", None)  # the command must flush what the user needs to see itself
    env.update(extra)
    return env


@attrs.frozen
class Result:
    returncode: int
    stdout: str
    stderr: str


async def run(args: list[str], cwd: Path, env: Mapping[str, str] | None = None) -> Result:
    """Run the command to completion (killed if it outlives RUN_TIMEOUT) and capture its output."""
    with trio.fail_after(RUN_TIMEOUT):
        done = await trio.run_process(
            COMMAND + args,
            cwd=cwd,
            env=dict(env if env is not None else scrubbed_env()),
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]
