"""One factor over several seeds: the validation curves of `seed_repeats`' runs, their mean and
spread, and whether two settings differ by more than the seeds do. Notebook 10.

`utils.pipeline.sweep.seed_repeats` trains the runs and records {factor, value, seed} in each
run's config.json; everything here only reads run folders.
"""

from __future__ import annotations

import itertools

import pandas as pd

from utils.runs import registry
from utils.runs.table import read_log_history


def repeat_curves(run_names, root=None) -> pd.DataFrame:
    """One row per validation point: run, factor, value, seed, step, val_loss."""
    rows = []
    for name in run_names:
        config = registry.read_json(registry.find_run(name, root) / registry.CONFIG, {})
        repeat = config.get("repeat")
        if not repeat:
            raise ValueError(f"run {name!r} was not made by seed_repeats (its config.json has no "
                             "'repeat'); pass the names seed_repeats returned")
        for entry in read_log_history(name, root):
            if "eval_loss" in entry:
                rows.append({"run": name, **repeat, "step": entry["step"], "val_loss": entry["eval_loss"]})
    if not rows:
        raise ValueError(f"no validation loss in the runs {list(run_names)}: train with eval_steps "
                         "below max_steps")
    return pd.DataFrame(rows)


def repeat_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation (over seeds, n - 1), min, max and n per value and step."""
    grouped = curves.groupby(["value", "step"])["val_loss"]
    return grouped.agg(mean="mean", sd="std", low="min", high="max", n="count").reset_index()


def compare_values(curves: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """Every pair of values at `step` (default: the last): the difference of their mean
    validation losses, the seeds' own spread, and whether the seeds' ranges overlap.

    `seed_sd` is the larger of the two values' standard deviations over seeds; `separated` says
    that every seed of one value ended below every seed of the other (the ranges do not overlap),
    a difference the seeds alone did not produce in these runs.
    """
    step = int(curves["step"].max()) if step is None else step
    last = repeat_summary(curves[curves["step"] == step]).set_index("value")
    rows = []
    for a, b in itertools.combinations(sorted(last.index), 2):
        lower, upper = (a, b) if last.loc[a, "mean"] <= last.loc[b, "mean"] else (b, a)
        rows.append({"lower": lower, "higher": upper, "step": step,
                     "difference": last.loc[upper, "mean"] - last.loc[lower, "mean"],
                     "seed_sd": max(last.loc[a, "sd"], last.loc[b, "sd"]),
                     "separated": bool(last.loc[lower, "high"] < last.loc[upper, "low"])})
    return pd.DataFrame(rows)


def plot_repeats(summary: pd.DataFrame, factor: str, ax=None):
    """Mean validation loss against step, one line per value, error bars one sd over seeds."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 4))[1]
    for value, group in summary.groupby("value"):
        n = int(group["n"].max())
        ax.errorbar(group["step"], group["mean"], yerr=group["sd"], marker="o", capsize=3,
                    label=f"{factor} {value:g} ({n} seeds)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss (nats per completion token)")
    ax.set_title(f"{factor}: mean over seeds, bars one standard deviation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
