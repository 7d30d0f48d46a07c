"""Reading an LLM inference trace in the Azure format: `TIMESTAMP,ContextTokens,GeneratedTokens`.

`read_trace` checks the whole file and returns its rows in time order, or raises `TraceError`
with one line that names the offending line of the file. `select` cuts a window, keeps a
deterministic sample and compresses time. Nothing here knows about the proxy or the emulators.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from attrs import frozen

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
# Logs merged from several front ends can be out of order by a little; a row further back
# than this is not jitter but a broken file.
JITTER_SECONDS = 1.0


class TraceError(ValueError):
    """A trace that cannot be replayed; the message is one line naming the file and row."""


@frozen
class Row:
    line: int  # line of the file (the header is line 1)
    at: float  # seconds after the trace's first request
    prompt: int  # ContextTokens
    completion: int  # GeneratedTokens


@frozen
class Trace:
    path: Path
    rows: tuple[Row, ...]
    note: str = ""  # how the rows were put in order, when they had to be

    @property
    def seconds(self) -> float:
        return self.rows[-1].at


@frozen
class Selection:
    """The rows a replay sends, with times relative to the window's start and compressed."""

    trace: Trace
    rows: tuple[Row, ...]
    seconds: float  # simulated length of the replay
    start_minute: float
    end_minute: float
    sample: float
    speed: float
    in_window: int  # rows of the window before sampling


def read_trace(path: str | Path) -> Trace:
    """Every row of the file, checked, in time order (see `_in_order` for what is sorted)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            if header is None:
                raise TraceError(f"{path}: empty file (expected the header {','.join(COLUMNS)})")
            index = _column_index(path, header)
            stamped = []
            for fields in reader:
                if not any(field.strip() for field in fields):
                    continue  # a blank line, usually the last one
                stamped.append(_parse_row(path, reader.line_num, fields, index))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TraceError(f"{path}: cannot be read: {exc}") from None
    if not stamped:
        raise TraceError(f"{path}: no rows after the header")
    _same_kind_of_time(path, stamped)
    ordered, note = _in_order(path, stamped)
    first = ordered[0][1]
    rows = tuple(Row(line, _seconds(when, first), prompt, completion)
                 for line, when, prompt, completion in ordered)
    return Trace(path, rows, note)


_Stamped = tuple[int, datetime | float, int, int]  # (line, time, prompt, completion)


def _column_index(path: Path, header: Sequence[str]) -> dict[str, int]:
    """Where each needed column is; names are matched ignoring case and spaces."""
    names = [name.strip().lower() for name in header]
    index = {}
    for column in COLUMNS:
        if column.lower() not in names:
            raise TraceError(f"{path} line 1: missing column {column} "
                             f"(header: {','.join(header)}; expected {','.join(COLUMNS)})")
        index[column] = names.index(column.lower())
    return index


def _parse_row(path: Path, line: int, fields: Sequence[str], index: dict[str, int]) -> _Stamped:
    where = f"{path} line {line}"
    values = {}
    for column, position in index.items():
        if position >= len(fields) or not fields[position].strip():
            raise TraceError(f"{where}: missing {column}")
        values[column] = fields[position].strip()
    return (line, _parse_time(where, values["TIMESTAMP"]),
            _parse_tokens(where, "ContextTokens", values["ContextTokens"]),
            _parse_tokens(where, "GeneratedTokens", values["GeneratedTokens"]))


def _parse_time(where: str, text: str) -> datetime | float:
    """An ISO date and time (Azure's '2023-11-16 18:17:03.9799600'), or plain seconds."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise TraceError(f"{where}: unparsable TIMESTAMP {text!r} "
                         "(expected a date and time such as 2023-11-16 18:17:03.97, or seconds)")
    return seconds


def _parse_tokens(where: str, column: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise TraceError(f"{where}: {column} {text!r} is not a whole number") from None
    if value < 0:
        raise TraceError(f"{where}: negative {column} {value}")
    return value


def _same_kind_of_time(path: Path, stamped: Sequence[_Stamped]) -> None:
    """Times must be all seconds, all naive or all with a time zone: mixed ones do not compare."""
    def kind(when: datetime | float) -> str:
        if isinstance(when, float):
            return "seconds"
        return "a date and time without time zone" if when.tzinfo is None else "a date and time with a time zone"

    first = kind(stamped[0][1])
    for line, when, _, _ in stamped:
        if kind(when) != first:
            raise TraceError(f"{path} line {line}: TIMESTAMP is {kind(when)}, "
                             f"line {stamped[0][0]}'s is {first}")


def _seconds(when: datetime | float, first: datetime | float) -> float:
    if isinstance(when, datetime) and isinstance(first, datetime):
        return (when - first).total_seconds()
    assert isinstance(when, float) and isinstance(first, float)
    return when - first


def _in_order(path: Path, stamped: list[_Stamped]) -> tuple[list[_Stamped], str]:
    """The rows in time order. Sorted only where that is plainly what the file means: a file
    written newest first is reversed, and rows out of order by at most JITTER_SECONDS
    (interleaved logs) are sorted; any other row that goes back in time is refused."""
    steps = [_seconds(b[1], a[1]) for a, b in zip(stamped, stamped[1:])]
    if all(step >= 0 for step in steps):
        return stamped, ""
    if all(step <= 0 for step in steps):
        return stamped[::-1], "rows were newest first: replayed oldest first"
    latest, latest_line, late, worst = stamped[0][1], stamped[0][0], 0, 0.0
    for line, when, _, _ in stamped[1:]:
        behind = _seconds(latest, when)
        if behind > JITTER_SECONDS:
            raise TraceError(f"{path} line {line}: TIMESTAMP {when} is {behind:,.3f} s before "
                             f"line {latest_line}'s: rows must be in time order")
        if behind > 0:
            late, worst = late + 1, max(worst, behind)
        else:
            latest, latest_line = when, line
    ordered = sorted(stamped, key=lambda row: _seconds(row[1], stamped[0][1]))
    return ordered, f"{late} rows up to {worst:.3f} s out of order (interleaved logs): sorted"


def select(trace: Trace, *, start_minute: float = 0.0, minutes: float | None = None,
           sample: float = 1.0, speed: float = 1.0, seed: int = 1) -> Selection:
    """The rows of minutes [start, start + minutes) of the trace (to its end without
    `minutes`), a `sample` share of them, with times from the window's start divided by
    `speed`. Sampling draws once per row of the file (seeded by `seed` and the row's line), so
    a window of a sample holds the same rows as a sample of the window."""
    begin = start_minute * 60.0
    end = trace.seconds if minutes is None else begin + minutes * 60.0
    window = [row for row in trace.rows
              if begin <= row.at and (row.at < end or (minutes is None and row.at == end))]
    span = f"minutes {start_minute:g}-{end / 60:.4g}"
    if not window:
        raise TraceError(f"{trace.path}: the window ({span}) holds no rows; the trace spans "
                         f"minutes 0-{trace.seconds / 60:.4g}")
    kept = [row for row in window if sample >= 1.0 or draw(seed, row.line, "sample") < sample]
    if not kept:
        raise TraceError(f"{trace.path}: --sample {sample:g} kept none of the {len(window)} "
                         f"rows of the window ({span})")
    rows = tuple(Row(row.line, (row.at - begin) / speed, row.prompt, row.completion)
                 for row in kept)
    # The replay lasts the window; a window to the trace's end ends at the last row's second.
    seconds = (math.ceil(end) - begin if minutes is None else end - begin) / speed
    return Selection(trace, rows, seconds, start_minute, end / 60.0, sample, speed, len(window))


def draw(seed: int, line: int, purpose: str) -> float:
    """A number in [0, 1) fixed by (seed, line, purpose): the same row draws the same number
    whatever else the replay keeps."""
    return random.Random(f"{purpose}/{seed}/{line}").random()


def attribution(path: Path) -> str:
    """The paragraph of a README.md beside the trace that names the file (where a data set's
    licence asks for attribution, it is kept there), as one line; '' when there is none."""
    readme = path.parent / "README.md"
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return ""
    for paragraph in text.split("\n\n"):
        if f"`{path.name}`" in paragraph:
            return " ".join(paragraph.split())
    return ""
