"""The GPU benchmark: `python -m bench.gpu [--compile]` (a CUDA GPU only).

The seed-style baseline (fp32, eager attention, padded to 512, batch 2) against ours
(bf16/fp16 autocast, SDPA, fused AdamW, length-grouped dynamic padding) on GPT-2- and
DeepSeek-1.3B-shaped random-init models: real tokens per second, peak memory and MFU.
Writes results/gpu_benchmark.json. Notebook 11 and the README's efficiency table.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import re
import statistics
import time
from pathlib import Path

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
from bench.memory_measure import adamw
from utils.config import IGNORE_INDEX, REPO_ROOT
from utils.data.collate import SFTCollator
from utils.env import library_versions, pick_dtype
from utils.models.shapes import mfu, reference_config, training_flops_per_token

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
           "machine: `python -m bench.gpu`.")


def peak_flops(device_name: str) -> float | None:
    """The device's peak dense bf16/fp16 FLOP/s from PEAK_FLOPS, or None if it is not listed."""
    return next((flops for pattern, flops in PEAK_FLOPS if re.search(pattern, device_name)), None)


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
            "mfu": mfu(training_flops_per_token(model, statistics.mean(lengths)), real / seconds, flops)}


def gpu_benchmark(device="cuda", models=("gpt2", "deepseek-coder-1.3b"), compile: bool = False) -> dict:
    """Seed-style baseline vs ours on GPT-2- and DeepSeek-1.3B-shaped random-init models (GPU only).

    Rows: the lengths and prompt masks of the sample stage-2 data (tiny profile), random ids.
    A setting that runs out of memory is recorded as such. Notebook 11 and the README's table.
    """
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
    path = Path(path or REPO_ROOT / "results" / "gpu_benchmark.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv=None) -> None:
    """`python -m bench.gpu [--compile]`: run gpu_benchmark and write its JSON."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--compile", action="store_true", help="torch.compile our setting")
    args = parser.parse_args(argv)
    result = gpu_benchmark(compile=args.compile)
    print(json.dumps(result, indent=2))
    print(f"written to {write_gpu_results(result)}")


if __name__ == "__main__":
    main()
