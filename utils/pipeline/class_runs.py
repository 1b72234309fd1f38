"""The class's runs when a notebook is opened out of order: 06's and 07's runs made for them.

Notebooks 08, 12 and 13 read notebook 07's stage-2 model (08 and 10 also 06's stage-1 model). A
class that starts at 08, or a student who skips ahead, has neither. Those notebooks then make
the two runs here, with the pipeline and the profile's own settings, under the names 06 and 07
use, and record in config.json that they were made *for* those notebooks. Notebooks 06 and 07
may then replace them when they run later (the run guard lets a notebook overwrite its own
runs), so any order works; a run the pipeline or a user made under those names is still never
deleted.
"""

from __future__ import annotations

import dataclasses

from utils.config import Profile, get_profile
from utils.options import RunOptions
from utils.pipeline.job import run
from utils.runs import registry

STAGE1_NOTEBOOK = "06_stage1_lora_domain_adaptation"
STAGE2_NOTEBOOK = "07_stage2_full_finetuning"


def stage1_run_name(profile: Profile | str | None = None) -> str:
    """The run notebook 06 writes: 06-stage1-<profile>."""
    return f"06-stage1-{get_profile(profile).name}"


def stage2_run_name(profile: Profile | str | None = None) -> str:
    """The run notebook 07 writes: 07-stage2-<profile>."""
    return f"07-stage2-{get_profile(profile).name}"


def class_stage1_run(profile: Profile | str | None, stage1_run: str | None = None,
                     options: RunOptions | None = None) -> str:
    """06's run (`stage1_run`), made now as notebook 06 would (data, stage1, merge) when it has
    no stage-1 model; its name. Notebook 10 starts its seed repeats from it."""
    profile = get_profile(profile)
    stage1_run = stage1_run or stage1_run_name(profile)
    if registry.stage1_model_source(registry.run_path(stage1_run)) is None:
        print(f"making run {stage1_run!r} as notebook 06 would (data, stage1, merge)")
        run(profile, registry.run_path(stage1_run),
            dataclasses.replace(options or RunOptions(), overwrite=True),
            stages=["data", "stage1", "merge"], notebook=STAGE1_NOTEBOOK)
    return stage1_run


def make_missing_class_runs(profile: Profile | str | None, stage1_run: str | None = None,
                            stage2_run: str | None = None,
                            options: RunOptions | None = None) -> str:
    """Make 07's run (and 06's, when it has no stage-1 model) as those notebooks would.

    Stage 1 (data, stage1, merge) and stage 2 (from 06's merged model) run with the profile's
    settings unless `options` says otherwise (tests pass a step or two). Returns the stage-2 run's
    name. Raises the run guard's error, naming the fix, when a run of that name exists that
    neither this function nor the notebook made.
    """
    profile = get_profile(profile)
    stage1_run = class_stage1_run(profile, stage1_run, options)
    stage2_run = stage2_run or stage2_run_name(profile)
    options = dataclasses.replace(options or RunOptions(), overwrite=True)
    print(f"making run {stage2_run!r} as notebook 07 would (stage 2 from {stage1_run!r})")
    run(profile, registry.run_path(stage2_run), dataclasses.replace(options, from_run=stage1_run),
        stages=["stage2"], notebook=STAGE2_NOTEBOOK, stage1_run=stage1_run)
    return stage2_run


def class_stage2_model(profile: Profile | str | None, stage2_run: str | None = None,
                       options: RunOptions | None = None):
    """The stage-2 model notebooks 12 and 13 tune: `stage2_run`'s (07's by default); else the
    newest stage-2 model of the profile, said aloud; else 06's and 07's runs made now (with
    `options`, as make_missing_class_runs)."""
    profile = get_profile(profile)
    stage2_run = stage2_run or stage2_run_name(profile)
    found = {name: path for name, path in registry.final_model_paths(profile).items()
             if path.as_posix().endswith(registry.STAGE2_MODEL)}
    if stage2_run in found:
        return found[stage2_run]
    if found:
        print(f"{stage2_run} has no stage-2 model: taking the newest of profile {profile.name}")
        return max(found.values(), key=lambda path: path.stat().st_mtime)
    print("no stage-2 model here yet: notebooks 06 and 07 have not run")
    made = make_missing_class_runs(profile, stage2_run=stage2_run, options=options)
    return registry.run_path(made) / registry.STAGE2_MODEL
