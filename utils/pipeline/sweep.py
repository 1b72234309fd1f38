"""The sweep: train each named experiment (utils/runs/experiments.py) through the pipeline's Python API.

Every experiment becomes its own run folder; a run is never overwritten (name-v2, name-v3,
...). The tokenizer and the prepared data are shared between the experiments. `seed_repeats`
changes one stage-2 setting at a time and repeats each value over seeds (utils/runs/seeds.py
reads the runs back). Notebook 10.
"""

from __future__ import annotations

from pathlib import Path

from utils.config import get_profile, runs_dir
from utils.options import RunOptions
from utils.pipeline import job as pipeline
from utils.runs import registry
from utils.runs.experiments import check_experiments, experiments_for


def new_run_name(name: str, root=None) -> str:
    """`name`, or name-v2, name-v3, ... : the first that is not a folder under `root` yet."""
    root, candidate, n = Path(root or runs_dir()), registry.check_run_name(name), 1
    while (root / candidate).exists():
        n += 1
        candidate = f"{name}-v{n}"
    return candidate


def run_sweep(profile, names=None, runs_root=None, max_steps: int | None = None,
              overrides: dict | None = None, from_run: str | None = None,
              max_rows: int | None = None, stages=("stage2",)) -> list[str]:
    """Train each named experiment with the pipeline's stage-2 code; return the new run names.
    Notebook 10.

    Each experiment overrides the profile's stage-2 TrainConfig (then `overrides`, then
    `max_steps`, the scale-down for small machines). A run is named after the profile that
    trains it and the settings (`Experiment.run_name`: tiny-b2-acc4-e1-lr1e-4 on tiny); it
    never overwrites another: when the name is taken the run is called name-v2, name-v3, ...;
    config.json records the experiment.
    """
    profile = get_profile(profile)  # the public entry: a name is normalised here, once
    names = list(names) if names is not None else experiments_for(profile)
    experiments = check_experiments(names, profile)
    plans = []
    for exp in experiments:
        changes = {**exp.stage2, **(overrides or {})}
        if max_steps is not None:
            changes["max_steps"] = max_steps
        plans.append((exp.run_name(profile), changes, {"experiment": exp.name}))
    return _train_runs(profile, plans, runs_root, RunOptions(from_run=from_run, max_rows=max_rows), stages)


def seed_repeats(profile, factor: str, values, seeds=(0, 1, 2), max_steps: int = 20,
                 eval_steps: int = 5, from_run: str | None = None, runs_root=None,
                 common: dict | None = None) -> list[str]:
    """One factor of stage 2 at several values, each repeated over `seeds`; the new run names.
    Notebook 10.

    Every run starts from the same model (`from_run`'s merged stage-1 model, else the base) and
    changes only `factor` and the seed (the Trainer's seed draws the data order and dropout),
    with a validation point every `eval_steps` steps, so a difference between values can be
    compared with the spread between seeds. `common` changes stage-2 settings for every run
    alike (a smaller batch on a CPU). Runs are named <profile>-<factor>-<value>-seed<n> (-v2, ...
    when taken); config.json records the factor, its value and the seed.
    """
    profile = get_profile(profile)
    if not hasattr(profile.stage2, factor):
        raise ValueError(f"{factor!r} is not a stage-2 setting; use a TrainConfig field such as "
                         "'learning_rate' or 'per_device_train_batch_size'")
    plans = [(f"{profile.name}-{factor.replace('_', '-')}-{value:g}-seed{seed}",
              {**(common or {}), factor: value, "seed": seed, "max_steps": max_steps,
               "eval_steps": eval_steps, "logging_steps": eval_steps},
              {"repeat": {"factor": factor, "value": value, "seed": seed}})
             for value in values for seed in seeds]
    return _train_runs(profile, plans, runs_root, RunOptions(from_run=from_run))


def _train_runs(profile, plans, runs_root, options: RunOptions, stages=("stage2",)) -> list[str]:
    """Each plan (name, stage-2 changes, config.json extras) as a new run, never overwriting
    one (name-v2, ...); the tokenizer and data are prepared once and shared. The new names."""
    root, inputs, created = Path(runs_root or runs_dir()), None, []
    for name, changes, extra in plans:
        run_name = new_run_name(name, root)
        print(f"\n=== {run_name}: stage 2 with {changes}")
        ctx = pipeline.run(profile.replace(stage2=changes), registry.run_path(run_name, root),
                           options, stages, inputs=inputs, overrides=changes, **extra)
        inputs = ctx.inputs
        created.append(run_name)
    return created
