#!/usr/bin/env python3
"""What the JSON library costs on trioproxy's hot path: the standard library vs msgspec.

    python bench/json_codec.py [--repeats 7]

Three documents a request handles: a coding agent's request (about 100 KB of code context and
a few tools; parsed once, written once to the provider, written once more for the token
estimate), a non-streamed completion, and one streamed event (parsed and re-written per event).
Prints the median time of one parse plus one write, per library, and the ratio.
"""

import argparse
import json
import statistics
import sys
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trioproxy.jsoncodec import dump_json, load_json  # noqa: E402

CODE = "def parse(value: str) -> int:\n    \"\"\"Parse a number, é included.\"\"\"\n    return int(value.strip())\n\n"
TOOL = {"type": "function", "function": {"name": "read_file", "description": "Read a file of the workspace.",
                                         "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                                                        "required": ["path"]}}}


def documents() -> dict[str, Any]:
    request = {"model": "qwen-3-coder", "stream": True, "temperature": 0,
               "messages": [{"role": "system", "content": "You are Roo, a coding agent. " * 40},
                            *({"role": "user" if i % 2 else "assistant", "content": CODE * 50} for i in range(20))],
               "tools": [TOOL] * 8}
    completion = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "qwen-3-coder-480b",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": CODE * 6},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 25000, "completion_tokens": 400, "total_tokens": 25400}}
    event = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "qwen-3-coder-480b",
             "choices": [{"index": 0, "delta": {"content": " word"}, "finish_reason": None}]}
    return {"agent request": request, "completion": completion, "stream event": event}


def median_seconds(run: Any, number: int, repeats: int) -> float:
    return statistics.median(timeit.repeat(run, number=number, repeat=repeats)) / number


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"{'document':<14} {'bytes':>8} {'json µs':>10} {'msgspec µs':>11} {'ratio':>6}")
    for name, document in documents().items():
        raw = json.dumps(document).encode()
        number = max(20, 2_000_000 // len(raw))
        stdlib = median_seconds(lambda: json.dumps(json.loads(raw), ensure_ascii=False).encode(), number, args.repeats)
        ours = median_seconds(lambda: dump_json(load_json(raw)), number, args.repeats)
        print(f"{name:<14} {len(raw):>8} {stdlib * 1e6:>10.1f} {ours * 1e6:>11.1f} {stdlib / ours:>5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
