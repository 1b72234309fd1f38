"""The models between the pipeline's stages: where stage 2 starts and which model is evaluated.

The run registry (utils/runs/registry.py) answers which model a run has on disk; these helpers
load it, or take the one a previous stage left in `ctx.models`. Used by utils/pipeline/stages.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel

from utils.models.files import BrokenModelError, folder_problem
from utils.models.loading import load_model
from utils.models.lora import merge_lora
from utils.pipeline.context import Context
from utils.runs import registry


def stage1_run(ctx: Context) -> Path:
    """The run whose stage 1 feeds this one: options.from_run, else this run."""
    if ctx.options.from_run:
        return registry.find_run(ctx.options.from_run, ctx.run_dir.parent)
    return ctx.run_dir


def load_adapter_model(ctx: Context, run_dir: Path):
    """Base model + the LoRA adapter saved by stage 1 of `run_dir`."""
    adapter = run_dir / registry.STAGE1_ADAPTER
    problem = folder_problem(adapter, "adapter_config.json")
    if (adapter / "adapter_config.json").exists() and problem:
        raise broken_folder(adapter, problem, run_dir, "stage1")
    if not (adapter / "adapter_config.json").exists():
        raise registry.RunNotFoundError(
            f"run {run_dir.name!r} has no stage 1 adapter ({adapter} is missing); run "
            f"`python -m utils.pipeline --run-name {run_dir.name} --stages data,stage1` first")
    return PeftModel.from_pretrained(load_model(ctx.profile, tokenizer=ctx.tokenizer()), str(adapter))


def stage2_start(ctx: Context):
    """(model, description) stage 2 starts from: merged in memory, on disk, from_run, or base."""
    if ctx.models.merged is not None:
        model, ctx.models.merged = ctx.models.merged, None
        return model, "the merged stage-1 model"
    run = stage1_run(ctx)
    source = registry.stage1_model_source(run)
    if source is None and ctx.options.from_run:
        raise registry.RunNotFoundError(
            f"run {run.name!r} has no stage 1 model (neither {registry.MERGED}/ nor "
            f"{registry.STAGE1_ADAPTER}/); run `python -m utils.pipeline --run-name {run.name} "
            "--stages data,stage1,merge` first")
    if source is None:
        print("note: no stage 1 in this run and no --from-run: stage 2 starts from the base model")
        return load_model(ctx.profile, tokenizer=ctx.tokenizer()), "the base model"
    if source.name == registry.MERGED:
        problem = folder_problem(source)
        adapter = run / registry.STAGE1_ADAPTER
        if problem is None:
            return load_model(ctx.profile, tokenizer=ctx.tokenizer(), path=source), str(source)
        if folder_problem(adapter, "adapter_config.json") is not None:
            raise broken_folder(source, problem, run, "merge")
        print(f"note: {source} is broken ({problem}); stage 2 starts from the intact stage-1 "
              f"adapter in {adapter}, merged now. Delete {source} to silence this note")
        source = adapter
    return merge_lora(load_adapter_model(ctx, run)), f"{source} (merged now)"


def broken_folder(folder: Path, problem: str, run: Path, stages: str) -> BrokenModelError:
    """The error for a model folder that cannot be loaded: what is wrong, and how to rebuild it."""
    return BrokenModelError(
        f"{folder} is broken: {problem}. It was cut off while being written (a kill or a full "
        f"disk). Delete it and rebuild it: `python -m utils.pipeline --run-name {run.name} "
        f"--resume --stages {stages}`")


def stage2_source(ctx: Context, stage: str, name: str) -> Path:
    """This run's stage-2 model folder, for a stage that tunes it (prefer, reward; `name` is how
    the error calls it). RunNotFoundError naming the command that makes it when it is missing,
    BrokenModelError when it was cut off while being written."""
    source = ctx.run_dir / registry.STAGE2_MODEL
    if not (source / "config.json").exists():
        raise registry.RunNotFoundError(
            f"{name} starts from stage 2, and {source} is missing: run the stages up to stage2 "
            f"first (`python -m utils.pipeline --run-name {ctx.run_dir.name} --resume --stages "
            f"data,stage1,merge,stage2,{stage}` plus the flags the run was started with)")
    if problem := folder_problem(source):
        raise broken_folder(source, problem, ctx.run_dir, "stage2")
    return source


def final_model(ctx: Context):
    """(model, name) of the latest model of this run: stage 2, else merged, else the base model."""
    if ctx.models.stage2 is not None:
        return ctx.models.stage2, "stage2"
    found = registry.latest_model(ctx.run_dir)
    if found:
        stage, folder = found
        problem = folder_problem(folder)
        if problem:
            rebuild = "stage2" if stage == "stage2" else "merge"
            raise broken_folder(folder, problem, ctx.run_dir, rebuild)
        return load_model(ctx.profile, tokenizer=ctx.tokenizer(), path=folder), stage
    return load_model(ctx.profile, tokenizer=ctx.tokenizer()), "base"


def probe_batch(ctx: Context, device) -> dict:
    """Two validation poems' first 32 tokens: a fixed batch to compare logits on."""
    tok = ctx.tokenizer()
    ids = [tok(text)["input_ids"][:32] for text in ctx.data().poems["validation"][:2]]
    width = min(len(i) for i in ids)
    return {"input_ids": torch.tensor([i[:width] for i in ids], device=device)}


def learning_models(ctx: Context) -> dict:
    """{'base', 'stage1', 'stage2'}: the models this run has, for metrics.json["learning"]."""
    models = {"base": load_model(ctx.profile, tokenizer=ctx.tokenizer())}
    found = registry.latest_model(stage1_run(ctx), stages=("merged",))
    if found:
        models["stage1"] = load_model(ctx.profile, tokenizer=ctx.tokenizer(), path=found[1])
    if ctx.models.stage2 is not None:
        models["stage2"] = ctx.models.stage2
    elif found := registry.latest_model(ctx.run_dir, stages=("stage2",)):
        models["stage2"] = load_model(ctx.profile, tokenizer=ctx.tokenizer(), path=found[1])
    return models
