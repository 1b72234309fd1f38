"""Durable storage of human preference ratings: preferences.csv, one rating a line. Notebook 09.

The A/B rater (utils/prefer/rater.py) appends each click at once and fsyncs it, so a crash loses no
click already made; `load_ratings` skips and reports a corrupted line instead of failing.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from utils.config import runs_dir

FIELDS = ("timestamp", "rater", "prompt_id", "prompt", "system_a", "system_b", "choice", "winner")
CHOICES = ("a", "b", "tie", "skip")
FILENAME = "preferences.csv"


def default_path() -> Path:
    """Where real ratings go: runs_dir() / preferences.csv ($POET_RUNS_DIR or runs/). Notebook 09."""
    return runs_dir() / FILENAME


def _escape(text: str) -> str:
    """One physical line per rating: backslash, CR and LF become \\\\, \\r and \\n."""
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


def _unescape(text: str) -> str:
    out, chars = [], iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append({"n": "\n", "r": "\r", "\\": "\\"}.get(nxt, "\\" + nxt))
        else:
            out.append(ch)
    return "".join(out)


def _winner(choice: str, system_a: str, system_b: str) -> str:
    return {"a": system_a, "b": system_b, "tie": "tie", "skip": ""}[choice]


def rating_row(rater: str, item: dict, system_a: str, system_b: str, choice: str,
               timestamp: str | None = None) -> dict:
    """One rating as a FIELDS dict; the winner is the system behind the choice, 'tie' or ''. Notebook 09."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
    winner = _winner(choice, system_a, system_b)
    timestamp = timestamp or datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return {"timestamp": timestamp, "rater": rater, "prompt_id": item["prompt_id"],
            "prompt": item["prompt"], "system_a": system_a, "system_b": system_b,
            "choice": choice, "winner": winner}


def _csv_line(values) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([_escape(str(v)) for v in values])
    return buffer.getvalue()


def append_rating(path: str | Path, row: dict) -> Path:
    """Append one rating line and fsync it: after this returns, a crash cannot lose it. Notebook 09.

    The header is written only when the file is new or empty. If a crash left a last line
    without its newline, a newline goes first so that the torn line stays on its own.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        size = os.fstat(f.fileno()).st_size
        text = _csv_line(FIELDS) if size == 0 else ""
        if size:
            f.seek(size - 1)
            text = ("" if f.read(1) == b"\n" else "\n") + text
        f.write((text + _csv_line(row[k] for k in FIELDS)).encode("utf-8"))  # one write call
        f.flush()
        os.fsync(f.fileno())
    return path


def _parse_line(raw: bytes) -> tuple[dict | None, str]:
    """A rating dict from one line of the file, or (None, why it is corrupted)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    try:
        values = next(csv.reader([text], strict=True))
    except (csv.Error, StopIteration) as error:
        return None, f"not CSV ({error})"
    if len(values) != len(FIELDS):
        return None, f"{len(values)} fields instead of {len(FIELDS)}"
    row = dict(zip(FIELDS, map(_unescape, values)))
    if row["choice"] not in CHOICES:
        return None, f"unknown choice {row['choice']!r}"
    if not (row["rater"] and row["system_a"] and row["system_b"]) or row["system_a"] == row["system_b"]:
        return None, "empty rater or system, or one system against itself"
    if row["winner"] != _winner(row["choice"], row["system_a"], row["system_b"]):
        return None, "winner does not match the choice"
    return row, ""


def _header(raw: bytes) -> list[str]:
    """The header's names as CSV reads them: an Excel byte-order mark and quotes are fine."""
    try:
        return [name.strip() for name in next(csv.reader([raw.decode("utf-8-sig")]), [])]
    except (UnicodeDecodeError, csv.Error):
        return []


def load_ratings(path: str | Path | None = None) -> pd.DataFrame:
    """The ratings of a preferences.csv; corrupted lines are skipped with a warning. Notebook 09.

    The skipped lines are in `df.attrs["skipped"]` ({line number: reason}). An empty file, or
    one with no valid rating, raises ValueError.
    """
    path = Path(path) if path is not None else default_path()
    if not path.exists():
        raise FileNotFoundError(f"no ratings file at {path}: rate some pairs first")
    lines = [line.rstrip(b"\r") for line in path.read_bytes().split(b"\n")]
    if not any(line.strip() for line in lines[1:]):
        raise ValueError(f"{path} holds no ratings (the file is empty): nothing to analyse")
    if _header(lines[0]) != list(FIELDS):
        raise ValueError(f"{path} does not start with the header {','.join(FIELDS)}; found "
                         f"{lines[0][:200].decode('utf-8', 'replace')!r}")
    rows, skipped = [], {}
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        row, why = _parse_line(raw)
        if row:
            rows.append(row)
        else:
            skipped[number] = why
    if skipped:
        first = next(iter(skipped.items()))
        warnings.warn(f"{path.name}: skipped {len(skipped)} corrupted line(s) {sorted(skipped)}; "
                      f"line {first[0]}: {first[1]}", stacklevel=2)
    if not rows:
        raise ValueError(f"{path} has no valid rating ({len(skipped)} corrupted line(s) skipped)")
    df = pd.DataFrame(rows, columns=list(FIELDS))
    df.attrs["skipped"] = skipped
    return df
