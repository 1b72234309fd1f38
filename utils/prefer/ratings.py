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

# text_a / text_b: a short hash of each text shown, so that a rating of a text that was since
# regenerated is found at load (utils/prefer/dpo.py) instead of trained on.
FIELDS = ("timestamp", "rater", "prompt_id", "prompt", "system_a", "system_b", "choice", "winner",
          "text_a", "text_b")
LEGACY_FIELDS = FIELDS[:8]  # files written before the hashes: read as before, nothing to check
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


def text_hash(text: str) -> str:
    """12 hex digits of a text's SHA-256: the same text, the same hash (stored per rating)."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _shown_text(item: dict, side: str, system: str) -> str | None:
    """The text shown on one side: the rater's `text_a`/`text_b`, or the item's output."""
    text = item.get(f"text_{side}")
    return text if isinstance(text, str) else (item.get("outputs") or {}).get(system)


def _winner(choice: str, system_a: str, system_b: str) -> str:
    return {"a": system_a, "b": system_b, "tie": "tie", "skip": ""}[choice]


def rating_row(rater: str, item: dict, system_a: str, system_b: str, choice: str,
               timestamp: str | None = None) -> dict:
    """One rating as a FIELDS dict; the winner is the system behind the choice, 'tie' or ''. Notebook 09."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
    winner = _winner(choice, system_a, system_b)
    timestamp = timestamp or datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    hashes = {f"text_{side}": text_hash(text) if isinstance(text, str) else ""
              for side, system in (("a", system_a), ("b", system_b))
              for text in [_shown_text(item, side, system)]}
    return {"timestamp": timestamp, "rater": rater, "prompt_id": item["prompt_id"],
            "prompt": item["prompt"], "system_a": system_a, "system_b": system_b,
            "choice": choice, "winner": winner, **hashes}


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
        fields = FIELDS
        if size:
            f.seek(0)
            if _header(f.readline()) == list(LEGACY_FIELDS):
                fields = LEGACY_FIELDS  # an older file keeps its columns: every line the same
            f.seek(size - 1)
            text = ("" if f.read(1) == b"\n" else "\n") + text
        f.write((text + _csv_line(row.get(k, "") for k in fields)).encode("utf-8"))  # one write call
        f.flush()
        os.fsync(f.fileno())
    return path


def _parse_line(raw: bytes, fields=FIELDS) -> tuple[dict | None, str]:
    """A rating dict from one line of the file, or (None, why it is corrupted)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    try:
        values = next(csv.reader([text], strict=True))
    except (csv.Error, StopIteration) as error:
        return None, f"not CSV ({error})"
    if len(values) != len(fields):
        return None, f"{len(values)} fields instead of {len(fields)}"
    row = {"text_a": "", "text_b": "", **dict(zip(fields, map(_unescape, values)))}
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
    fields = next((f for f in (FIELDS, LEGACY_FIELDS) if _header(lines[0]) == list(f)), None)
    if fields is None:
        raise ValueError(f"{path} does not start with the header {','.join(FIELDS)}; found "
                         f"{lines[0][:200].decode('utf-8', 'replace')!r}")
    rows, skipped = [], {}
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        row, why = _parse_line(raw, fields)
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


# ---------------------------------------------------------------- checked against the items (notebook 12)


RATING_COLUMNS = ("rater", "prompt_id", "system_a", "system_b", "choice", "winner")


def ratings_table(ratings):
    """(table, its name) from a preferences.csv path or a loaded table; ValueError when neither."""
    if hasattr(ratings, "itertuples") and hasattr(ratings, "columns"):
        missing = [c for c in RATING_COLUMNS if c not in ratings.columns]
        if missing:
            raise ValueError(f"the ratings table lacks the column(s) {missing}; pass "
                             "load_ratings(path) or the path of a preferences.csv")
        table = ratings.copy()
        for column in ("text_a", "text_b"):
            if column not in table.columns:
                table[column] = ""
        table.attrs = dict(ratings.attrs)
        return table, "the ratings table"
    if not isinstance(ratings, (str, os.PathLike)):
        raise ValueError(f"ratings must be the path of a preferences.csv or load_ratings(path)'s "
                         f"table, got {type(ratings).__name__}")
    return load_ratings(ratings), str(ratings)


def changed_since_rated(row, texts) -> bool:
    """True when a stored hash of a shown text differs from the item's text now."""
    for side, system in (("a", row.system_a), ("b", row.system_b)):
        stored = getattr(row, f"text_{side}", "") or ""
        now = texts.get((row.prompt_id, system))
        if stored and now is not None and text_hash(now) != stored:
            return True
    return False


def warn_if_changed(count: int, source: str) -> None:
    """Warn that ratings of texts regenerated since were dropped (utils/prefer/dpo.py)."""
    if count:
        warnings.warn(f"{source}: {count} rating(s) were made on texts that differ from the "
                      "items' now (samples regenerated since?); they are dropped. Rate the new "
                      "texts, or pass the items that were rated", stacklevel=3)


def warn_contradictions(seen: dict, source: str) -> None:
    """Warn when the same two texts were preferred both ways: those DPO terms cancel."""
    both_ways = {key: votes for key, votes in seen.items() if len({w for w, _ in votes}) > 1}
    if not both_ways:
        return
    cancelled = sum(min(sum(w == winner for w, _ in votes) for winner in {w for w, _ in votes})
                    for votes in both_ways.values())
    raters = sorted({r for votes in both_ways.values() for _, r in votes})
    warnings.warn(f"{source}: {len(both_ways)} pair(s) of texts were preferred both ways (raters "
                  f"{', '.join(raters)}); {2 * cancelled} of the pairs cancel each other in DPO. "
                  "Check that the raters had the same instructions (notebook 09's agreement "
                  "table shows who differs)", stacklevel=3)
