"""What people rate: items {prompt_id, prompt, outputs: {system: text}} and their pairs. Notebook 09.

Items come from generations made in the notebook (`items_from_generations`) or from run
folders' samples.jsonl (`items_from_runs`, matched on the prompt text); the A/B rater
(utils/prefer/rater.py) shows every pair of systems of an item.
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
from pathlib import Path

from utils.config import runs_dir
from utils.runs import registry

TEXT_KEYS = ("generation", "completion", "output", "text")  # where a sample's text may live


def prompt_id(prompt: str) -> str:
    """A short stable id of a prompt (8 hex digits of its SHA-1): the same prompt, the same id."""
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:8]


def validate_items(items) -> list[dict]:
    """Items as {prompt_id, prompt, outputs}; ValueError for one with fewer than two systems."""
    if isinstance(items, (str, bytes, dict)) or not hasattr(items, "__iter__"):
        raise ValueError(f"items must be a list of {{prompt, outputs}} dicts, got "
                         f"{type(items).__name__}")
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
    utils.runs.registry.read_samples reads the file (and skips lines that are not JSON objects).
    """
    rows, skipped = [], 0
    for record in registry.read_samples(path):
        text = next((record[k] for k in TEXT_KEYS if isinstance(record.get(k), str)), None)
        if not isinstance(record.get("prompt"), str) or text is None:
            skipped += 1
            continue
        system = record.get("system") or record.get("model") or default_system
        rows.append({"system": str(system), "prompt": record["prompt"], "text": text})
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} line(s) without a prompt and a generation",
                      stacklevel=2)
    return rows


def find_sample_runs(root: str | Path | None = None) -> list[Path]:
    """Run folders under root (default runs_dir()) that hold a samples.jsonl, sorted by name."""
    root = Path(root) if root is not None else runs_dir()
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob(f"*/{registry.SAMPLES}"))


def items_from_runs(run_dirs, min_systems: int = 2) -> list[dict]:
    """Rater items from run folders' samples.jsonl, matched on the prompt text. Notebook 09.

    A system name used by two runs (both call theirs 'stage2') becomes 'run:stage2'.
    The first generation of a system for a prompt is used; prompts seen by fewer than
    `min_systems` systems are dropped.
    """
    per_run = {}
    for run in map(Path, run_dirs):
        path = run / registry.SAMPLES if run.is_dir() else run  # a run folder or its samples.jsonl
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
