"""Real coding-agent CLIs against `trioproxy --demo`, each run as the README sets it up.

Installs the CLIs with npm under a temporary folder, starts `python -m trioproxy --demo` on a
free port, and runs each CLI non-interactively in a fresh working folder (one small file in it)
with a fresh HOME: one-shot, asking it to list the files, and for the agents whose README entry
gives a way to continue a session (Codex CLI, Claude Code), a session of three turns. The demo's
emulated model calls the first tool the CLI offers (the first two when the request allows
parallel calls), with arguments that satisfy the tool's schema, and answers in text once a tool
result is in the conversation; so a CLI that works through trioproxy runs one tool step and ends
with that text, and later turns of a session are answered in text.

Each CLI runs with the settings, environment variables and flags the README's "Client set-up"
gives, and nothing else but (1) the flag that makes it print JSON events instead of text
(`--json`, `--output-format stream-json`, `--format json`), which changes what it prints and
nothing it sends, and (2) a sandbox around it: telemetry, update checks and error reports off,
HTTP(S)_PROXY at a closed local port (NO_PROXY lets 127.0.0.1 through), so a CLI that still
tries to reach the internet fails fast. The JSON events say which tools ran and what the final
answer was; trioproxy's request log lines say what the proxy served meanwhile. One line per run:

    codex        0.171.0    ok    one-shot: 1 turn, tool steps 1, requests 2, errors 0 (2 x responses 200)

`ok` means: every turn exited 0 within the timeout with a final text answer and no error event,
the first turn ran at least one tool step whose result went back to the model, and the proxy
served every request with 200 (none refused). Errors are the CLI's error events plus the proxy's
non-200 answers, each with its message. Not run in CI.

    .venv/bin/python bench/agents.py                       # every CLI, latest versions
    .venv/bin/python bench/agents.py --only qwen,opencode  # a subset
    .venv/bin/python bench/agents.py --version codex=0.171.0 --keep   # pin; keep the folder
    .venv/bin/python bench/agents.py --only claude,codex --cut-every 2  # every 2nd stream breaks

With `--cut-every N` the demo's emulated Cerebras breaks every N-th stream off after a few
events (`TRIOPROXY_DEMO_CUT_EVERY`) and the proxy has the next provider finish it; each line then
says how many streams were continued.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
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

README = Path(__file__).resolve().parent.parent / "README.md"
README_ORIGIN = "http://localhost:3000"  # where the README's set-ups point; the demo's port replaces it
# What each turn asks; the README's own prompts are replaced by these.
PROMPTS = ("List the files in this folder, then tell me what you found.",
           "Which of those files is the largest?",
           "Thank you. Say in one sentence what we did.")
CLOSED_PORT_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, connects fail fast
# The sandbox, for every CLI: telemetry, update notices, error reports and other calls home off
# (names they read; unknown ones are harmless).
QUIET = {"DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "NO_UPDATE_NOTIFIER": "1",
         "npm_config_update_notifier": "false", "DISABLE_ERROR_REPORTING": "1",
         "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
         "DISABLE_BUG_COMMAND": "1", "QWEN_TELEMETRY_ENABLED": "false",
         "OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_MODELS_FETCH": "1",
         "OPENCODE_DISABLE_SHARE": "1", "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
         "OPENCODE_DISABLE_LSP_DOWNLOAD": "1", "OPENCODE_DISABLE_CLAUDE_CODE": "1",
         "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1"}


@attrs.frozen
class Outcome:
    """What a CLI's own output says about one turn."""

    tools: list[str]  # names of the tools whose results went back to the model
    final: str  # the final text answer ("" when none)
    errors: list[str]


@attrs.frozen
class Run:
    """Where one CLI runs: its folders and the proxy's origin (`http://127.0.0.1:PORT`)."""

    home: Path
    work: Path
    origin: str


Invocation = tuple[list[str], dict[str, str]]  # argv after the binary, environment


@attrs.frozen
class Agent:
    """One CLI: how the README sets it up, and how to read what it prints.

    `turns(run, prompts)` writes the README's files for it and returns one invocation per prompt
    (the first starts a session, the others continue it); `sessions` is false for a CLI whose
    README entry gives no way to continue one, which then runs one-shot only.
    """

    name: str
    package: str
    binary: str
    turns: Callable[[Run, tuple[str, ...]], list[Invocation]]
    judge: Callable[[list[dict[str, Any]]], Outcome]  # from the JSON events on stdout
    sessions: bool = False


# --------------------------------------------------------------------------- the README


@attrs.frozen
class Section:
    """The README's set-up of one client: the paragraphs from its bold name to the next one."""

    text: str

    @classmethod
    def of(cls, title: str) -> "Section":
        readme = README.read_text()
        start = readme.index(f"**{title}**")
        following = re.search(r"^\*\*[^*\n]+\*\*", readme[start + 2:], re.MULTILINE)
        end = start + 2 + following.start() if following else len(readme)
        return cls(readme[start:end])

    def block(self, language: str, origin: str) -> str:
        """The first fenced block in `language`, pointed at `origin` instead of the README's."""
        found = re.search(rf"^```{language}\n(.*?)^```", self.text, re.MULTILINE | re.DOTALL)
        if found is None:
            raise SystemExit(f"README: no {language} block in the set-up of {self.text[:40]!r}")
        return found.group(1).replace(README_ORIGIN, origin)

    def commands(self, binary: str, origin: str) -> list[Invocation]:
        """Each command line of the `sh` block that runs `binary`: its arguments, and the
        variables the block exports or the line sets before it."""
        script = self.block("sh", origin).replace("\\\n", " ")
        exported: dict[str, str] = {}
        found = []
        for line in script.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["export"]:
                exported.update(word.split("=", 1) for word in words[1:])
                continue
            settings = {}
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                key, value = words.pop(0).split("=", 1)
                settings[key] = value
            if words[:1] == [binary]:
                found.append((words[1:], {**exported, **settings}))
        return found


def with_prompt(argv: list[str], prompt: str) -> list[str]:
    """The README's command with our prompt in place of its own (the last argument)."""
    return [*argv[:-1], prompt]


def inserted(argv: list[str], after: str, flags: list[str]) -> list[str]:
    """`flags` placed after the word `after` (a subcommand), or at the front without it."""
    at = argv.index(after) + 1 if after in argv else 0
    return [*argv[:at], *flags, *argv[at:]]


# --------------------------------------------------------------------------- each CLI


def _dict(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (events vary between versions)."""
    return value if isinstance(value, dict) else {}


def codex_turns(run: Run, prompts: tuple[str, ...]) -> list[Invocation]:
    """The README's config.toml in CODEX_HOME; `codex exec ...` first, `codex exec resume ...` after."""
    section = Section.of("Codex CLI")
    codex_home = run.home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(section.block("toml", run.origin))
    commands = section.commands("codex", run.origin)
    first = next(c for c in commands if "resume" not in c[0])
    later = next(c for c in commands if "resume" in c[0])
    turns = []
    for number, prompt in enumerate(prompts):
        argv, env = first if number == 0 else later
        argv = inserted(with_prompt(argv, prompt), "resume" if number else "exec", ["--json"])
        turns.append((argv, {**env, "CODEX_HOME": str(codex_home)}))
    return turns


def codex_judge(events: list[dict[str, Any]]) -> Outcome:
    tools, final, errors = [], "", []
    for event in events:
        item = _dict(event.get("item"))
        if event.get("type") == "item.completed":
            kind = item.get("type")
            if kind == "agent_message":
                final = item.get("text") or ""
            elif kind in ("command_execution", "mcp_tool_call", "file_change", "web_search", "collab_tool_call"):
                tools.append(kind)  # `error` items are warnings (e.g. unknown model metadata)
        elif event.get("type") in ("error", "turn.failed"):
            errors.append(str(event.get("message") or _dict(event.get("error")).get("message")))
    return Outcome(tools, final, errors)


def claude_turns(run: Run, prompts: tuple[str, ...]) -> list[Invocation]:
    """The README's exports; `claude -p ...` first, `claude -p --continue ...` after."""
    commands = Section.of("Claude Code").commands("claude", run.origin)
    first = next(c for c in commands if "--continue" not in c[0])
    later = next(c for c in commands if "--continue" in c[0])
    output = ["--output-format", "stream-json", "--verbose"]  # stream-json wants --verbose with -p
    return [(inserted(with_prompt((first if n == 0 else later)[0], prompt), "-p", output), (first if n == 0 else later)[1])
            for n, prompt in enumerate(prompts)]


def qwen_turns(run: Run, prompts: tuple[str, ...]) -> list[Invocation]:
    """The README's one-shot line: variables set on it, `qwen ...`; settings switch statistics off."""
    settings = run.home / ".qwen" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"general": {"enableAutoUpdate": False},
                                    "privacy": {"usageStatisticsEnabled": False},
                                    "telemetry": {"enabled": False}}))
    [(argv, env)] = Section.of("Qwen Code").commands("qwen", run.origin)
    return [(["--output-format", "stream-json", *with_prompt(argv, prompt)], env) for prompt in prompts[:1]]


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


def gemini_turns(run: Run, prompts: tuple[str, ...]) -> list[Invocation]:
    """The README's settings.json in ~/.gemini and its exports; `gemini -p ...`."""
    section = Section.of("Gemini CLI")
    settings = run.home / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(section.block("json", run.origin))
    [(argv, env)] = section.commands("gemini", run.origin)
    return [([*with_prompt(argv, prompt), "--output-format", "stream-json"], env) for prompt in prompts[:1]]


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


def opencode_turns(run: Run, prompts: tuple[str, ...]) -> list[Invocation]:
    """The README's whole opencode.json in the project folder; `opencode run ...`."""
    section = Section.of("opencode")
    (run.work / "opencode.json").write_text(section.block("json", run.origin))
    [(argv, env)] = section.commands("opencode", run.origin)
    return [(inserted(with_prompt(argv, prompt), "run", ["--format", "json"]), env) for prompt in prompts[:1]]


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


# One entry per CLI; --only takes these keys.
AGENTS = {
    "codex": Agent("codex", "@openai/codex", "codex", codex_turns, codex_judge, sessions=True),
    "claude": Agent("claude-code", "@anthropic-ai/claude-code", "claude", claude_turns, stream_json_judge,
                    sessions=True),
    "gemini": Agent("gemini-cli", "@google/gemini-cli", "gemini", gemini_turns, gemini_judge),
    "qwen": Agent("qwen-code", "@qwen-code/qwen-code", "qwen", qwen_turns, stream_json_judge),
    "opencode": Agent("opencode", "opencode-ai", "opencode", opencode_turns, opencode_judge),
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
    """`python -m trioproxy --demo` on a free port; returns the process and its origin. With
    `cut_every`, the demo's Cerebras breaks every that many streams off mid-answer."""
    env = {**os.environ, "PORT": "0", "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost", "TRIOPROXY_DEMO_CUT_EVERY": str(cut_every)}
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "trioproxy", "--demo"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r"serving at (http://127\.0\.0\.1:\d+)/v1", log_path.read_text())
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


def run_cli(binary: Path, invocation: Invocation, run: Run, timeout: float) -> tuple[int | None, str, str]:
    """(exit status or None on timeout, stdout, stderr) of one run of the CLI."""
    argv, extra = invocation
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


@attrs.frozen
class Served:
    """What the proxy's request log lines say of a stretch of traffic."""

    counts: Counter[str]  # "api status" -> requests
    errors: list[str]  # each non-200 answer: status, reason and message
    continued: int = 0  # streams another provider finished after the first broke off


def proxy_requests(log_text: str) -> Served:
    counts: Counter[str] = Counter()
    errors: list[str] = []
    continued = 0
    for line in log_text.splitlines():
        if " trioproxy.request " not in line or "status=" not in line:
            continue
        status = re.search(r"\bstatus=(\d+)", line)
        api = re.search(r"\bapi=(\w+)", line)
        code = status.group(1) if status else "?"
        counts[(f"{api.group(1)} " if api else "") + code] += 1
        continued += "continued_from=" in line
        if code != "200":
            why = re.search(r"reason=('[^']*'|\"[^\"]*\")", line)
            message = re.search(r"message=('[^']*'|\"[^\"]*\")", line)
            path = re.search(r"path=('[^']*')", line)
            errors.append(" ".join(filter(None, (code, path and path.group(1), why and why.group(1),
                                                 message and message.group(1)[:160]))))
    return Served(counts, errors, continued)


def verdict(turns: list[tuple[int | None, Outcome]], served: Served) -> tuple[bool, str]:
    """(ok, the line's explanation) for one scenario: every turn, and the proxy meanwhile."""
    problems, errors = [], [*served.errors]
    for number, (status, outcome) in enumerate(turns, 1):
        where = f"turn {number}: " if len(turns) > 1 else ""
        if status is None:
            problems.append(f"{where}timed out")
        elif status != 0:
            problems.append(f"{where}exit {status}")
        if not outcome.final:
            problems.append(f"{where}no final answer")
        errors += [f"{where}{e[:200]}" for e in dict.fromkeys(outcome.errors)]
    if not turns[0][1].tools:
        problems.append("no tool step")
    requests = sum(served.counts.values())
    tools = ", ".join(dict.fromkeys(t for _, outcome in turns for t in outcome.tools))
    proxy = ", ".join(f"{n} x {key}" for key, n in sorted(served.counts.items())) or "no requests"
    facts = (f"{len(turns)} turn{'s' if len(turns) > 1 else ''}, tool steps "
             f"{sum(len(o.tools) for _, o in turns)}{f' ({tools})' if tools else ''}, "
             f"requests {requests}, continued {served.continued}, errors {len(errors)} ({proxy}); final answer {turns[-1][1].final[:50]!r}")
    ok = not problems and not errors
    return ok, facts if ok else f"{'; '.join(problems + errors)} | {facts}"


def run_scenario(agent: Agent, binary: Path, root: Path, scenario: str, prompts: tuple[str, ...],
                 origin: str, log_path: Path, timeout: float) -> tuple[bool, str]:
    """Run `prompts` as turns of one session in a fresh folder; the verdict and its line."""
    run = Run(root / agent.binary / scenario / "home", root / agent.binary / scenario / "work", origin)
    run.home.mkdir(parents=True)
    run.work.mkdir(parents=True)
    (run.work / "notes.txt").write_text("Shopping: apples, flour, eggs.\n")
    (run.work / "todo.txt").write_text("Call the plumber.\n")
    seen = len(log_path.read_text())
    turns = []
    for number, invocation in enumerate(agent.turns(run, prompts), 1):
        status, out, err = run_cli(binary, invocation, run, timeout)
        (run.home.parent / f"turn{number}.stdout.jsonl").write_text(out)
        (run.home.parent / f"turn{number}.stderr.txt").write_text(err)
        turns.append((status, agent.judge(list(json_lines(out)))))
        if status != 0:
            break
    return verdict(turns, proxy_requests(log_path.read_text()[seen:]))


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
    log_path = root / "trioproxy.log"
    demo = None
    try:
        versions = install(chosen, pins, root / "npm")
        demo, origin = start_demo(log_path, args.cut_every)
        print(f"trioproxy --demo at {origin}/v1; folder {root}", flush=True)
        results = []
        for agent in chosen:
            binary = root / "npm" / "node_modules" / ".bin" / agent.binary
            scenarios = [("one-shot", PROMPTS[:1])] + ([("session", PROMPTS)] if agent.sessions else [])
            for scenario, prompts in scenarios:
                ok, facts = run_scenario(agent, binary, root, scenario, prompts, origin, log_path, args.timeout)
                results.append(ok)
                print(f"{agent.name:<12} {versions[agent.package]:<10} {'ok' if ok else 'FAIL':<5} "
                      f"{scenario + ':':<9} {facts}", flush=True)
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
