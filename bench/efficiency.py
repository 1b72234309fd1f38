"""Efficient training, measured side by side: throughput, memory, accumulation, checkpointing.

Each measurement returns a plain dict (the teaching versions, on the tiny model);
bench/pipeline.py measures what the pipeline runs for `python -m bench`. The batching strategies live in bench/batching.py, the GPU
benchmark in bench/gpu.py. Introduced in notebook 11.
"""

from __future__ import annotations

import copy
import random
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from bench.batching import (
    SEED_BATCH_SIZE,
    SEED_MAX_LENGTH,
    collate,
    length_grouped_batches,
    shuffled_batches,
    stage2_rows,
)
from bench.memory_measure import adamw, measure_side_by_side
from utils.config import IGNORE_INDEX, Profile, get_profile
from utils.data.collate import SFTCollator
from utils.env import torch_threads
from utils.models.loading import build_tiny_model
from utils.models.shapes import reference_config
from utils.models.tokenizers import load_tokenizer

# ---------------------------------------------------------------- throughput


def random_init_model(profile=None, tokenizer=None, n_positions: int = SEED_MAX_LENGTH, seed: int = 0):
    """A random-init model of the profile's shape with room for n_positions (no download)."""
    profile = get_profile(profile)
    if profile.model.is_tiny:
        bigger = profile.replace(model={"n_positions": max(n_positions, profile.model.n_positions)})
        return build_tiny_model(bigger, tokenizer or load_tokenizer(profile), seed=seed)
    name = "gpt2" if profile.model.architecture == "gpt2" else "deepseek-coder-1.3b"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(reference_config(name))
    model.loss_type = "ForCausalLM"  # GPT2LMHeadModel's name is not in the loss table: it would warn
    return model


def train_step(model, optimizer, batch: dict) -> float:
    """One forward, backward and optimizer step; returns the loss."""
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def timed_step(model, optimizer, batch) -> float:
    """Seconds for one training step."""
    start = time.perf_counter()
    train_step(model, optimizer, batch)
    return time.perf_counter() - start


def interleaved_passes(runs: dict, batches: dict) -> dict:
    """Seconds of one pass per setting, alternating their steps so load bursts hit both alike."""
    seconds = dict.fromkeys(runs, 0.0)
    for i in range(max(map(len, batches.values()))):
        for name, (net, opt) in runs.items():
            if i < len(batches[name]):
                seconds[name] += timed_step(net, opt, batches[name][i])
    return seconds


def throughput_comparison(profile=None, n_rows: int = 8, repeats: int = 3,
                          batch_size: int = SEED_BATCH_SIZE, max_length: int = SEED_MAX_LENGTH,
                          seed: int = 0, threads: int | None = 1) -> dict:
    """Real (non-pad) tokens per second of stage-2 steps: padded to max_length vs ours. Notebook 11.

    Both train copies of one random-init model (AdamW, fp32) on the same n_rows rows, so they
    process the same real tokens; after a warm-up, `repeats` passes whose steps alternate
    between the two (a shared CPU's load bursts then hit both alike); the median pass counts.
    One thread by default: on a busy CPU a multi-threaded step stalls at every barrier where
    one of its threads was descheduled, which hurts small batches most (measured here: ratio
    ~1.3 with 2 threads under load, ~2.8 with 1). threads=None uses torch's setting.
    """
    with torch_threads(threads):
        return _throughput(get_profile(profile), n_rows, repeats, batch_size, max_length, seed)


def _throughput(profile: Profile, n_rows, repeats, batch_size, max_length, seed) -> dict:
    tok, rows = stage2_rows(profile)
    rows = random.Random(seed).sample(rows, min(n_rows, len(rows)))
    lengths = [len(r["input_ids"]) for r in rows]
    pad = tok.pad_token_id
    batches = {
        "baseline": collate(rows, shuffled_batches(len(rows), batch_size, seed),
                            SFTCollator(pad, max_length)),
        "ours": collate(rows, length_grouped_batches(lengths, batch_size, seed), SFTCollator(pad)),
    }
    model = random_init_model(profile, tok, max_length, seed)
    runs = {}
    for name in batches:
        net = copy.deepcopy(model).train()
        runs[name] = (net, adamw(net.parameters(), lr=1e-4))
        # Warm up on one batch of every shape: the first step allocates the AdamW states and
        # a CPU's math kernels spend ~0.5 s preparing each new shape they meet.
        shapes = {tuple(b["input_ids"].shape): b for b in batches[name]}
        for batch in shapes.values():
            train_step(*runs[name], batch)
    seconds = {name: [] for name in batches}
    for _ in range(repeats):
        for name, s in interleaved_passes(runs, batches).items():
            seconds[name].append(s)
    real = sum(lengths)
    out = {f"{name}_tokens_per_s": real / statistics.median(s) for name, s in seconds.items()}
    out["ratio"] = out["ours_tokens_per_s"] / out["baseline_tokens_per_s"]
    out.update(real_tokens=real, rows=len(rows), repeats=repeats,
               baseline_positions=sum(b["input_ids"].numel() for b in batches["baseline"]),
               ours_positions=sum(b["input_ids"].numel() for b in batches["ours"]))
    return out


# ---------------------------------------------------------------- memory


def checkpointing_comparison(model: str = "tiny", strategy: str = "full", batch_size: int = 2,
                             seq_len: int = 256, steps: int = 2) -> dict:
    """Peak memory and step time without and with gradient checkpointing. Notebook 11."""
    common = dict(model=model, strategy=strategy, batch_size=batch_size, seq_len=seq_len, steps=steps)
    plain, ckpt = measure_side_by_side({**common, "checkpointing": False}, {**common, "checkpointing": True})
    return {"plain_training_mb": plain["training_mb"], "checkpointing_training_mb": ckpt["training_mb"],
            "plain_step_s": plain["step_s"], "checkpointing_step_s": ckpt["step_s"],
            "memory_ratio": ckpt["training_mb"] / plain["training_mb"],
            "time_ratio": ckpt["step_s"] / plain["step_s"]}


# ---------------------------------------------------------------- gradient accumulation


def summed_token_loss(model, batch: dict) -> tuple[torch.Tensor, int]:
    """Sum of the next-token losses over a batch's label tokens, and how many there are."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]  # position t predicts token t + 1
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels.flatten(),
                                             ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((labels != IGNORE_INDEX).sum())


def sgd_update(model, micro_batches: list[dict], weighting: str, lr: float) -> torch.nn.Module:
    """A copy of model after one SGD step on micro-batches whose gradients accumulate.

    weighting "tokens": each micro-batch's summed loss is divided by the label tokens of the
    whole effective batch, so the gradients add up to the big batch's mean-over-tokens.
    weighting "mean": each micro-batch's own mean, divided by the number of micro-batches.
    """
    model = copy.deepcopy(model)
    total = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches)
    for batch in micro_batches:
        loss, n = summed_token_loss(model, batch)
        loss = loss / total if weighting == "tokens" else loss / n / len(micro_batches)
        loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    return model


def max_parameter_difference(a, b) -> float:
    """Largest absolute difference between two models' parameters."""
    return max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))


def accumulation_equivalence(profile=None, n_rows: int = 8, accumulation: int = 2,
                             lr: float = 0.1, seed: int = 0) -> dict:
    """Max parameter difference: one batch of n_rows vs accumulation micro-batches. Notebook 11.

    Plain SGD, because Adam's first step (~ lr * sign(gradient)) would hide a wrongly scaled
    gradient; dropout off (eval mode), because the two runs would draw different masks.
    """
    with torch_threads(1):  # a few small steps: one thread is faster on a busy CPU
        return _accumulation(get_profile(profile), n_rows, accumulation, lr, seed)


def _accumulation(profile: Profile, n_rows, accumulation, lr, seed) -> dict:
    if accumulation < 1 or n_rows % accumulation:
        raise ValueError(f"n_rows ({n_rows}) must split into {accumulation} equal micro-batches")
    tok, rows = stage2_rows(profile)
    rows = random.Random(seed).sample(rows, n_rows)
    model = (build_tiny_model(profile, tok, seed) if profile.model.is_tiny
             else random_init_model(profile, tok, seed=seed)).eval()
    collator = SFTCollator(tok.pad_token_id)
    micro = n_rows // accumulation
    micro_batches = [collator(rows[i:i + micro]) for i in range(0, n_rows, micro)]
    big = sgd_update(model, [collator(rows)], "tokens", lr)
    return {"max_abs_diff": max_parameter_difference(big, sgd_update(model, micro_batches, "tokens", lr)),
            "naive_max_abs_diff": max_parameter_difference(big, sgd_update(model, micro_batches, "mean", lr)),
            "label_tokens": [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches]}
