"""Human preference ratings: rater items, durable storage, win rates, Bradley-Terry, agreement.

`preferences.csv` holds one rating a line (FIELDS). The A/B rater (utils/rater.py) appends each
click at once and fsyncs it, so a crash loses no click already made; `load_ratings` skips and
reports a corrupted line instead of failing. Introduced in notebook 09.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .config import runs_dir

FIELDS = ("timestamp", "rater", "prompt_id", "prompt", "system_a", "system_b", "choice", "winner")
CHOICES = ("a", "b", "tie", "skip")
FILENAME = "preferences.csv"
SAMPLES = "samples.jsonl"
TEXT_KEYS = ("generation", "completion", "output", "text")  # where a sample's text may live


def default_path() -> Path:
    """Where real ratings go: runs_dir() / preferences.csv ($POET_RUNS_DIR or runs/). Notebook 09."""
    return runs_dir() / FILENAME


# ---------------------------------------------------------------- items to rate


def prompt_id(prompt: str) -> str:
    """A short stable id of a prompt (8 hex digits of its SHA-1): the same prompt, the same id."""
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:8]


def validate_items(items) -> list[dict]:
    """Items as {prompt_id, prompt, outputs}; ValueError for one with fewer than two systems."""
    items = list(items)
    if not items:
        raise ValueError("no items to rate: give at least one {prompt, outputs} item")
    checked = []
    for n, item in enumerate(items):
        outputs = item.get("outputs") if isinstance(item, dict) else None
        if not isinstance(outputs, dict) or len(outputs) < 2:
            count = len(outputs) if isinstance(outputs, dict) else 0
            raise ValueError(f"item {n} has {count} system(s) in 'outputs'; a comparison needs "
                             "at least two, e.g. {'prompt': ..., 'outputs': {'greedy': ..., 'sampled': ...}}")
        prompt = item.get("prompt")
        if not isinstance(prompt, str):
            raise ValueError(f"item {n} has no 'prompt' string")
        bad = [name for name, text in outputs.items() if not isinstance(text, str)]
        if bad:
            raise ValueError(f"item {n}: the output of {bad[0]!r} is not a string")
        pid = str(item.get("prompt_id") or prompt_id(prompt))
        checked.append({"prompt_id": pid, "prompt": prompt, "outputs": dict(outputs)})
    return checked


def pair_items(items) -> list[dict]:
    """One item per pair of systems: 3 systems on a prompt give 3 pairs (names sorted). Notebook 09."""
    pairs = []
    for item in validate_items(items):
        for first, second in itertools.combinations(sorted(item["outputs"]), 2):
            outputs = {first: item["outputs"][first], second: item["outputs"][second]}
            pairs.append({**item, "outputs": outputs})
    return pairs


def items_from_generations(prompts, generations: dict, prompt_ids=None) -> list[dict]:
    """Rater items from {system: [text per prompt]}, all systems on the same prompts. Notebook 09."""
    prompts = list(prompts)
    if len(generations) < 2:
        raise ValueError(f"got {len(generations)} system(s) {list(generations)}; "
                         "a preference needs at least two to compare")
    for name, texts in generations.items():
        if len(texts) != len(prompts):
            raise ValueError(f"system {name!r} has {len(texts)} generations for {len(prompts)} prompts")
    ids = list(prompt_ids) if prompt_ids is not None else [prompt_id(p) for p in prompts]
    items = [{"prompt_id": pid, "prompt": prompt,
              "outputs": {name: texts[n] for name, texts in generations.items()}}
             for n, (pid, prompt) in enumerate(zip(ids, prompts))]
    return validate_items(items)


def read_samples_file(path: str | Path, default_system: str) -> list[dict]:
    """(system, prompt, text) rows of a samples.jsonl; lines without prompt or text are skipped.

    The system is the line's `system` or `model` field, else `default_system` (the run name).
    """
    rows, skipped = [], []
    for n, line in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        text = next((record[k] for k in TEXT_KEYS if isinstance(record, dict)
                     and isinstance(record.get(k), str)), None)
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or text is None:
            skipped.append(n)
            continue
        system = record.get("system") or record.get("model") or default_system
        rows.append({"system": str(system), "prompt": record["prompt"], "text": text})
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} line(s) without a prompt and a generation "
                      f"(lines {skipped[:10]})", stacklevel=2)
    return rows


def find_sample_runs(root: str | Path | None = None) -> list[Path]:
    """Run folders under root (default runs_dir()) that hold a samples.jsonl, sorted by name."""
    root = Path(root) if root is not None else runs_dir()
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob(f"*/{SAMPLES}"))


def items_from_runs(run_dirs, min_systems: int = 2) -> list[dict]:
    """Rater items from run folders' samples.jsonl, matched on the prompt text. Notebook 09.

    A system name used by two runs (both call theirs 'stage2') becomes 'run:stage2'.
    The first generation of a system for a prompt is used; prompts seen by fewer than
    `min_systems` systems are dropped.
    """
    per_run = {}
    for run in map(Path, run_dirs):
        path = run / SAMPLES if run.is_dir() else run  # a run folder or its samples.jsonl
        name = path.parent.name
        per_run[name] = read_samples_file(path, name)
    owners = {}
    for run, rows in per_run.items():
        for row in rows:
            owners.setdefault(row["system"], set()).add(run)
    table = {}  # prompt -> {system: text}
    for run, rows in per_run.items():
        for row in rows:
            name = row["system"] if len(owners[row["system"]]) == 1 else f"{run}:{row['system']}"
            table.setdefault(row["prompt"], {}).setdefault(name, row["text"])
    items = [{"prompt": p, "outputs": outs} for p, outs in table.items() if len(outs) >= min_systems]
    if not items:
        systems = sorted({name for outs in table.values() for name in outs})
        raise ValueError(f"no prompt has generations from {min_systems} systems in {list(per_run)} "
                         f"(systems found: {systems}); rate runs that share prompts")
    return validate_items(items)


# ---------------------------------------------------------------- durable storage


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
    if lines[0].decode("utf-8", "replace").split(",") != list(FIELDS):
        raise ValueError(f"{path} does not start with the header {','.join(FIELDS)}")
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


# ---------------------------------------------------------------- win rates


def _compared(df: pd.DataFrame) -> pd.DataFrame:
    """The ratings that compare (a, b or tie), skips dropped; ValueError if none is left."""
    if df is None or len(df) == 0:
        raise ValueError("no ratings to analyse: the table is empty")
    kept = df[df["choice"].isin(["a", "b", "tie"])]
    if kept.empty:
        raise ValueError(f"all {len(df)} ratings are skips: nothing to compare")
    return kept


def _pairs(df: pd.DataFrame) -> list[tuple[str, str]]:
    """Each rating's two systems in sorted order: (greedy, sampled) whichever was shown as A."""
    return [tuple(sorted(pair)) for pair in zip(df["system_a"], df["system_b"])]


def bootstrap_ci(scores, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95):
    """Percentile bootstrap interval (low, high) of the mean of scores; seeded. Notebook 09."""
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        raise ValueError("bootstrap_ci needs at least one score")
    rng = np.random.default_rng(seed)
    means = scores[rng.integers(0, scores.size, size=(n_boot, scores.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100  # 95%: the 2.5th and 97.5th percentiles
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def win_rates(df: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
              confidence: float = 0.95) -> pd.DataFrame:
    """Per pair of systems: wins, ties, losses, win rate (ties count half) and a bootstrap CI.

    Each row names the pair's leader as `system` (win rate >= 0.5). The bootstrap resamples
    ratings as if independent. Notebook 09.
    """
    df = _compared(df)
    by_pair = {}  # (first, second) sorted -> winners
    for pair, winner in zip(_pairs(df), df["winner"]):
        by_pair.setdefault(pair, []).append(winner)
    rows = []
    for k, ((first, second), winners) in enumerate(sorted(by_pair.items())):
        scores = np.array([1.0 if w == first else 0.5 if w == "tie" else 0.0 for w in winners])
        if scores.mean() < 0.5:
            first, second, scores = second, first, 1.0 - scores
        low, high = bootstrap_ci(scores, n_boot, seed + k, confidence)
        rows.append({"system": first, "opponent": second, "n": len(scores),
                     "wins": int((scores == 1).sum()), "ties": int((scores == 0.5).sum()),
                     "losses": int((scores == 0).sum()), "win_rate": float(scores.mean()),
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- Bradley-Terry


def win_matrix(df: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Systems (sorted) and W[i, j] = times i beat j, a tie counting half a win to each."""
    df = _compared(df)
    systems = sorted(set(df["system_a"]) | set(df["system_b"]))
    index = {name: n for n, name in enumerate(systems)}
    wins = np.zeros((len(systems), len(systems)))
    for a, b, winner in zip(df["system_a"], df["system_b"], df["winner"]):
        i, j = index[a], index[b]
        if winner == "tie":
            wins[i, j] += 0.5
            wins[j, i] += 0.5
        else:
            loser = j if winner == a else i
            wins[index[winner], loser] += 1
    return systems, wins


def _strongly_connected(wins: np.ndarray) -> bool:
    """True if every system beat, through a chain of wins, every other (the MLE then exists)."""
    def reach(adjacency):
        seen, todo = {0}, [0]
        while todo:
            i = todo.pop()
            for j in np.flatnonzero(adjacency[i] > 0):
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        return len(seen) == len(adjacency)
    return reach(wins) and reach(wins.T)


def bradley_terry(df: pd.DataFrame, prior: float = 0.0, max_iter: int = 10_000,
                  tol: float = 1e-10) -> pd.DataFrame:
    """Bradley-Terry strengths by Hunter's (2004) MM updates; geometric mean 1. Notebook 09.

    P(i beats j) = p_i / (p_i + p_j). Update: p_i <- W_i / sum_j N_ij / (p_i + p_j), with W_i
    the wins of i (ties half) and N_ij the comparisons of i and j. `prior` adds that many
    virtual wins each way to every compared pair, which keeps a never-winning system finite.
    """
    systems, wins = win_matrix(df)
    if len(systems) < 2:
        raise ValueError(f"Bradley-Terry needs two systems or more, got {systems}")
    raw_wins, raw_games = wins.sum(axis=1), (wins + wins.T).sum(axis=1)
    wins = wins + prior * ((wins + wins.T) > 0)
    if not _strongly_connected(wins):
        raise ValueError("some system never beat (or never lost to) the others, so its "
                         "strength is 0 or infinite; collect more ratings or pass prior=0.5")
    games = wins + wins.T
    strength = np.ones(len(systems))
    for step in range(1, max_iter + 1):
        new = wins.sum(axis=1) / (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        new /= np.exp(np.log(new).mean())  # geometric mean 1: only ratios are identified
        done = np.max(np.abs(np.log(new) - np.log(strength))) < tol
        strength = new
        if done:
            break
    table = pd.DataFrame({"system": systems, "strength": strength, "log_strength": np.log(strength),
                          "wins": raw_wins, "comparisons": raw_games})
    table.attrs["iterations"] = step
    return table.sort_values("strength", ascending=False, ignore_index=True)


def bt_probability(strengths: pd.DataFrame, system: str, opponent: str) -> float:
    """P(system beats opponent) = p_s / (p_s + p_o) under fitted Bradley-Terry strengths."""
    p = dict(zip(strengths["system"], strengths["strength"]))
    return p[system] / (p[system] + p[opponent])


# ---------------------------------------------------------------- rater agreement


def cohen_kappa(labels_1, labels_2) -> float:
    """Cohen's kappa (p_o - p_e) / (1 - p_e) of two raters' labels on the same items. Notebook 09.

    NaN when p_e is 1 (both raters used one same label throughout: chance explains it all).
    """
    labels_1, labels_2 = list(labels_1), list(labels_2)
    if len(labels_1) != len(labels_2) or not labels_1:
        raise ValueError(f"need two equally long, non-empty label lists, got {len(labels_1)} "
                         f"and {len(labels_2)}")
    n = len(labels_1)
    observed = sum(x == y for x, y in zip(labels_1, labels_2)) / n
    categories = set(labels_1) | set(labels_2)
    expected = sum(labels_1.count(c) * labels_2.count(c) for c in categories) / n**2
    return float("nan") if expected == 1 else (observed - expected) / (1 - expected)


def rater_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Items (prompt and pair) x raters; a label says which of the sorted pair won: first/second/tie.

    Labels name the systems, not the letters, so raters who saw A and B swapped still agree.
    A rater's last rating of an item counts.
    """
    df = _compared(df)
    pairs = _pairs(df)
    label = ["tie" if w == "tie" else "first" if w == pair[0] else "second"
             for pair, w in zip(pairs, df["winner"])]
    items = [f"{pid}|{first}|{second}" for pid, (first, second) in zip(df["prompt_id"], pairs)]
    table = pd.DataFrame({"item": items, "rater": list(df["rater"]), "label": label})
    return table.drop_duplicates(["item", "rater"], keep="last").pivot(
        index="item", columns="rater", values="label")


def rater_agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Per pair of raters: shared items, percent agreement and Cohen's kappa. Notebook 09."""
    labels = rater_labels(df)
    if labels.shape[1] < 2:
        raise ValueError(f"agreement needs two raters or more, found {list(labels.columns)}")
    rows = []
    for one, two in itertools.combinations(labels.columns, 2):
        shared = labels[[one, two]].dropna()
        rows.append({"rater_1": one, "rater_2": two, "shared_items": len(shared),
                     "agreement": (shared[one] == shared[two]).mean() if len(shared) else np.nan,
                     "kappa": cohen_kappa(shared[one], shared[two]) if len(shared) else np.nan})
    return pd.DataFrame(rows)


def fleiss_kappa(df: pd.DataFrame) -> float:
    """Fleiss' kappa over the items that every rater labelled (any number of raters >= 2)."""
    labels = rater_labels(df).dropna()
    raters = labels.shape[1]
    if raters < 2 or labels.empty:
        raise ValueError("Fleiss' kappa needs two raters or more who labelled the same items")
    counts = np.stack([(labels == c).sum(axis=1).to_numpy() for c in ("first", "second", "tie")], 1)
    per_item = ((counts * (counts - 1)).sum(axis=1) / (raters * (raters - 1))).mean()
    shares = counts.sum(axis=0) / counts.sum()
    expected = (shares ** 2).sum()
    return float("nan") if expected == 1 else float((per_item - expected) / (1 - expected))


# ---------------------------------------------------------------- plots


def plot_win_rates(table: pd.DataFrame, ax=None):
    """Horizontal bars of each pair's win rate with its bootstrap CI; 0.5 marks a coin flip."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.6 * len(table) + 1.2))
    labels = [f"{s} vs {o} (n={n})" for s, o, n in zip(table["system"], table["opponent"], table["n"])]
    errors = [table["win_rate"] - table["ci_low"], table["ci_high"] - table["win_rate"]]
    ax.barh(labels, table["win_rate"], xerr=errors, capsize=4, color="#8ecae6")
    ax.axvline(0.5, color="black", linestyle="--", linewidth=1, label="no preference")
    ax.set_xlim(0, 1)
    ax.set_xlabel("win rate of the first system (ties count half)")
    ax.legend(loc="lower right")
    return ax


def plot_strengths(strengths: pd.DataFrame, ax=None):
    """Bars of Bradley-Terry log-strengths (0 = the geometric mean of all systems)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.5 * len(strengths) + 1.2))
    ordered = strengths.sort_values("log_strength")
    ax.barh(ordered["system"], ordered["log_strength"], color="#ffb703")
    ax.axvline(0, color="black", linewidth=1)
    ax.set_xlabel("Bradley-Terry log-strength (difference d: P(win) = 1 / (1 + e^-d))")
    return ax
