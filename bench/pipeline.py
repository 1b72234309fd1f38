"""The CPU benchmarks of `python -m bench`: what the pipeline runs, at the seed's workload.

- throughput: stage-2 steps built the way the pipeline builds them (build_trainer,
  stage2_collator, the stage-2 settings) against the seed's recipe (every row padded to 512,
  fp32, labels copied from the inputs), on the same rows, in one process; real (non-padding)
  tokens per second, padding share and a CPU "MFU" (achieved over peak fp32 GEMM FLOP/s).
- memory: stage 1 at batch 2 x 512 on the GPT-2 shape: the seed's full fine-tuning, plain
  LoRA, the pipeline's LoRA (utils.train.chunked_loss) and each of its savers alone, each in a
  fresh process.
- padding: the padding share of the pipeline's own stage-2 batches.
Numbers are measured side by side and never asserted by tests. Notebook 11 reports them.
"""

from __future__ import annotations

import contextlib
import copy
import random
import statistics
import sys
import tempfile

import torch
from transformers import TrainerCallback

from bench.batching import (
    SEED_BATCH_SIZE,
    SEED_MAX_LENGTH,
    collate,
    shuffled_batches,
    stage2_rows,
)
from bench.memory_measure import measure_in_turn
from utils.config import get_profile
from utils.data.collate import SFTCollator, stage2_collator
from utils.models.shapes import mfu, peak_gemm_flops, training_flops_per_token
from utils.train.savers import EVERY_N_LAYERS
from utils.train.trainer import build_trainer

GPT2_SHAPE = "gpt2"  # 12 layers, 768 wide, 50,257 tokens: GPT2LMHeadModel(GPT2Config()), random init


def bench_model(name: str, profile, tokenizer):
    """A random-init model: the profile's tiny one, or the GPT-2 shape (no download)."""
    from bench.efficiency import random_init_model

    if name == GPT2_SHAPE:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config())
        model.loss_type = "ForCausalLM"  # GPT2LMHeadModel's name is not in the loss table: it would warn
        return model
    return random_init_model(profile, tokenizer, SEED_MAX_LENGTH)


def seed_rows(rows) -> list[dict]:
    """The seed's rows: labels are a copy of the inputs (the prompt is trained on too)."""
    return [{"input_ids": r["input_ids"]} for r in rows]


class StepClock(TrainerCallback):
    """Seconds and real tokens of each training step after the first (which allocates AdamW)."""

    def __init__(self, stats):
        self.stats, self.marks = stats, []

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append((self.stats.total["tokens"], self.stats.total["positions"],
                           self.stats.total["seconds"]))

    def result(self) -> dict:
        (t0, p0, s0), (t1, p1, s1) = self.marks[0], self.marks[-1]
        return {"tokens_per_s": (t1 - t0) / (s1 - s0), "padding_share": 1 - (t1 - t0) / (p1 - p0)}


def run_steps(model, profile, rows, collator, steps: int, seed: int) -> dict:
    """`steps` stage-2 steps of the pipeline's Trainer (batch 2); tokens/s after the first step."""
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(model, profile.stage2, out, rows, rows[:1], collator,
                                per_device_train_batch_size=SEED_BATCH_SIZE, gradient_accumulation_steps=1,
                                max_steps=steps, eval_strategy="no", save_strategy="no",
                                logging_strategy="no", seed=seed, data_seed=seed, disable_tqdm=True)
        clock = StepClock(trainer.stats)
        trainer.add_callback(clock)
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs: keep --json clean
            trainer.train()
    return clock.result()


def pipeline_throughput(model_name: str = GPT2_SHAPE, profile=None, n_rows: int = 8,
                        repeats: int = 2, seed: int = 0) -> dict:
    """Real tokens/s of stage-2 training: the seed's recipe vs the pipeline's, alternating runs.

    Each run trains a fresh copy of one random-init model for n_rows / 2 + 1 steps of 2 rows
    (the first step is not timed); `repeats` runs of each, alternating, the median counts.
    All of torch's threads. cpu_mfu: see `cpu_mfu`.
    """
    profile = get_profile(profile)
    tok, rows = stage2_rows(profile)
    rows = random.Random(seed).sample(list(rows), min(n_rows, len(rows)))
    model = bench_model(model_name, profile, tok).train()
    recipes = {"baseline": (seed_rows(rows), SFTCollator(tok.pad_token_id, SEED_MAX_LENGTH)),
               "ours": (rows, stage2_collator(model, tok))}
    steps = len(rows) // SEED_BATCH_SIZE + 1
    runs = {name: [] for name in recipes}
    for _ in range(repeats):
        for name, (train_rows, collator) in recipes.items():
            runs[name].append(run_steps(copy.deepcopy(model), profile, train_rows, collator, steps, seed))
    out = {"model": model_name, "path": "pipeline"}
    for name, results in runs.items():
        out[f"{name}_tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in results)
        out[f"{name}_padding_share"] = results[0]["padding_share"]
    out["ratio"] = out["ours_tokens_per_s"] / out["baseline_tokens_per_s"]
    lengths = [len(r["input_ids"]) for r in rows]
    per_token = training_flops_per_token(model, statistics.mean(lengths))
    peak = peak_gemm_flops()
    out.update(cpu_mfu=mfu(per_token, out["ours_tokens_per_s"], peak),
               baseline_cpu_mfu=mfu(per_token, out["baseline_tokens_per_s"], peak),
               peak_gemm_gflops=peak / 1e9, flops_per_token=per_token, rows=len(rows),
               steps_timed=steps - 1, repeats=repeats, threads=torch.get_num_threads(),
               batch_size=SEED_BATCH_SIZE, collator=type(recipes["ours"][1]).__name__)
    return out


# ---------------------------------------------------------------- stage-1 memory


def stage1_memory(batch_size: int = SEED_BATCH_SIZE, seq_len: int = SEED_MAX_LENGTH,
                  steps: int = 3, model: str = GPT2_SHAPE, rounds: int = 2) -> dict:
    """Peak memory and step time of stage-1 training at the seed's workload, each in a fresh process.

    full: the seed's full fine-tuning; lora: plain LoRA; ours: LoRA as the pipeline's stage 1
    trains it (utils.train.chunked_loss: checkpointing every second block, the chunked loss, the
    fused GELU); each technique alone says what it buys. One fresh process at a time with all
    threads, as a user trains, in `rounds` passes (medians count); ~4 GB at most, ~8 min on
    2 quiet cores at the default workload.
    """
    common = dict(model=model, batch_size=batch_size, seq_len=seq_len, steps=steps)
    lora = {**common, "strategy": "lora"}
    savers = {"checkpointing": dict(checkpointing=True, every_n_layers=EVERY_N_LAYERS),
              "chunked_loss": dict(chunked_loss=True), "fused_gelu": dict(fused_gelu=True)}
    ours = {**lora, **{k: v for saver in savers.values() for k, v in saver.items()}}
    names = ["full", "lora", "ours", *(f"lora_{name}" for name in savers)]
    measured = measure_in_turn({**common, "strategy": "full"}, lora, ours,
                               *({**lora, **saver} for saver in savers.values()), rounds=rounds)
    runs = dict(zip(names, measured))
    out = {"workload": {"batch_size": batch_size, "seq_len": seq_len, "model": model,
                        "every_n_layers": EVERY_N_LAYERS, "threads": runs["full"]["threads"],
                        "steps_timed": steps - 1, "rounds": rounds, "one_process_at_a_time": True}}
    out.update({f"{name}_peak_mb": r["total_mb"] for name, r in runs.items()})
    out["ratio"] = runs["ours"]["total_mb"] / runs["full"]["total_mb"]
    out.update({f"{name}_step_s": r["step_s"] for name, r in runs.items()})
    out["step_ratio"] = runs["ours"]["step_s"] / runs["full"]["step_s"]
    return out


# ---------------------------------------------------------------- padding


def pipeline_padding(profile=None, seed: int = 0) -> dict:
    """Padding share of one epoch: the seed's batches vs the pipeline's own stage-2 batches."""
    profile = get_profile(profile)
    tok, rows = stage2_rows(profile)
    order = shuffled_batches(len(rows), SEED_BATCH_SIZE, seed)
    model = bench_model("tiny", profile, tok)
    shares = {}
    for name, collator, data in (("baseline", SFTCollator(tok.pad_token_id, SEED_MAX_LENGTH), seed_rows(rows)),
                                 ("ours", stage2_collator(model, tok), list(rows))):
        batches = collate(data, order, collator)
        real = sum(len(data[i]["input_ids"]) for batch in order for i in batch)
        shares[f"{name}_padding_share"] = 1 - real / sum(b["input_ids"].numel() for b in batches)
    return {**shares, "rows": len(rows), "batch_size": SEED_BATCH_SIZE,
            "ours_collator": type(stage2_collator(model, tok)).__name__}


def bench_sections() -> dict:
    """Zero-argument CPU measurements for `python -m bench`."""
    return {
        "padding": lambda: {k: v for k, v in pipeline_padding().items() if k.endswith("_padding_share")},
        # GPT-2 shape: 4 timed steps of 2 rows each way, twice (a padded step: ~9 s on 2 quiet cores)
        "throughput": lambda: [pipeline_throughput(GPT2_SHAPE, n_rows=8, repeats=2),
                               pipeline_throughput("tiny", n_rows=16, repeats=2)],
        "memory": stage1_memory,
    }
