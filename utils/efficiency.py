"""Efficient training, measured side by side: padding, throughput, memory, accumulation, checkpointing.

Each measurement returns a plain dict; `bench_sections()` hands the CPU ones to
`python -m utils.bench`; `gpu_benchmark` runs on a lent GPU only. Introduced in notebook 11.
"""

from __future__ import annotations

import copy
import random
import statistics
import time
from functools import lru_cache

import torch

from .config import Profile, get_profile
from .env import torch_threads
from .data import IGNORE_INDEX, SFTCollator, encode_pairs, prepare_data
from .memory import adamw, measure_side_by_side

SEED_MAX_LENGTH = 512  # the seed padded every row to 512 tokens...
SEED_BATCH_SIZE = 2  # ...two rows at a time


# ---------------------------------------------------------------- batching


def stage2_rows(profile: Profile | str | None = None):
    """(tokenizer, encoded stage-2 training rows) of a profile, cached: treat them as read-only."""
    return _stage2_rows(get_profile(profile))


@lru_cache(maxsize=4)
def _stage2_rows(profile: Profile):
    from .modeling import load_tokenizer

    tokenizer = load_tokenizer(profile)
    data = prepare_data(profile, tokenizer)
    rows, _ = encode_pairs(data.instructions["train"], tokenizer, profile.data.max_length)
    return tokenizer, tuple(rows)


def shuffled_batches(n_rows: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    """Row indices in a seeded random order, cut into consecutive batches (the seed's sampler)."""
    order = list(range(n_rows))
    random.Random(seed).shuffle(order)
    return [order[i:i + batch_size] for i in range(0, n_rows, batch_size)]


def length_grouped_batches(lengths, batch_size: int, seed: int = 0, mega: int = 50) -> list[list[int]]:
    """Batches of rows of similar length, in random order: the Trainer's `group_by_length`.

    Shuffle, cut into megabatches of `mega * batch_size` rows, sort each by length (longest
    first), cut into batches, shuffle the batches: neighbours have nearly equal lengths, so
    dynamic padding adds little, while the order stays random from one megabatch to the next.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    size = mega * batch_size
    batches = []
    for start in range(0, len(order), size):
        mb = sorted(order[start:start + size], key=lambda i: -lengths[i])
        batches += [mb[i:i + batch_size] for i in range(0, len(mb), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(rows, batches, collator) -> list[dict]:
    """Tensors of each batch of row indices."""
    return [collator([rows[i] for i in batch]) for batch in batches]


def epoch_padding_share(batches: list[dict]) -> float:
    """Padding positions over all positions of an epoch (not a mean of per-batch shares)."""
    pad = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
    return pad / sum(b["attention_mask"].numel() for b in batches)


def padding_comparison(profile=None, batch_size: int = SEED_BATCH_SIZE,
                       max_length: int = SEED_MAX_LENGTH, seed: int = 0) -> dict:
    """Padding share of one epoch of stage-2 batches: the seed's vs ours. Notebook 11.

    baseline: random batches padded to max_length (SFTCollator rounding up to a multiple of
    max_length pads every row to exactly max_length); dynamic: random batches padded to
    their longest row; ours: length-grouped batches padded to their longest row.
    """
    tok, rows = stage2_rows(profile)
    lengths = [len(r["input_ids"]) for r in rows]
    pad = tok.pad_token_id
    settings = {
        "baseline": (shuffled_batches(len(rows), batch_size, seed), SFTCollator(pad, max_length)),
        "dynamic": (shuffled_batches(len(rows), batch_size, seed), SFTCollator(pad)),
        "ours": (length_grouped_batches(lengths, batch_size, seed), SFTCollator(pad)),
    }
    out = {}
    for name, (batches, collator) in settings.items():
        tensors = collate(rows, batches, collator)
        out[f"{name}_padding_share"] = epoch_padding_share(tensors)
        out[f"{name}_positions"] = sum(b["attention_mask"].numel() for b in tensors)
    out.update(rows=len(rows), real_tokens=sum(lengths), batch_size=batch_size,
               max_length=max_length)
    return out


# ---------------------------------------------------------------- throughput


def random_init_model(profile=None, tokenizer=None, n_positions: int = SEED_MAX_LENGTH, seed: int = 0):
    """A random-init model of the profile's shape with room for n_positions (no download)."""
    from transformers import AutoModelForCausalLM

    from .modeling import build_tiny_model, load_tokenizer, reference_config

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
        return _throughput(profile, n_rows, repeats, batch_size, max_length, seed)


def _throughput(profile, n_rows, repeats, batch_size, max_length, seed) -> dict:
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


def memory_comparison(model: str = "gpt2", batch_size: int = 2, seq_len: int = 64, steps: int = 2) -> dict:
    """Peak training memory (MiB) of full fine-tuning vs LoRA, each in a fresh process. Notebook 11.

    Peak = the most resident memory during the steps minus the memory before the model was
    built: weights, gradients, optimizer states and activations (utils.memory explains how).
    """
    common = dict(model=model, batch_size=batch_size, seq_len=seq_len, steps=steps)
    full, lora = measure_side_by_side({**common, "strategy": "full"}, {**common, "strategy": "lora"})
    return {"full_peak_mb": full["total_mb"], "lora_peak_mb": lora["total_mb"],
            "ratio": lora["total_mb"] / full["total_mb"], "full": full, "lora": lora}


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
        return _accumulation(profile, n_rows, accumulation, lr, seed)


def _accumulation(profile, n_rows, accumulation, lr, seed) -> dict:
    from .modeling import build_tiny_model

    if accumulation < 1 or n_rows % accumulation:
        raise ValueError(f"n_rows ({n_rows}) must split into {accumulation} equal micro-batches")
    profile = get_profile(profile)
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


# ---------------------------------------------------------------- the GPU benchmark

# Peak dense tensor-core FLOP/s in bf16 (fp16 on the T4, which has no bf16), from NVIDIA's
# datasheets; they also print "with sparsity" figures twice as high, which training never
# reaches. Regexes over torch.cuda.get_device_name(), tried in order: NVL and PCIe first.
PEAK_FLOPS = (
    (r"H200 NVL", 835e12),  # H200 datasheet: 1,671 TFLOPS with sparsity
    (r"H200", 989e12),  # H200 SXM: 1,979 with sparsity
    (r"H100 NVL", 835e12),  # H100 datasheet: 1,671 with sparsity
    (r"H100 PCIe", 756e12),  # 1,513 with sparsity
    (r"H100", 989e12),  # H100 SXM: 1,979 with sparsity
    (r"A100", 312e12),  # A100 datasheet: 312 (624 with sparsity), 40 GB and 80 GB alike
    (r"\bL4\b", 121e12),  # L4 datasheet: 242 with sparsity
    (r"\bT4\b", 65e12),  # T4 datasheet: 65 TFLOPS fp16 mixed precision
)
BASELINE = {"name": "baseline", "autocast": False, "attention": "eager", "fused": False,
            "grouped": False, "describe": "fp32, eager attention, AdamW, padded to 512"}
OURS = {"name": "ours", "autocast": True, "attention": "sdpa", "fused": True, "grouped": True,
        "describe": "bf16/fp16 autocast, SDPA, fused AdamW, dynamic padding, length grouping"}
NO_CUDA = ("gpu_benchmark needs a CUDA GPU (device={device!r}, torch.cuda.is_available() = "
           "{available}). Run it on Colab (Runtime > Change runtime type > GPU) or a GPU "
           "machine: `python -m utils.efficiency gpu`.")


def peak_flops(device_name: str) -> float | None:
    """The device's peak dense bf16/fp16 FLOP/s from PEAK_FLOPS, or None if it is not listed."""
    import re

    return next((flops for pattern, flops in PEAK_FLOPS if re.search(pattern, device_name)), None)


def training_flops(params: int, tokens: int) -> float:
    """6 * params * tokens: forward 2 and backward 4 FLOPs per parameter per token (Kaplan 2020)."""
    return 6.0 * params * tokens


def mfu(params: int, tokens: int, seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: training FLOPs per second over the device's peak."""
    return None if not peak else training_flops(params, tokens) / seconds / peak


def benchmark_rows(rows, vocab_size: int, seed: int = 0) -> list[dict]:
    """Random token ids with the lengths and prompt masks of real rows: speed depends on lengths only."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for r in rows:
        ids = torch.randint(0, vocab_size, (len(r["input_ids"]),), generator=gen).tolist()
        labels = [i if lab != IGNORE_INDEX else IGNORE_INDEX for i, lab in zip(ids, r["labels"])]
        out.append({"input_ids": ids, "labels": labels})
    return out


def benchmark_run(config, rows, setting: dict, device, batch_size: int = SEED_BATCH_SIZE,
                  max_length: int = SEED_MAX_LENGTH, compile: bool = False, warmup: int = 3) -> dict:
    """Train a random-init model of `config` once over `rows`: real tokens/s, peak memory, MFU."""
    from transformers import AutoModelForCausalLM

    from .env import pick_dtype

    device = torch.device(device)
    torch.manual_seed(0)
    with device:  # initialise on the GPU: 1.3B random weights take a minute on a CPU
        model = AutoModelForCausalLM.from_config(config, attn_implementation=setting["attention"])
    model = model.to(device).train()
    params = sum(p.numel() for p in model.parameters())
    half = pick_dtype(device) if setting["autocast"] else torch.float32
    params_list = list(model.parameters())
    opt = adamw(params_list) if setting["fused"] else torch.optim.AdamW(params_list, lr=1e-4)
    # fp16 (a T4) needs loss scaling so small gradients do not underflow; bf16 does not
    scaler = torch.amp.GradScaler(device.type, enabled=half == torch.float16)
    lengths = [len(r["input_ids"]) for r in rows]
    if setting["grouped"]:
        batches = collate(rows, length_grouped_batches(lengths, batch_size), SFTCollator(0))
    else:
        batches = collate(rows, shuffled_batches(len(rows), batch_size), SFTCollator(0, max_length))
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    net = torch.compile(model, dynamic=True) if compile else model

    def step(batch):
        with torch.autocast(device.type, dtype=half, enabled=half != torch.float32):
            loss = net(**batch).loss
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    for batch in batches[:warmup]:  # AdamW states, kernels and compilation, outside the clock
        step(batch)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    real = sum(lengths)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    flops = peak_flops(torch.cuda.get_device_name(device)) if cuda else None
    return {"setting": setting["describe"], "dtype": str(half).replace("torch.", ""),
            "params": params, "real_tokens": real,
            "positions": sum(b["input_ids"].numel() for b in batches),
            "seconds": seconds, "tokens_per_s": real / seconds, "peak_memory_gb": peak,
            "mfu": mfu(params, real, seconds, flops)}


def gpu_benchmark(device="cuda", models=("gpt2", "deepseek-coder-1.3b"), compile: bool = False) -> dict:
    """Seed-style baseline vs ours on GPT-2- and DeepSeek-1.3B-shaped random-init models (GPU only).

    Rows: the lengths and prompt masks of the sample stage-2 data (tiny profile), random ids.
    A setting that runs out of memory is recorded as such. Notebook 11 and the README's table.
    """
    import datetime
    import gc

    from .env import library_versions
    from .modeling import reference_config

    available = torch.cuda.is_available()
    if not available or torch.device(device).type != "cuda":
        raise RuntimeError(NO_CUDA.format(device=str(device), available=available))
    name = torch.cuda.get_device_name(device)
    _, rows = stage2_rows("tiny")
    now = datetime.datetime.now(datetime.timezone.utc)
    result = {"device": name, "date": now.isoformat(timespec="seconds"),
              "peak_flops": peak_flops(name), "rows": len(rows), "batch_size": SEED_BATCH_SIZE,
              "compile": compile, "versions": library_versions(("torch", "transformers")), "models": {}}
    for model_name in models:
        config = reference_config(model_name)
        data = benchmark_rows(rows, config.vocab_size)
        runs = {}
        for setting in (BASELINE, OURS):
            try:
                runs[setting["name"]] = benchmark_run(config, data, setting, device,
                                                      compile=compile and setting is OURS)
            except torch.cuda.OutOfMemoryError:
                runs[setting["name"]] = {"setting": setting["describe"], "error": "out of memory"}
            gc.collect()
            torch.cuda.empty_cache()
        if all("tokens_per_s" in r for r in runs.values()):
            runs["speedup"] = runs["ours"]["tokens_per_s"] / runs["baseline"]["tokens_per_s"]
        result["models"][model_name] = runs
    return result


def write_gpu_results(result: dict, path=None):
    """Write a gpu_benchmark result to results/gpu_benchmark.json (or path); returns the path."""
    import json
    from pathlib import Path

    from .config import REPO_ROOT

    path = Path(path or REPO_ROOT / "results" / "gpu_benchmark.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- the benchmark CLI


def _only(result: dict, keys) -> dict:
    return {k: result[k] for k in keys}


def bench_sections() -> dict:
    """Zero-argument CPU measurements for `python -m utils.bench`, each with its fixed keys."""
    return {
        "padding": lambda: _only(padding_comparison(), ("baseline_padding_share", "ours_padding_share")),
        "throughput": lambda: _only(throughput_comparison(),
                                    ("baseline_tokens_per_s", "ours_tokens_per_s", "ratio")),
        "memory": lambda: _only(memory_comparison(), ("full_peak_mb", "lora_peak_mb", "ratio")),
    }


def main(argv=None) -> None:
    """`python -m utils.efficiency gpu [--compile]`: run gpu_benchmark and write its JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("what", choices=["gpu"])
    parser.add_argument("--compile", action="store_true", help="torch.compile our setting")
    args = parser.parse_args(argv)
    result = gpu_benchmark(compile=args.compile)
    print(json.dumps(result, indent=2))
    print(f"written to {write_gpu_results(result)}")


if __name__ == "__main__":
    main()
