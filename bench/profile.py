#!/usr/bin/env python3
"""Profile trioproxy under load with py-spy, the same set-up as bench/overhead.py.

    python bench/profile.py --mode stream --concurrency 16 --seconds 15

trioproxy runs pinned to core 0 against bench/upstream.py; wrk (or the built-in client) and
py-spy (`record --nonblocking`, raw collapsed stacks) run on core 1. Prints the functions with
the most samples on top of the stack (self) and anywhere in it (inclusive), and writes the
collapsed stacks to bench/.cache/profile-<mode>.txt (feed them to flamegraph.pl or speedscope).
py-spy is installed from PyPI into bench/.cache/tools-venv when it is not on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import overhead  # noqa: E402


def ensure_py_spy() -> str:
    found = shutil.which("py-spy")
    if found:
        return found
    venv = overhead.CACHE / "tools-venv"
    exe = venv / "bin" / "py-spy"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", "py-spy"], check=True, timeout=600)
    return str(exe)


def frame_name(frame: str) -> str:
    """`function (path/to/module.py:123)` -> `module.py:function`."""
    name, _, where = frame.partition(" (")
    filename = where.rsplit(":", 1)[0]
    parts = Path(filename).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else filename
    return f"{short}:{name}"


def summarize(collapsed: Path, top: int) -> list[str]:
    self_counts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = other = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")
                  and not f.startswith("thread ")]
        if not frames:
            continue
        if not any(name.endswith(":unrolled_run") for name in frames):
            other += count  # trio's idle worker threads (getaddrinfo, file writes): not the event loop
            continue
        total += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return ["no samples of the event loop thread"]
    lines = [f"{total} samples of the trio event loop thread ({other} of other threads left out); "
             "percentages of the former", "", "self (top of stack):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in self_counts.most_common(top)]
    lines += ["", "inclusive (anywhere in the stack):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top * 2)]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=overhead.MODES, default="stream")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--blocking", action="store_true",
                        help="pause the process for each sample: slower, but whole stacks (nonblocking "
                             "sampling often catches truncated stacks, which skews the inclusive figures)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--log-level", default="WARN")
    args = parser.parse_args()

    overhead.CACHE.mkdir(parents=True, exist_ok=True)
    overhead.os.sched_setaffinity(0, {overhead.LOAD_CORE})
    py_spy = ensure_py_spy()
    wrk = overhead.ensure_wrk(allow_install=True)
    logs = overhead.CACHE / "logs"
    logs.mkdir(exist_ok=True)
    out = overhead.CACHE / f"profile-{args.mode}.txt"
    body_file = overhead.CACHE / f"profile-{args.mode}.json"
    body_file.write_bytes(overhead.chat_body(args.mode == "stream"))
    upstream, upstream_port = overhead.start_upstream(args.seconds + 600)
    proxy = None
    try:
        proxy, port = overhead.start_trioproxy(args.python, upstream_port, args.log_level, logs / "profile-trioproxy.log")
        load: dict = {}

        def run_load() -> None:
            if wrk:
                load.update(overhead.wrk_cell(wrk, port, body_file, args.concurrency, args.seconds + 2))
            else:
                load.update(asyncio.run(overhead.loadgen.run_load(
                    overhead.HOST, port, overhead.CHAT_PATH, body_file.read_bytes(), stream=args.mode == "stream",
                    concurrency=args.concurrency, duration=args.seconds + 2)).__dict__)

        thread = threading.Thread(target=run_load)
        thread.start()
        mode = [] if args.blocking else ["--nonblocking"]
        subprocess.run([py_spy, "record", *mode, "--rate", str(args.rate), "--duration", str(args.seconds),
                        "--format", "raw", "--output", str(out), "--pid", str(proxy.pid)],
                       check=True, timeout=args.seconds + 60, capture_output=True)
        thread.join(timeout=args.seconds + 120)
        rps = load.get("rps") or 0
        print(f"trioproxy {args.mode} at concurrency {args.concurrency}: {rps:.0f} req/s while profiled "
              f"(load: {'wrk' if wrk else 'built-in'}); stacks in {out}")
        print("\n".join(summarize(out, args.top)))
        return 0
    finally:
        overhead.stop(proxy)
        overhead.stop(upstream)


if __name__ == "__main__":
    sys.exit(main())
