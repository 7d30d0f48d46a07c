"""Real coding-agent CLIs, one-shot, against `trioproxy --demo`: does each get through a tool step?

Installs Codex CLI, Claude Code, Gemini CLI, Qwen Code and opencode with npm under a temporary folder,
starts `python -m trioproxy --demo` on a free port, and runs each CLI once, non-interactively,
in a fresh working folder (one small file in it) with a fresh HOME, asking it to list the files.
The demo's emulated model calls the first tool the CLI offers, with arguments that satisfy the
tool's schema, and answers in text once the result comes back; so a CLI that works through
trioproxy runs one tool step and ends with that text.

Each CLI prints structured events (JSON lines) that say which tools ran and what the final
answer was; trioproxy's request log lines say what the proxy served meanwhile. One line per CLI:

    qwen-code  0.15.10  ok    tool steps 1 (tool_search), final answer, exit 0; proxy: 2 x 200

`ok` means: exit status 0 within the timeout, at least one tool result went back to the model,
a final text answer, no error event, and at least two requests served by the proxy with none
refused. Codex CLI talks the Responses API (`/v1/responses`), Claude Code the Anthropic
Messages API (`/v1/messages`) and Gemini CLI Google's Gemini API
(`/v1beta/models/...:streamGenerateContent`).

Traffic stays on loopback: the CLIs get telemetry, update checks and error reporting switched
off, and HTTP(S)_PROXY points at a closed local port (NO_PROXY lets 127.0.0.1 through), so a
CLI that still tries to reach the internet fails fast instead. Not run in CI.

    .venv/bin/python bench/agents.py                       # all five, latest versions
    .venv/bin/python bench/agents.py --only qwen,opencode  # a subset
    .venv/bin/python bench/agents.py --version codex=0.171.0 --keep   # pin; keep the folder
    .venv/bin/python bench/agents.py --only claude,codex --cut-every 2  # every 2nd stream breaks

With `--cut-every N` the demo's emulated Cerebras breaks every N-th stream off after a few
events (`TRIOPROXY_DEMO_CUT_EVERY`), and the proxy has the next provider finish it; the line's
proxy counts then include `continued`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

MODEL = "qwen-3-coder"  # the demo's model name
PROMPT = "List the files in this folder, then tell me what you found."
CLOSED_PORT_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, connects fail fast
# Off for every CLI: telemetry, update notices, error reports (names they read; unknown ones
# are harmless).
QUIET = {"DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "NO_UPDATE_NOTIFIER": "1",
         "npm_config_update_notifier": "false", "DISABLE_ERROR_REPORTING": "1",
         "DISABLE_AUTOUPDATER": "1"}


@attrs.frozen
class Outcome:
    """What a CLI's own output says about its run."""

    tools: list[str]  # names of the tools whose results went back to the model
    final: str  # the final text answer ("" when none)
    errors: list[str]


@attrs.frozen
class Run:
    """Where one CLI runs: its folders and the proxy's base URL (".../v1")."""

    home: Path
    work: Path
    base_url: str


@attrs.frozen
class Agent:
    name: str
    package: str
    binary: str
    command: Callable[[Run], tuple[list[str], dict[str, str]]]  # argv after the binary, env
    judge: Callable[[list[dict[str, Any]]], Outcome]  # from the JSON events on stdout


# --------------------------------------------------------------------------- each CLI


def _dict(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (events vary between versions)."""
    return value if isinstance(value, dict) else {}


def codex_command(run: Run) -> tuple[list[str], dict[str, str]]:
    """Codex CLI with a custom provider on the Responses API (Chat Completions is refused)."""
    codex_home = run.home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(f'''\
model = "{MODEL}"
model_provider = "trioproxy"

[model_providers.trioproxy]
name = "trioproxy"
base_url = "{run.base_url}"
env_key = "TRIOPROXY_API_KEY"
wire_api = "responses"
''')
    # The README's one-shot command, word for word.
    argv = ["exec", "--json", "--skip-git-repo-check", "-s", "workspace-write", PROMPT]
    return argv, {"CODEX_HOME": str(codex_home), "TRIOPROXY_API_KEY": "anything"}


def codex_judge(events: list[dict[str, Any]]) -> Outcome:
    tools, final, errors = [], "", []
    for event in events:
        item = _dict(event.get("item"))
        if event.get("type") == "item.completed":
            kind = item.get("type")
            if kind == "agent_message":
                final = item.get("text") or ""
            elif kind in ("command_execution", "mcp_tool_call", "file_change", "web_search"):
                tools.append(kind)  # `error` items are warnings (e.g. unknown model metadata)
        elif event.get("type") in ("error", "turn.failed"):
            errors.append(str(event.get("message") or _dict(event.get("error")).get("message")))
    return Outcome(tools, final, errors)


def claude_command(run: Run) -> tuple[list[str], dict[str, str]]:
    """Claude Code on the Anthropic Messages API; every model it asks for is the demo's."""
    origin = run.base_url.removesuffix("/v1")
    env = {"ANTHROPIC_BASE_URL": origin, "ANTHROPIC_AUTH_TOKEN": "sk-demo",
           "ANTHROPIC_MODEL": MODEL, "ANTHROPIC_SMALL_FAST_MODEL": MODEL,
           "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL, "ANTHROPIC_DEFAULT_SONNET_MODEL": MODEL,
           "ANTHROPIC_DEFAULT_OPUS_MODEL": MODEL, "CLAUDE_CODE_SUBAGENT_MODEL": MODEL,
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_BUG_COMMAND": "1"}
    argv = ["-p", "--output-format", "stream-json", "--verbose", "--no-session-persistence",
            "--permission-mode", "acceptEdits", PROMPT]
    return argv, env


def qwen_command(run: Run) -> tuple[list[str], dict[str, str]]:
    """Qwen Code on Chat Completions; settings switch usage statistics and updates off."""
    settings = run.home / ".qwen" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"general": {"enableAutoUpdate": False},
                                    "privacy": {"usageStatisticsEnabled": False},
                                    "telemetry": {"enabled": False}}))
    env = {"OPENAI_BASE_URL": run.base_url, "OPENAI_API_KEY": "sk-demo", "OPENAI_MODEL": MODEL,
           "QWEN_TELEMETRY_ENABLED": "false"}
    # yolo: nothing to approve in a throw-away folder, and no one to ask in one-shot mode.
    argv = ["--auth-type", "openai", "--output-format", "stream-json", "--approval-mode", "yolo",
            PROMPT]
    return argv, env


def stream_json_judge(events: list[dict[str, Any]]) -> Outcome:
    """Claude Code's and Qwen Code's `stream-json`: tool_use / tool_result blocks, a result."""
    names: dict[str, str] = {}
    tools, final, errors = [], "", []
    for event in events:
        blocks = _dict(event.get("message")).get("content")
        for block in map(_dict, blocks if isinstance(blocks, list) else []):
            if block.get("type") == "tool_use":
                names[block.get("id", "")] = block.get("name", "?")
            elif block.get("type") == "tool_result":
                tools.append(names.get(block.get("tool_use_id", ""), "?"))
        if event.get("type") == "result":
            if event.get("is_error"):
                errors.append(str(event.get("result") or event.get("subtype")))
            else:
                final = str(event.get("result") or "")
    return Outcome(tools, final, errors)


def gemini_command(run: Run) -> tuple[list[str], dict[str, str]]:
    """Gemini CLI with its API-key sign-in pointed at trioproxy, as the README sets it up."""
    settings = run.home / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}}))
    env = {"GOOGLE_GEMINI_BASE_URL": run.base_url.removesuffix("/v1"), "GEMINI_API_KEY": "sk-demo",
           "GEMINI_MODEL": MODEL, "GEMINI_CLI_TRUST_WORKSPACE": "true"}
    return ["-p", PROMPT, "--output-format", "stream-json"], env


def gemini_judge(events: list[dict[str, Any]]) -> Outcome:
    """Gemini CLI's `stream-json`: tool_use / tool_result by tool_id, assistant text deltas, a result."""
    names: dict[str, str] = {}
    tools, final, errors = [], "", []
    for event in events:
        kind = event.get("type")
        if kind == "tool_use":
            names[event.get("tool_id", "")] = event.get("tool_name", "?")
        elif kind == "tool_result":
            tools.append(names.get(event.get("tool_id", ""), "?"))
            final = ""  # the answer is the text after the last tool step
        elif kind == "message" and event.get("role") == "assistant":
            final += event.get("content") or ""
        elif kind == "error" or (kind == "result" and event.get("status") != "success"):
            errors.append(json.dumps(event.get("error") or event)[:300])
    return Outcome(tools, final, errors)


def opencode_command(run: Run) -> tuple[list[str], dict[str, str]]:
    """opencode with an OpenAI-compatible provider (bundled @ai-sdk/openai-compatible)."""
    config = {"$schema": "https://opencode.ai/config.json", "autoupdate": False,
              "share": "disabled", "model": f"trioproxy/{MODEL}",
              "small_model": f"trioproxy/{MODEL}",
              "provider": {"trioproxy": {
                  "npm": "@ai-sdk/openai-compatible", "name": "trioproxy demo",
                  "options": {"baseURL": run.base_url, "apiKey": "sk-demo"},
                  "models": {MODEL: {"name": "Qwen3 Coder (trioproxy demo)", "tool_call": True}}}}}
    env = {"OPENCODE_CONFIG_CONTENT": json.dumps(config), "OPENCODE_DISABLE_AUTOUPDATE": "1",
           "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_SHARE": "1",
           "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
           "OPENCODE_DISABLE_CLAUDE_CODE": "1", "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1"}
    return ["run", "--format", "json", "--auto", PROMPT], env


def opencode_judge(events: list[dict[str, Any]]) -> Outcome:
    tools, final, errors = [], "", []
    for event in events:
        part = _dict(event.get("part"))
        if event.get("type") == "tool_use" and _dict(part.get("state")).get("status") in (
                "completed", "error"):
            tools.append(part.get("tool", "?"))
            final = ""  # the answer is the text after the last tool step
        elif event.get("type") == "text":
            final = part.get("text") or ""
        elif event.get("type") == "error":
            errors.append(json.dumps(event.get("error") or event)[:300])
    return Outcome(tools, final, errors)


AGENTS = {
    "codex": Agent("codex", "@openai/codex", "codex", codex_command, codex_judge),
    "claude": Agent("claude-code", "@anthropic-ai/claude-code", "claude", claude_command,
                    stream_json_judge),
    "gemini": Agent("gemini-cli", "@google/gemini-cli", "gemini", gemini_command, gemini_judge),
    "qwen": Agent("qwen-code", "@qwen-code/qwen-code", "qwen", qwen_command, stream_json_judge),
    "opencode": Agent("opencode", "opencode-ai", "opencode", opencode_command, opencode_judge),
}


# --------------------------------------------------------------------------- the run


def install(agents: list[Agent], pins: dict[str, str], prefix: Path) -> dict[str, str]:
    """npm-install the CLIs under `prefix`; returns each package's installed version."""
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "package.json").write_text('{"private": true}\n')
    specs = [f"{agent.package}@{pins.get(agent.binary, 'latest')}" for agent in agents]
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
                    "--prefix", str(prefix), *specs], check=True, timeout=900,
                   stdin=subprocess.DEVNULL)
    return {agent.package: json.loads((prefix / "node_modules" / agent.package /
                                       "package.json").read_text())["version"]
            for agent in agents}


def start_demo(log_path: Path, cut_every: int) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m trioproxy --demo` on a free port; returns the process and its base URL. With
    `cut_every`, the demo's Cerebras breaks every that many streams off mid-answer."""
    env = {**os.environ, "PORT": "0", "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost", "TRIOPROXY_DEMO_CUT_EVERY": str(cut_every)}
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "trioproxy", "--demo"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r"serving at (http://127\.0\.0\.1:\d+/v1)", log_path.read_text())
        if found:
            return process, found.group(1)
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"trioproxy --demo did not start; its log:\n{log_path.read_text()}")


def cli_env(run: Run, extra: dict[str, str]) -> dict[str, str]:
    """A clean environment: PATH and locale from ours, a fresh HOME, no way off loopback."""
    keep = {name: os.environ[name] for name in ("PATH", "LANG", "TERM") if name in os.environ}
    home = str(run.home)
    proxies = {name: CLOSED_PORT_PROXY for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                                                    "https_proxy", "ALL_PROXY", "all_proxy")}
    return {**keep, **QUIET, **proxies, "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost", "HOME": home, "XDG_CONFIG_HOME": f"{home}/.config",
            "XDG_DATA_HOME": f"{home}/.local/share", "XDG_CACHE_HOME": f"{home}/.cache",
            "XDG_STATE_HOME": f"{home}/.local/state", "CI": "1", **extra}


def run_cli(agent: Agent, binary: Path, run: Run, timeout: float) -> tuple[int | None, str, str]:
    """(exit status or None on timeout, stdout, stderr) of one one-shot run."""
    argv, extra = agent.command(run)
    process = subprocess.Popen([str(binary), *argv], cwd=run.work, env=cli_env(run, extra),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
        return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the CLI and its children
        out, err = process.communicate()
        return None, out.decode(errors="replace"), err.decode(errors="replace")


def json_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def proxy_requests(log_text: str) -> Counter[str]:
    """Statuses (with the door, `api=...`, when the log names it) of the request lines."""
    counts: Counter[str] = Counter()
    for line in log_text.splitlines():
        if " trioproxy.request " not in line or "status=" not in line:
            continue
        status = re.search(r"\bstatus=(\d+)", line)
        api = re.search(r"\bapi=(\w+)", line)
        counts[(f"{api.group(1)} " if api else "") + (status.group(1) if status else "?")] += 1
        if "continued_from=" in line:
            counts["continued"] += 1
    return counts


def verdict(status: int | None, outcome: Outcome, served: Counter[str]) -> tuple[bool, str]:
    """(ok, the line's explanation)."""
    ok_requests = sum(n for key, n in served.items() if key.endswith("200"))
    refused = sum(n for key, n in served.items() if key != "continued") - ok_requests
    problems = []
    if status is None:
        problems.append("timed out")
    elif status != 0:
        problems.append(f"exit {status}")
    if not outcome.tools:
        problems.append("no tool step")
    if not outcome.final:
        problems.append("no final answer")
    if ok_requests < 2:
        problems.append(f"proxy served {ok_requests} request(s)")
    if refused:
        problems.append(f"proxy refused {refused} request(s)")
    problems += [f"error: {e[:200]}" for e in dict.fromkeys(outcome.errors)]
    tools = ", ".join(dict.fromkeys(outcome.tools))
    answer = f"final answer {outcome.final[:60]!r}" if outcome.final else "no final answer"
    proxy = ", ".join(f"{n} x {key}" for key, n in sorted(served.items())) or "no requests"
    facts = (f"tool steps {len(outcome.tools)}{f' ({tools})' if tools else ''}, {answer}, "
             f"exit {'timeout' if status is None else status}; proxy: {proxy}")
    return not problems, facts if not problems else f"{'; '.join(problems)} | {facts}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(AGENTS),
                        help=f"comma-separated subset of {', '.join(AGENTS)}")
    parser.add_argument("--version", action="append", default=[], metavar="CLI=VERSION",
                        help="pin an npm version, e.g. codex=0.171.0 (default: latest)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per CLI run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--cut-every", type=int, default=0, metavar="N",
                        help="the demo's Cerebras breaks every N-th stream off mid-answer (0: never)")
    args = parser.parse_args()
    chosen = [AGENTS[name.strip()] for name in args.only.split(",") if name.strip()]
    pins = dict(pin.split("=", 1) for pin in args.version)
    root = Path(tempfile.mkdtemp(prefix="trioproxy-agents-"))
    demo = None
    try:
        versions = install(chosen, pins, root / "npm")
        demo, base_url = start_demo(root / "trioproxy.log", args.cut_every)
        print(f"trioproxy --demo at {base_url}; folder {root}", flush=True)
        results = []
        for agent in chosen:
            run = Run(root / agent.binary / "home", root / agent.binary / "work", base_url)
            run.home.mkdir(parents=True)
            run.work.mkdir(parents=True)
            (run.work / "notes.txt").write_text("Shopping: apples, flour, eggs.\n")
            seen = len((root / "trioproxy.log").read_text())
            status, out, err = run_cli(agent, root / "npm" / "node_modules" / ".bin" /
                                       agent.binary, run, args.timeout)
            (run.home.parent / "stdout.jsonl").write_text(out)
            (run.home.parent / "stderr.txt").write_text(err)
            served = proxy_requests((root / "trioproxy.log").read_text()[seen:])
            ok, facts = verdict(status, agent.judge(list(json_lines(out))), served)
            results.append(ok)
            print(f"{agent.name:<12} {versions[agent.package]:<10} {'ok' if ok else 'FAIL':<5} "
                  f"{facts}", flush=True)
        return 0 if all(results) else 1
    finally:
        if demo is not None:
            demo.send_signal(signal.SIGTERM)
            try:
                demo.wait(timeout=40)
            except subprocess.TimeoutExpired:
                demo.kill()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
