"""The official `openai` npm package as the client of trioproxy, run with Node's test runner.

The Node side is tests/node/client.test.mjs; its dependencies are installed by ./scripts/test
(`npm install --prefix tests/node`). Node is required: without it this test fails, it does not
skip, since CI machines have Node.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from support.proxies import Providers, StartProxy
from trioproxy.testing.emulator import completion_text

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
TEST_FILE = NODE_DIR / "client.test.mjs"
TIMEOUT_SECONDS = 60
# Enough quota that every request of the Node run goes to (emulated) Cerebras.
ROOMY = {"requests_per_minute": 10_000, "tokens_per_minute": 100_000_000, "tokens_per_day": 1_000_000_000}


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is not installed: tests/node needs Node.js 18 or newer on PATH (CI machines have it); "
            "install it (e.g. apt-get install nodejs npm) and run ./scripts/test again"
        )
    if not (NODE_DIR / "node_modules" / "openai" / "package.json").is_file():
        pytest.fail(
            "tests/node/node_modules/openai is missing: run ./scripts/test, which runs "
            "`npm install --no-audit --no-fund --prefix tests/node`"
        )
    return node


def _received(providers: Providers, marker: str) -> list[dict[str, Any]]:
    """The bodies either provider received whose messages carry `node:<marker>`."""
    tag = f"node:{marker}"
    return [
        body
        for body in providers.cerebras.received + providers.chutes.received
        if tag in json.dumps(body.get("messages", ""))
    ]


async def test_openai_npm_package(start_proxy: StartProxy, providers: Providers) -> None:
    node = _node()
    proxy = await start_proxy(cerebras=ROOMY)
    env = {
        **os.environ,
        "TRIOPROXY_BASE_URL": proxy.base_url,
        "EXPECTED_TEXT": completion_text("cerebras"),
        "NO_COLOR": "1",
    }
    with trio.move_on_after(TIMEOUT_SECONDS) as scope:
        result = await trio.run_process(
            [node, "--test", "--test-reporter=tap", str(TEST_FILE)],
            cwd=NODE_DIR,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert not scope.cancelled_caught, f"node --test did not finish within {TIMEOUT_SECONDS} s"
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, f"node --test failed (exit {result.returncode}):\n{output}"
    passed = re.search(r"^# pass (\d+)$", output, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", output, re.MULTILINE)
    assert passed and failed, f"no test summary in node's output:\n{output}"
    assert int(failed.group(1)) == 0 and int(passed.group(1)) >= 12, output

    # What the provider received for the requests the Node side made.
    assert providers.chutes.received == []
    [parallel] = _received(providers, "parallel")
    assert parallel["parallel_tool_calls"] is True
    assert [tool["function"]["name"] for tool in parallel["tools"]] == ["read_file", "list_files"]
    [capped] = _received(providers, "max-completion-tokens")
    assert capped["max_completion_tokens"] == 3
    [usage] = _received(providers, "usage")
    assert usage["stream_options"] == {"include_usage": True}
    assert _received(providers, "unknown-model") == []  # refused by the proxy itself
    [roo] = _received(providers, "roo")
    # Adapted for Cerebras: parallel_tool_calls false dropped; the rest passes unchanged.
    assert "parallel_tool_calls" not in roo
    assert roo["tool_choice"] == "auto" and roo["temperature"] == 0 and roo["stream"] is True
    assert roo["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert roo["messages"][1]["content"][1]["cache_control"] == {"type": "ephemeral"}
    assert roo["model"] == providers.cerebras.model
