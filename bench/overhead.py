#!/usr/bin/env python3
"""How much does trioproxy add? Direct vs trioproxy vs LiteLLM's proxy, on one fast upstream.

    python bench/overhead.py              # full run (3 rounds of 5 s cells, LiteLLM included)
    python bench/overhead.py --quick      # smoke check: one round of 2 s cells
    python bench/overhead.py --no-litellm --duration 3 --rounds 5
    python bench/overhead.py --no-litellm --redis   # also the Redis ledger, one process and --workers 2

Set-up (2 cores): trioproxy and LiteLLM's proxy (one worker) are pinned to core 0 with
`taskset -c 0`; this script (the load generator) and the upstream run on core 1. The upstream
(`bench/upstream.py`) is a raw asyncio HTTP/1.1 server answering with pre-built bytes: a fixed
chat completion, or a fixed SSE stream of 23 events, keep-alive. trioproxy is pointed at it as
both Cerebras and Chutes, with quotas far above anything the run can spend; LiteLLM
(`litellm[proxy]==1.108.7`, installed on first use into bench/.cache/litellm-venv) has it as an
`openai/` model named qwen-3-coder.

Load: `wrk` (installed through apt-get when missing and allowed; `--load-tool builtin` to skip
it) measures requests/s and p50/p99 latency of complete responses; the built-in asyncio client
(`bench/loadgen.py`) measures time to the first `data:` byte of streams (and everything, when
wrk is not there). For each mode (plain, stream) and concurrency (1, 16, 64) the targets run
one after the other, in an order that rotates every round; the table shows the median over the
rounds. The `direct` rows show what the load generator and upstream manage on their core:
far above the proxies, so they are not the bottleneck.

Memory: trioproxy's RSS idle (after start), with 1,000 concurrent open streams (measured before
the load; the upstream's slow SSE endpoint keeps them open) and after the load.

With `--dashboard`, a target `trio+dash` is the same trioproxy process while Debian's headless
chromium (on the load core) has its dashboard open, polling once a second as it does for a user;
the tab is opened before each of its cells and closed after, so `trioproxy` and `trio+dash` cells
interleave in one run. `--dashboard poll` replaces chromium by a small process that only polls
the state once a second: the proxy's side of an open dashboard, without the browser's CPU on
the load generator's core. Either way the table shows trioproxy's own CPU time per request.

Every loop is bounded in count and time; everything listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import doors  # noqa: E402
import loadgen  # noqa: E402

CACHE = HERE / ".cache"
LITELLM_VERSION = "1.108.7"
HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"
PROXY_CORE, LOAD_CORE = 0, 1
CONCURRENCIES = (1, 16, 64)
MODES = ("plain", "stream")
OPEN_STREAMS = 1000
# Every client request carries this key: LiteLLM refuses to start without a strong master key;
# the upstream and trioproxy ignore it.
API_KEY = "sk-bench-" + secrets.token_hex(24)
MiB = 1024 * 1024
DASHBOARD_TARGET = "trio+dash"
CHROMIUM = "/usr/bin/chromium"


def chat_body(stream: bool, slow: bool = False) -> bytes:
    """A small coding-agent request (about 600 bytes)."""
    user = "__slow__ keep this stream open" if slow else (
        "Write a Python function that parses an ISO 8601 date and returns the weekday. "
        "Explain the edge cases briefly.")
    body = {
        "model": "qwen-3-coder",
        "messages": [
            {"role": "system", "content": "You are a careful coding assistant. Answer with code first, "
                                          "then a short explanation. Prefer the standard library."},
            {"role": "user", "content": user},
        ],
        "temperature": 0.2,
        "max_tokens": 512,
        "stream": stream,
    }
    return json.dumps(body).encode()


# --------------------------------------------------------------------------- processes


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pinned(cmd: list[str], core: int | None) -> list[str]:
    if core is None or not shutil.which("taskset"):
        return cmd
    return ["taskset", "-c", str(core), *cmd]


def http_get(port: int, path: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return 0


def http_post(port: int, path: str, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=body, method="POST",
                                     headers={"content-type": "application/json",
                                              "authorization": f"Bearer {API_KEY}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError as error:
        return 0, str(error).encode()


def wait_ready(proc: subprocess.Popen, port: int, path: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if http_get(port, path) == 200:
            return True
        time.sleep(0.2)
    return False


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def start_upstream(max_seconds: float) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "upstream.py"), "--port", "0", "--slow-interval", "1",
         "--slow-duration", "120", "--max-seconds", str(int(max_seconds))],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("READY "):
        stop(proc)
        raise SystemExit(f"the upstream did not start: {line!r}")
    return proc, int(line.split()[1])


def start_redis(folder: Path) -> tuple[subprocess.Popen, int]:
    """A redis-server of the benchmark's own (Debian's package), on the load core."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--redis needs redis-server (apt-get install redis-server)")
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(folder)]
    proc = subprocess.Popen(pinned(cmd, LOAD_CORE), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise SystemExit("redis-server did not start")


def start_trioproxy(python: str, upstream_port: int, log_level: str, logfile: Path,
                    state_file: str | None = None, redis_port: int | None = None,
                    workers: int = 1, env: dict[str, str] | None = None,
                    settings: str = "") -> tuple[subprocess.Popen, int]:
    """trioproxy on the proxy core; with `redis_port`, on the shared ledger there, and with
    `workers` > 1 as that many processes, on every core (they need more than one). `env` adds to
    its environment (bench/ab.py puts a checkout on PYTHONPATH); `settings` is TOML for its
    config file."""
    env = {**os.environ, **(env or {})}
    check = subprocess.run([python, "-c", "import trioproxy"], capture_output=True, text=True, timeout=60, env=env)
    if check.returncode != 0:
        raise SystemExit(f"{python} cannot import trioproxy (use --python): {check.stderr.strip()[-300:]}")
    port = free_port()
    upstream = f"http://{HOST}:{upstream_port}/v1"
    big = str(10**12)
    env = {**env, "HOST": HOST, "PORT": str(port), "LOG_LEVEL": log_level,
           "CEREBRAS_API_KEY": "csk-bench", "CEREBRAS_BASE_URL": upstream,
           "CHUTES_API_KEY": "cpk-bench", "CHUTES_BASE_URL": upstream,
           "CEREBRAS_REQUESTS_PER_MINUTE": big, "CEREBRAS_TOKENS_PER_MINUTE": big,
           "CEREBRAS_TOKENS_PER_DAY": big,
           # The quota state is saved as in normal use, but to a file of the benchmark's own,
           # never the user's real state file ("" turns saving off).
           "STATE_FILE": str(CACHE / "trioproxy-state.json") if state_file is None else state_file}
    cmd = [python, "-m", "trioproxy"]
    if redis_port is not None:
        settings = (f'quota_backend = "redis"\nredis_url = "redis://{HOST}:{redis_port}/0"\n'
                    f'redis_key_prefix = "bench-{port}:"\nworkers = {workers}\n') + settings
    if settings:
        file = logfile.with_suffix(".toml")
        file.write_text(settings)
        cmd += ["--config", str(file)]
    proc = subprocess.Popen(pinned(cmd, PROXY_CORE if workers == 1 else None), env=env, cwd=CACHE,
                            stdout=logfile.open("w"), stderr=subprocess.STDOUT)
    if not wait_ready(proc, port, "/healthz", 30):
        stop(proc)
        raise SystemExit(f"trioproxy did not start; see {logfile}:\n{logfile.read_text()[-2000:]}")
    return proc, port


class OpenDashboard:
    """Headless chromium with trioproxy's dashboard open in a tab while a cell runs.

    Started once on about:blank; tabs are opened and closed through its DevTools HTTP endpoint.
    It inherits this script's core (the load core), so the proxy's core sees only its requests.
    """

    SETTLE_SECONDS = 2.0

    def __init__(self, proxy_port: int, logfile: Path) -> None:
        self.url = f"http://{HOST}:{proxy_port}/dashboard/"
        self.debug_port = free_port()
        self.profile = tempfile.mkdtemp(prefix="chromium-", dir=CACHE)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
        self.proc = subprocess.Popen([CHROMIUM, *flags, f"--user-data-dir={self.profile}",
                                      f"--remote-debugging-port={self.debug_port}", "about:blank"],
                                     stdout=logfile.open("w"), stderr=subprocess.STDOUT)
        self.tab: str | None = None
        if not self._until(lambda: self._devtools("GET", "/json/version") is not None, 30):
            self.stop()
            raise SystemExit(f"chromium did not start; see {logfile}")

    def _devtools(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"http://{HOST}:{self.debug_port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read() or b"null")
        except (OSError, ValueError):
            return None

    @staticmethod
    def _until(check: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.2)
        return False

    def open(self) -> None:
        """Open the dashboard and wait until its page has loaded (its title is set)."""
        tab = self._devtools("PUT", "/json/new?" + urllib.parse.quote(self.url, safe=":/"))
        if not tab:
            raise SystemExit("chromium did not open the dashboard tab")
        self.tab = tab["id"]

        def loaded() -> bool:
            tabs = self._devtools("GET", "/json/list") or []
            return any(t.get("id") == self.tab and t.get("title") == "trioproxy dashboard" for t in tabs)

        if not self._until(loaded, 15):
            raise SystemExit(f"the dashboard did not load in chromium ({self.url})")
        # A new tab starts a renderer process: let that burst pass, so the cell measures a
        # dashboard that is open (polling once a second), not one being opened.
        time.sleep(self.SETTLE_SECONDS)

    def close(self) -> None:
        if self.tab is not None:
            self._devtools("GET", f"/json/close/{self.tab}")
            self.tab = None

    def stop(self) -> None:
        stop(self.proc)  # type: ignore[arg-type]
        shutil.rmtree(self.profile, ignore_errors=True)


# What the page does on the wire, and nothing else: its state once a second, bounded in time.
_POLLER = """
import sys, time, urllib.request
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    urllib.request.urlopen(sys.argv[1], timeout=5).read()
    time.sleep(1)
"""


class PollingDashboard:
    """The proxy's side of an open dashboard without a browser: a small process polling its state.

    Tells the proxy's cost apart from chromium's, which on 2 cores shares the load generator's.
    """

    def __init__(self, proxy_port: int) -> None:
        self.url = f"http://{HOST}:{proxy_port}/dashboard/api/state"
        self.proc: subprocess.Popen | None = None

    def open(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _POLLER, self.url])

    def close(self) -> None:
        stop(self.proc)
        self.proc = None

    def stop(self) -> None:
        self.close()


# --------------------------------------------------------------------------- LiteLLM


def litellm_venv() -> Path:
    return CACHE / "litellm-venv"


def ensure_litellm(timeout: float) -> tuple[Path | None, str]:
    """The `litellm` executable, installed into its own venv on first use; or None and why not."""
    venv = litellm_venv()
    exe = venv / "bin" / "litellm"
    python = venv / "bin" / "python"
    if exe.exists():
        probe = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                               capture_output=True, text=True, timeout=60)
        if probe.stdout.strip() == LITELLM_VERSION:
            return exe, "cached"
    log(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once; takes a few minutes)")
    installlog = CACHE / "litellm-install.log"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120,
                           capture_output=True)
        with installlog.open("w") as out:
            done = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                                   f"litellm[proxy]=={LITELLM_VERSION}"],
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"pip install did not finish within {timeout:.0f} s (log: {installlog})"
    except (OSError, subprocess.CalledProcessError) as error:
        return None, f"could not create the venv: {error}"
    if done.returncode != 0 or not exe.exists():
        tail = installlog.read_text(errors="replace").strip().splitlines()[-3:]
        return None, f"pip install failed (exit {done.returncode}): {' | '.join(tail)}"
    return exe, "installed"


def start_litellm(exe: Path, upstream_port: int, logfile: Path, timeout: float) -> tuple[subprocess.Popen | None, int, str]:
    port = free_port()
    config = CACHE / "litellm-config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: qwen-3-coder\n"
        "    litellm_params:\n"
        "      model: openai/qwen-3-coder-480b\n"
        f"      api_base: http://{HOST}:{upstream_port}/v1\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )
    env = {**os.environ, "LITELLM_MASTER_KEY": API_KEY,
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False", "NO_PROXY": "*", "no_proxy": "*"}
    for name in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL"):
        env.pop(name, None)
    proc = subprocess.Popen(pinned([str(exe), "--config", str(config), "--host", HOST, "--port", str(port),
                                    "--num_workers", "1"], PROXY_CORE),
                            env=env, cwd=CACHE, stdout=logfile.open("w"), stderr=subprocess.STDOUT)
    if not wait_ready(proc, port, "/health/liveliness", timeout):
        exited = proc.poll()
        stop(proc)
        tail = " | ".join(line.strip() for line in logfile.read_text(errors="replace").strip().splitlines()[-6:])
        why = f"exited with {exited}" if exited is not None else f"not ready within {timeout:.0f} s"
        return None, 0, f"LiteLLM {why} (log {logfile}): {tail}"
    status, answer = http_post(port, CHAT_PATH, chat_body(False))
    if status != 200:
        stop(proc)
        return None, 0, f"LiteLLM started but a chat request got {status}: {answer[:300]!r}"
    return proc, port, "ok"


# --------------------------------------------------------------------------- load


def ensure_wrk(allow_install: bool) -> str | None:
    found = shutil.which("wrk")
    if found or not allow_install:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    log("installing wrk with apt-get (once)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, timeout=300,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return shutil.which("wrk")


_WRK_RESULT = re.compile(r"RESULT (.*)")


def wrk_cell(wrk: str, port: int, body_file: Path, concurrency: int, duration: float) -> dict[str, Any]:
    seconds = max(1, round(duration))
    cmd = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", str(HERE / "post.lua"),
           f"http://{HOST}:{port}{CHAT_PATH}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                          env={**os.environ, "WRK_BODY_FILE": str(body_file), "WRK_API_KEY": API_KEY})
    match = _WRK_RESULT.search(done.stdout)
    if not match:
        raise RuntimeError(f"wrk failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    fields = {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}
    errors = sum(fields[k] for k in ("connect", "read", "write", "status", "timeout"))
    none = fields["requests"] == 0  # every request outlasted the cell: no latency to show
    return {"requests": fields["requests"], "errors": errors,
            "rps": fields["requests"] / (fields["duration_us"] / 1e6),
            "p50_ms": float("nan") if none else fields["p50_us"] / 1000,
            "p99_ms": float("nan") if none else fields["p99_us"] / 1000}


def builtin_cell(port: int, body: bytes, stream: bool, concurrency: int, duration: float) -> dict[str, Any]:
    result = asyncio.run(loadgen.run_load(HOST, port, CHAT_PATH, body, api_key=API_KEY, stream=stream,
                                          concurrency=concurrency, duration=duration))
    cell = {"requests": result.requests, "errors": result.errors, "rps": result.rps,
            "p50_ms": loadgen.percentile(result.latencies, 50) * 1000,
            "p99_ms": loadgen.percentile(result.latencies, 99) * 1000}
    if stream:
        cell["ttfb_p50_ms"] = loadgen.percentile(result.ttfbs, 50) * 1000
        cell["ttfb_p99_ms"] = loadgen.percentile(result.ttfbs, 99) * 1000
    if result.first_error:
        cell["first_error"] = result.first_error
    return cell


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_cell(wrk: str | None, port: int, mode: str, concurrency: int, duration: float,
                 warmup: float, body_files: dict[str, Path], pid: int | None = None) -> dict[str, Any]:
    """One cell; with the target's `pid`, also its CPU time per request during the measurement."""
    stream = mode == "stream"
    body = chat_body(stream)
    if warmup > 0:
        builtin_cell(port, body, stream, concurrency, warmup)
    cpu_before = cpu_seconds(pid) if pid else 0.0
    if wrk is None:
        cell = builtin_cell(port, body, stream, concurrency, duration)
    else:
        cell = wrk_cell(wrk, port, body_files[mode], concurrency, duration)
    if pid and cell["requests"]:
        cell["cpu_us"] = (cpu_seconds(pid) - cpu_before) / cell["requests"] * 1e6
    if wrk is not None and stream:
        probe = builtin_cell(port, body, stream, concurrency, max(0.5, duration / 2))
        cell["ttfb_p50_ms"], cell["ttfb_p99_ms"] = probe["ttfb_p50_ms"], probe["ttfb_p99_ms"]
        cell["builtin_rps"] = probe["rps"]
        cell["errors"] += probe["errors"]
        if "first_error" in probe:
            cell["first_error"] = probe["first_error"]
    return cell


def hold_streams(port: int, pid: int, count: int, timeout: float) -> dict[str, Any]:
    """Open `count` slow streams through the target; the RSS (max of a few samples) while open."""
    async def run() -> dict[str, Any]:
        started = time.monotonic()
        opened, holders = await loadgen.open_streams(HOST, port, CHAT_PATH, chat_body(True, slow=True),
                                                     count, api_key=API_KEY, timeout=timeout)
        took = time.monotonic() - started
        peak = 0
        for _ in range(5):
            peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(0.2)
        loadgen.close_streams(holders)
        await asyncio.sleep(0.5)
        return {"opened": opened, "asked": count, "open_seconds": took, "rss": peak}

    return asyncio.run(run())


# --------------------------------------------------------------------------- report


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def summarize(cells: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("rps", "p50_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms", "cpu_us")
    summary = {k: median([c[k] for c in cells if k in c]) for k in keys}
    summary["errors"] = sum(c["errors"] for c in cells)
    summary["requests"] = sum(c["requests"] for c in cells)
    summary["rounds"] = len(cells)
    summary["rps_all"] = [round(c["rps"], 1) for c in cells]
    return summary


def fmt(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def report(results: dict, targets: list[str], memory: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    lines = [f"load tool: {meta['load_tool']}; rounds: {meta['rounds']} x {meta['duration']} s per cell "
             f"(median shown); proxies on core {PROXY_CORE}, load + upstream on core {LOAD_CORE}", ""]
    head = f"{'mode':<6} {'conc':>4}  {'target':<9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ttfb p50':>9} {'ttfb p99':>9} {'errors':>6}"
    lines += [head, "-" * len(head)]
    for mode in MODES:
        for conc in CONCURRENCIES:
            for target in targets:
                s = results[(mode, conc, target)]
                lines.append(f"{mode:<6} {conc:>4}  {target:<9} {s['rps']:>8.0f} {fmt(s['p50_ms']):>8} "
                             f"{fmt(s['p99_ms']):>8} {fmt(s['ttfb_p50_ms']):>9} {fmt(s['ttfb_p99_ms']):>9} "
                             f"{s['errors']:>6}")
    lines += ["", "trioproxy vs the others (added = trioproxy minus direct, in ms):"]
    head = f"{'mode':<6} {'conc':>4}  {'rps x LiteLLM':>13} {'added p50':>9} {'added p99':>9} {'added ttfb p50':>14} {'LiteLLM added p50':>17}"
    lines += [head, "-" * len(head)]
    for mode in MODES:
        for conc in CONCURRENCIES:
            t, d = results[(mode, conc, "trioproxy")], results[(mode, conc, "direct")]
            lite = results.get((mode, conc, "litellm"))
            ratio = t["rps"] / lite["rps"] if lite and lite["rps"] > 0 else float("nan")
            lite_added = lite["p50_ms"] - d["p50_ms"] if lite else float("nan")
            lines.append(f"{mode:<6} {conc:>4}  {fmt(ratio, 1):>13} {fmt(t['p50_ms'] - d['p50_ms']):>9} "
                         f"{fmt(t['p99_ms'] - d['p99_ms']):>9} {fmt(t['ttfb_p50_ms'] - d['ttfb_p50_ms']):>14} "
                         f"{fmt(lite_added):>17}")
    if DASHBOARD_TARGET in targets:
        lines += ["", f"an open dashboard ({DASHBOARD_TARGET} vs trioproxy, the same process in the same run):"]
        lines += ["(proxy CPU per request: trioproxy's own CPU time over the cell's requests; the other"
                  " columns also feel chromium, which shares the load generator's core)"]
        head = (f"{'mode':<6} {'conc':>4}  {'CPU us/req':>10} {'with dash':>9} {'ratio':>6}  {'req/s ratio':>11} "
                f"{'p50 ms diff':>11} {'ttfb p50 diff':>13}")
        lines += [head, "-" * len(head)]
        for mode in MODES:
            for conc in CONCURRENCIES:
                t, w = results[(mode, conc, "trioproxy")], results[(mode, conc, DASHBOARD_TARGET)]
                ratio = w["rps"] / t["rps"] if t["rps"] > 0 else float("nan")
                cpu_ratio = w["cpu_us"] / t["cpu_us"] if t["cpu_us"] > 0 else float("nan")
                lines.append(f"{mode:<6} {conc:>4}  {fmt(t['cpu_us'], 1):>10} {fmt(w['cpu_us'], 1):>9} "
                             f"{fmt(cpu_ratio, 3):>6}  {fmt(ratio, 3):>11} {fmt(w['p50_ms'] - t['p50_ms'], 3):>11} "
                             f"{fmt(w['ttfb_p50_ms'] - t['ttfb_p50_ms'], 3):>13}")
    if "redis" in targets:
        lines += shared_ledger_lines(results, [t for t in targets if t.startswith("redis-w")][0])
    lines += ["", "memory (RSS):"]
    for name, m in memory.items():
        parts = [f"idle {m['idle'] / MiB:.1f} MiB"]
        if "after_load" in m:
            parts.append(f"after load {m['after_load'] / MiB:.1f} MiB")
        if "streams" in m:
            st = m["streams"]
            parts.append(f"{st['opened']}/{st['asked']} open streams {st['rss'] / MiB:.1f} MiB "
                         f"(opened in {st['open_seconds']:.1f} s)")
        lines.append(f"  {name:<9} " + ", ".join(parts))
    lines += ["", "issue 5 targets:"] + check_targets(results, memory, "litellm" in targets)
    return lines


def shared_ledger_lines(results: dict, workers_target: str) -> list[str]:
    """The Redis ledger's cost next to the memory ledger, and what more workers bring."""
    lines = ["", f"shared quota ledger (Redis) vs memory; {workers_target}: that many workers, unpinned:"]
    head = f"{'mode':<6} {'conc':>4}  {'redis added p50 ms':>18} {'redis rps / memory':>18} {workers_target + ' rps / redis':>20}"
    lines += [head, "-" * len(head)]
    for mode in MODES:
        for conc in CONCURRENCIES:
            memory, redis, workers = (results[(mode, conc, t)] for t in ("trioproxy", "redis", workers_target))
            lines.append(f"{mode:<6} {conc:>4}  {fmt(redis['p50_ms'] - memory['p50_ms'], 3):>18} "
                         f"{fmt(redis['rps'] / memory['rps'] if memory['rps'] else float('nan')):>18} "
                         f"{fmt(workers['rps'] / redis['rps'] if redis['rps'] else float('nan')):>20}")
    added = results[("plain", 1, "redis")]["p50_ms"] - results[("plain", 1, "trioproxy")]["p50_ms"]
    lines += ["", "issue 10 targets:",
              f"  [{'PASS' if added < 0.3 else 'MISS'}] Redis ledger's added p50 at concurrency 1 (plain) < 0.3 ms: {added:.3f} ms"]
    for mode in MODES:
        redis, workers = (results[(mode, 64, t)]["rps"] for t in ("redis", workers_target))
        lines.append(f"  [info] {mode} req/s at concurrency 64 on the Redis ledger: {redis:.0f} with 1 process, "
                     f"{workers:.0f} with {workers_target} ({fmt(workers / redis if redis else float('nan'))}x)")
    return lines


def check_targets(results: dict, memory: dict[str, Any], with_litellm: bool) -> list[str]:
    def line(ok: bool | None, text: str) -> str:
        return f"  [{'PASS' if ok else 'MISS' if ok is False else 'n/a '}] {text}"

    out = []
    added = results[("plain", 1, "trioproxy")]["p50_ms"] - results[("plain", 1, "direct")]["p50_ms"]
    out.append(line(added < 1.0, f"added p50 at concurrency 1 (plain) < 1 ms: {added:.2f} ms"))
    added_ttfb = results[("stream", 1, "trioproxy")]["ttfb_p50_ms"] - results[("stream", 1, "direct")]["ttfb_p50_ms"]
    out.append(line(added_ttfb < 1.0, f"added time to first event at concurrency 1 < 1 ms: {added_ttfb:.2f} ms"))
    for mode in MODES:
        if with_litellm:
            lite = results[(mode, 64, "litellm")]["rps"]
            if lite > 0:
                ratio = results[(mode, 64, "trioproxy")]["rps"] / lite
                out.append(line(ratio >= 10, f"{mode} req/s at concurrency 64 >= 10x LiteLLM: {ratio:.1f}x"))
            else:
                out.append(line(None, f"{mode} req/s at concurrency 64 >= 10x LiteLLM: LiteLLM completed "
                                      "no request within a cell (use a longer --duration)"))
        else:
            out.append(line(None, f"{mode} req/s at concurrency 64 >= 10x LiteLLM: LiteLLM not measured"))
    mem = memory["trioproxy"]
    out.append(line(mem["idle"] < 60 * 1e6, f"idle RSS < 60 MB: {mem['idle'] / 1e6:.1f} MB"))
    if "streams" in mem:
        st = mem["streams"]
        ok = st["rss"] < 150 * 1e6 and st["opened"] == st["asked"]
        out.append(line(ok, f"{st['asked']} open streams < 150 MB: {st['rss'] / 1e6:.1f} MB ({st['opened']} opened)"))
    errors = sum(s["errors"] for (_, _, target), s in results.items() if target in ("trioproxy", DASHBOARD_TARGET))
    out.append(line(errors == 0, f"no errors through trioproxy: {errors}"))
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark trioproxy's overhead against direct access and LiteLLM.")
    parser.add_argument("--quick", action="store_true", help="smoke check: 1 round of 2 s cells")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (no install, no runs)")
    parser.add_argument("--duration", type=float, help="seconds per cell (default 5, --quick 2)")
    parser.add_argument("--rounds", type=int, help="rounds over all cells (default 3, --quick 1)")
    parser.add_argument("--load-tool", choices=("auto", "wrk", "builtin"), default="auto",
                        help="auto: wrk when it is installed or installable with apt-get, else builtin")
    parser.add_argument("--python", default=sys.executable, help="interpreter that has trioproxy installed")
    parser.add_argument("--log-level", default="WARN", help="trioproxy's LOG_LEVEL during the run (default WARN)")
    parser.add_argument("--state-file", help="trioproxy's STATE_FILE (default bench/.cache/trioproxy-state.json; "
                                             "an empty string turns state saving off)")
    parser.add_argument("--streams", type=int, default=OPEN_STREAMS, help="open streams for the RSS measurement")
    parser.add_argument("--litellm-streams", action="store_true",
                        help="also measure LiteLLM's RSS with the open streams (slow)")
    parser.add_argument("--no-doors", action="store_true",
                        help="skip the per-door rows (Chat Completions, Responses, Messages, Gemini at concurrency 1)")
    parser.add_argument("--dashboard", nargs="?", const="chromium", choices=("chromium", "poll"),
                        help=f"add the target {DASHBOARD_TARGET}: trioproxy with its dashboard open in headless "
                             "chromium, or (poll) only polled once a second as the page does")
    parser.add_argument("--json", type=Path, help="also write all measurements to this file")
    parser.add_argument("--max-minutes", type=float, default=40, help="hard bound on the whole run")
    parser.add_argument("--redis", action="store_true",
                        help="also trioproxy on the Redis ledger (a redis-server of its own), one process and --workers")
    parser.add_argument("--workers", type=int, default=2, help="workers of the Redis target with workers (default 2)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.max_minutes * 60
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {LOAD_CORE})
    else:
        log("warning: fewer than 2 cores; nothing is pinned and the numbers mean little")
        global PROXY_CORE
        PROXY_CORE = None  # type: ignore[assignment]

    wrk = None if args.load_tool == "builtin" else ensure_wrk(allow_install=True)
    if args.load_tool == "wrk" and wrk is None:
        raise SystemExit("wrk is not installed and could not be installed")
    load_tool = (f"wrk ({wrk}) for req/s and latency, built-in asyncio client for time to first event"
                 if wrk else "built-in asyncio client (bench/loadgen.py)")

    litellm_exe, litellm_note = (None, "skipped (--no-litellm)")
    if not args.no_litellm:
        litellm_exe, litellm_note = ensure_litellm(timeout=900)
        if litellm_exe is None:
            log(f"LiteLLM unavailable: {litellm_note}")

    procs: list[subprocess.Popen] = []
    dashboard: OpenDashboard | PollingDashboard | None = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-", dir=CACHE))
    logs = CACHE / "logs"  # kept after the run
    logs.mkdir(exist_ok=True)
    body_files = {}
    for mode in MODES:
        body_files[mode] = tmp / f"{mode}.json"
        body_files[mode].write_bytes(chat_body(mode == "stream"))
    try:
        upstream, upstream_port = start_upstream(args.max_minutes * 60 + 60)
        procs.append(upstream)
        ports = {"direct": upstream_port}
        proxy, ports["trioproxy"] = start_trioproxy(args.python, upstream_port, args.log_level, logs / "trioproxy.log",
                                                     args.state_file)
        procs.append(proxy)
        pids = {"trioproxy": proxy.pid}
        if args.redis:
            redis, redis_port = start_redis(tmp)
            procs.append(redis)
            for name, workers in (("redis", 1), (f"redis-w{args.workers}", args.workers)):
                shared, ports[name] = start_trioproxy(args.python, upstream_port, args.log_level, logs / f"trioproxy-{name}.log",
                                                      "", redis_port, workers)
                procs.append(shared)
        if litellm_exe is not None:
            lite, lite_port, note = start_litellm(litellm_exe, upstream_port, logs / "litellm.log", timeout=180)
            if lite is None:
                litellm_note = note
                log(f"LiteLLM unavailable: {note}")
            else:
                procs.append(lite)
                ports["litellm"], pids["litellm"] = lite_port, lite.pid
        if args.dashboard == "chromium":
            dashboard = OpenDashboard(ports["trioproxy"], logs / "chromium.log")
        elif args.dashboard == "poll":
            dashboard = PollingDashboard(ports["trioproxy"])
        if dashboard is not None:
            ports[DASHBOARD_TARGET] = ports["trioproxy"]
        targets = list(ports)
        time.sleep(1.0)
        memory: dict[str, Any] = {name: {"idle": rss_bytes(pid)} for name, pid in pids.items()}
        log(f"targets: {', '.join(f'{t} :{p}' for t, p in ports.items())}; load tool: {load_tool}")
        # Open streams on the fresh proxies, before the load: the load leaves per-request quota
        # entries (kept for a minute, and for the day by the daily windows) and allocator arenas
        # behind, which is not what open streams cost. "after load" in the table shows that part.
        log(f"opening {args.streams} slow streams through trioproxy")
        memory["trioproxy"]["streams"] = hold_streams(ports["trioproxy"], pids["trioproxy"], args.streams, 60)
        if "litellm" in pids and args.litellm_streams:
            log(f"opening {args.streams} slow streams through LiteLLM")
            memory["litellm"]["streams"] = hold_streams(ports["litellm"], pids["litellm"], args.streams, 120)
        time.sleep(1.0)  # let the upstream notice the closed streams

        raw: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
        warmup = 0.2 if args.quick else 1.0
        for round_ in range(args.rounds):
            for mode in MODES:
                for conc in CONCURRENCIES:
                    order = targets[round_ % len(targets):] + targets[:round_ % len(targets)]
                    for target in order:
                        if time.monotonic() > deadline:
                            raise SystemExit("--max-minutes reached")
                        pid = pids["trioproxy"] if target in ("trioproxy", DASHBOARD_TARGET) else None
                        if target == DASHBOARD_TARGET:
                            dashboard.open()  # type: ignore[union-attr]
                        try:
                            cell = measure_cell(wrk, ports[target], mode, conc, args.duration, warmup, body_files, pid)
                        finally:
                            if target == DASHBOARD_TARGET:
                                dashboard.close()  # type: ignore[union-attr]
                        raw.setdefault((mode, conc, target), []).append(cell)
                        log(f"round {round_ + 1}/{args.rounds} {mode:<6} c={conc:<3} {target:<9} "
                            f"{cell['rps']:8.0f} req/s p50 {cell['p50_ms']:.2f} ms errors {cell['errors']}"
                            + (f" ({cell['first_error'][:120]})" if cell.get("first_error") else ""))

        for name, pid in pids.items():
            memory[name]["after_load"] = rss_bytes(pid)
        door_lines = [] if args.no_doors else doors.measure(HOST, ports["trioproxy"], max(3, args.rounds),
                                                                args.duration, API_KEY)

        results = {key: summarize(cells) for key, cells in raw.items()}
        meta = {"load_tool": load_tool, "rounds": args.rounds, "duration": args.duration,
                "litellm": litellm_note, "litellm_version": LITELLM_VERSION if "litellm" in ports else None,
                "log_level": args.log_level, "python": args.python}
        lines = report(results, targets, memory, meta) + door_lines
        if "litellm" not in ports:
            lines.insert(0, f"LiteLLM not measured: {litellm_note}")
        print("\n".join(lines))
        if args.json:
            args.json.write_text(json.dumps({
                "meta": meta, "memory": memory,
                "cells": [{"mode": m, "concurrency": c, "target": t, "rounds": cells}
                          for (m, c, t), cells in raw.items()],
                "summary": [{"mode": m, "concurrency": c, "target": t, **s} for (m, c, t), s in results.items()],
            }, indent=1))
        return 0
    finally:
        if dashboard is not None:
            dashboard.stop()
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
