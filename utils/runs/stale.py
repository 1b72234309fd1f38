"""Nothing stale: a stage run again on a run folder drops what the stages after it made.

`--resume --stages stage2` trains a new stage-2 model; the evaluation, the report and stage 3
(DPO) of the old one would otherwise stay beside it, and the runs table would show the old DPO
columns next to the new stage 2. Before the stages run, utils/pipeline/job.py removes the
outputs of every stage that depends on one about to run and is not itself in --stages, and
prints a note naming them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from utils.runs import registry


@dataclass(frozen=True)
class Outputs:
    """What one stage leaves in a run folder."""

    metrics: tuple[str, ...] = ()  # metrics.json sections
    logs: tuple[str, ...] = ()  # log_history.json sections
    samples: tuple[str, ...] = ()  # samples.jsonl models
    paths: tuple[str, ...] = ()  # files and folders


OUTPUTS = {
    "stage1": Outputs(("stage1",), ("stage1",), ("stage1",), (registry.STAGE1_ADAPTER,)),
    "merge": Outputs(("merge",), paths=(registry.MERGED,)),
    "stage2": Outputs(("stage2",), ("stage2",), paths=(registry.STAGE2_MODEL,)),
    "evaluate": Outputs(("eval", "learning"), samples=("stage2", "merged", "base")),
    "report": Outputs(paths=("report.md", "loss_curves.png")),
    "prefer": Outputs(("preference",), paths=(registry.STAGE3_MODEL,)),
    "reward": Outputs(("reward",), paths=(registry.REWARD_MODEL,)),
}
# stage -> the stages that read what it makes (the report reads every metric)
FEEDS = {
    "data": ("stage1", "merge", "stage2", "evaluate", "report", "prefer", "reward"),
    "stage1": ("merge", "stage2", "evaluate", "report", "prefer", "reward"),
    "merge": ("stage2", "evaluate", "report", "prefer", "reward"),
    "stage2": ("evaluate", "report", "prefer", "reward"),
    "evaluate": ("report",),
    "prefer": ("report",),
    "reward": ("report",),
}
# data is the same data on a --resume (its settings are compared), so it makes nothing stale
# unless they were changed with --allow-changed-settings.


def stale_stages(stages, data_changed: bool = False) -> list[str]:
    """The stages, in run order, whose outputs the stages about to run make stale."""
    runs = [s for s in stages if s != "data" or data_changed]
    stale = {later for stage in runs for later in FEEDS.get(stage, ())} - set(stages)
    return [s for s in OUTPUTS if s in stale]


def present(run_dir: Path, stage: str) -> list[str]:
    """What of a stage's outputs the run folder holds, as names a note can list."""
    out, found = OUTPUTS[stage], []
    metrics = registry.read_json(Path(run_dir) / registry.METRICS, {})
    logs = registry.read_json(Path(run_dir) / registry.LOG_HISTORY, {})
    found += [f"metrics.json[{s!r}]" for s in out.metrics if s in metrics]
    found += [f"log_history.json[{s!r}]" for s in out.logs if s in logs]
    models = {r.get("model") for r in registry.read_samples(run_dir)} if out.samples else set()
    found += [f"samples.jsonl ({s})" for s in out.samples if s in models]
    found += [p for p in out.paths if (Path(run_dir) / p).exists()]
    return found


def drop_outputs(run_dir: Path, stage: str) -> None:
    """Remove a stage's metrics and log sections, samples, files and folders from a run."""
    run_dir, out = Path(run_dir), OUTPUTS[stage]
    for filename, sections in ((registry.METRICS, out.metrics), (registry.LOG_HISTORY, out.logs)):
        data = registry.read_json(run_dir / filename, {})
        if any(s in data for s in sections):
            registry.write_json_atomic(run_dir / filename,
                                       {k: v for k, v in data.items() if k not in sections})
    for model in out.samples:
        if any(r.get("model") == model for r in registry.read_samples(run_dir)):
            registry.write_samples(run_dir, model, [])
    for name in out.paths:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def invalidate_downstream(run_dir: Path, stages, data_changed: bool = False) -> list[str]:
    """Drop what the stages about to run make stale, with a note; returns what was dropped."""
    dropped = []
    for stage in stale_stages(stages, data_changed):
        found = present(run_dir, stage)
        if found:
            drop_outputs(run_dir, stage)
            dropped += found
            print(f"note: {', '.join(stages)} run again, so {stage}'s outputs are stale and removed "
                  f"({', '.join(found)}); run --stages {stage} to make them again")
    return dropped
