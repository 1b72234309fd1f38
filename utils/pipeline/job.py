"""The headless main job: `python -m utils.pipeline [--profile tiny] [--stages data,stage1,...]`.

Stages, in order: data, stage1 (LoRA on poems), merge (fold the adapter into the weights),
stage2 (full fine-tuning on instructions), evaluate (loss, perplexity, samples) and report
(utils/pipeline/stages.py). A run's files go to runs/<run_name>/ (utils/runs/registry.py). From Python,
`run(profile, run_dir, RunOptions(...), stages)` does the same without a command line. The
same command runs on several processes: `torchrun --nproc_per_node 2 -m utils.pipeline ...`
or `accelerate launch --multi_gpu --num_processes 2 -m utils.pipeline ...` (gloo on CPUs,
nccl on GPUs). Introduced in the README's quickstart.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from utils.config import Profile, get_profile, runs_dir
from utils.models.files import StorageError, storage_error
from utils.models.fit import check_gpu_memory
from utils.models.hub import HubUnavailableError
from utils.options import (
    DEFAULT_STAGES,
    RunOptions,
    RunSpec,
    add_arguments,
    check_stages,
    from_namespace,
)
from utils.pipeline.context import Context, Inputs
from utils.pipeline.stages import MAIN_ONLY, STAGES, check_inputs
from utils.pipeline import reward_stage
from utils.prefer.reward import reward_config
from utils.runs import guard as run_guard
from utils.runs import registry, stale
from utils.train.loss_guards import NonFiniteLossError


def run(profile: Profile | str | None, run_dir: str | Path, options: RunOptions | None = None,
        stages=DEFAULT_STAGES, inputs: Inputs | None = None, command: str | None = None,
        **config_extra) -> Context:
    """Run `stages` of the pipeline into `run_dir`; the Python API of `python -m utils.pipeline`.

    The options' epochs, max_steps and learning_rate override both stages of the profile.
    `inputs` (a previous run's ctx.inputs) reuses its tokenizer and data; `config_extra` goes
    into config.json (the sweep records its experiment there). Returns the stages' Context.
    """
    options = options or RunOptions()
    profile, stages, run_dir = options.apply(get_profile(profile)), check_stages(stages), Path(run_dir)
    # Every process checks, before anything is written.
    changes = check_run(profile, run_dir, options, stages, config_extra.get("notebook"))
    check_memory_first(profile, stages, options)
    rank, world = init_distributed()
    if rank == 0:
        try:
            run_guard.acquire_lock(run_dir)
        except OSError as error:  # read-only folder, name too long, full disk: say which
            raise storage_error(error, run_dir) from error
        try:
            start_run_dir(run_dir, profile, options, changes, stages)
            if not (run_dir / registry.CONFIG).exists() or not options.resume:
                # the options always: --resume compares those that change results (run_guard)
                extra = {"options": dataclasses.asdict(options), **({"command": command} if command else {})}
                registry.write_config(run_dir, profile, stages=stages, world_size=world, **extra,
                                      **config_extra)
        except BaseException:
            run_guard.release_lock(run_dir)
            raise
    try:
        return run_stages(profile, run_dir, options, stages, inputs, rank)
    finally:
        if rank == 0:
            run_guard.release_lock(run_dir)


def check_run(profile: Profile, run_dir: Path, options: RunOptions, stages, owner=None) -> dict:
    """Every check that needs no model, before anything is written; the settings --resume changes.

    The --from-run source must exist and fit the profile; --overwrite deletes only a run that is
    not that source nor a notebook's (unless `owner`, the notebook, made it); --resume needs the
    run and its settings (utils/runs/guard.py).
    """
    if options.from_run and {"stage1", "merge"} & set(stages):
        raise ValueError("--from-run takes stage 1 from another run; drop stage1 and merge from --stages")
    if run_dir.parent.exists() and not run_dir.parent.is_dir():
        raise ValueError(f"--runs-dir {run_dir.parent} is a file, not a folder; choose a folder")
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir} is a file, not a run folder; choose another --run-name")
    source = None
    if options.from_run:
        source = registry.find_run(options.from_run, run_dir.parent)  # fail now, not after stage 1
        run_guard.check_from_run(source, profile)
    if options.resume:
        return run_guard.check_resume(run_dir, profile, options.allow_changed_settings,
                                      dataclasses.asdict(options))
    if options.overwrite:
        run_guard.check_overwrite(run_dir, source, owner)
    elif not run_guard.is_leftover(run_dir):
        registry.check_new_run(run_dir)
    return {}


# The stages whose model the memory calculator sizes (utils/models/fit.py).
TRAINING_STAGES = {"stage1", "stage2", "prefer", "reward"}


def check_memory_first(profile: Profile, stages, options: RunOptions | None = None) -> None:
    """The GPU memory guard before the tokenizer, the datasets and the weights are downloaded.

    Inside load_model alone it came after the data stage had fetched the tokenizer and the
    poems: a T4 with the deepseek profile waited for two downloads to be told it cannot train.
    """
    if TRAINING_STAGES & set(stages):
        extra = None
        if "reward" in stages:
            cfg = reward_config(profile, **(options.reward_changes() if options else {}))
            extra = {reward_stage.MEMORY_LABEL: reward_stage.memory_estimate(cfg)}
        check_gpu_memory(profile, extra=extra)


def start_run_dir(run_dir: Path, profile: Profile, options: RunOptions, changes: dict,
                  stages=()) -> None:
    """Empty the folder for --overwrite or a failed start's leftovers; record --resume's changes
    and drop the outputs the stages about to run make stale (utils/runs/stale.py)."""
    if options.resume:
        run_guard.record_resume(run_dir, profile, changes, dataclasses.asdict(options))
        stale.invalidate_downstream(run_dir, stages, data_changed=bool(changes))
    elif options.overwrite or run_guard.is_leftover(run_dir):
        if run_guard.is_leftover(run_dir) and not options.overwrite:
            print(f"note: {run_dir} holds only the config of a run that failed before training; "
                  "it is replaced")
        run_guard.clear_run_dir(run_dir)


def run_stages(profile, run_dir, options, stages, inputs, rank) -> Context:
    """Run the stages in order; the stages that only the main process runs are skipped elsewhere."""
    barrier()
    ctx = Context(profile, run_dir, options, is_main=rank == 0, inputs=inputs or Inputs())
    print(f"profile {profile.name}: {profile.description}\nrun folder: {run_dir}")
    check_inputs(ctx, stages)  # an empty split is found now, not after training
    for name in stages:
        start = time.perf_counter()
        if ctx.is_main or name not in MAIN_ONLY:
            print(f"\n== stage {name} ==")
            STAGES[name](ctx)
            print(f"stage {name} done in {time.perf_counter() - start:.1f} s")
        barrier()
    if ctx.is_main:  # a folder without this is a run that stopped (run_guard.is_leftover)
        registry.update_section(run_dir, registry.CONFIG, "finished",
                                time.strftime("%Y-%m-%d %H:%M:%S"))
    return ctx


def init_distributed() -> tuple[int, int]:
    """(rank, world size); under torchrun / accelerate launch, join the process group now.

    Joining before any stage lets the processes wait for each other (`barrier`) from the
    start, e.g. for the merged model that only process 0 writes. gloo on CPUs, nccl on GPUs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ---------------------------------------------------------------- command line


def parse_args(argv=None) -> tuple[RunSpec, RunOptions]:
    """The command line as a RunSpec and RunOptions; `--help` is the dataclasses' field help."""
    parser = argparse.ArgumentParser(prog="python -m utils.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, RunSpec)
    add_arguments(parser, RunOptions)
    args = parser.parse_args(argv)
    return from_namespace(RunSpec, args), from_namespace(RunOptions, args)


def main(argv=None) -> Context:
    """Parse the command line, normalise the profile once, and run."""
    spec, options = parse_args(argv)
    profile = get_profile(spec.profile)
    if options.rehearse:
        from utils.pipeline.rehearsal import ROWS, STEPS, rehearse

        return rehearse(profile, check_stages(spec.stages), options.max_steps or STEPS,
                        options.max_rows or ROWS, spec.runs_dir and Path(spec.runs_dir) / "rehearsals")
    name = spec.run_name or f"{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = registry.run_path(name, Path(spec.runs_dir or runs_dir()))
    command = "python -m utils.pipeline " + " ".join(sys.argv[1:] if argv is None else argv)
    return run(profile, run_dir, options, check_stages(spec.stages), command=command)


def cli(argv=None) -> None:
    """Run main; bad input ends with a one-line message instead of a traceback."""
    try:
        main(argv)
    except (ValueError, NonFiniteLossError, FileExistsError, FileNotFoundError,
            HubUnavailableError, StorageError) as error:
        sys.exit(f"error: {error}")
