"""Training memory, measured: a few training steps in a fresh process, their peak and step time.

The peak-memory probes themselves live in utils/env.py (the training stats use them too).
`measure_training_memory` runs `python -m bench.memory_measure '{json}'` as a child process,
so the measurement starts from a clean process instead of a notebook kernel that has already
held big tensors. utils/models/memory.py predicts what is measured here. Introduced in notebook 11.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import torch

from utils.config import REPO_ROOT
from utils.env import current_rss, peak_rss, reset_peak_rss
from utils.models.memory import MB


def measure_training_memory(model: str = "gpt2", strategy: str = "full", batch_size: int = 2,
                            seq_len: int = 8, steps: int = 2, checkpointing: bool = False,
                            chunked_loss: bool = False, fused_gelu: bool = False, every_n_layers: int = 1,
                            threads: int | None = 1, timeout: float = 900) -> dict:
    """Peak memory and step time of a few AdamW steps, measured in a fresh Python process.

    model: 'gpt2' (GPT2LMHeadModel(GPT2Config()), 124M, random init) or 'tiny' (the tiny
    profile's model); strategy: 'full' or 'lora'. Returns MiB: weights_mb (RSS added by
    building the model), training_mb (peak RSS during the steps minus RSS before them) and
    total_mb (their sum), optimizer_mb (the AdamW state tensors) and step_s (median seconds
    per step after the first). threads: torch threads of the child (None: torch's default,
    all cores). Notebook 11.
    """
    if model not in ("tiny", "gpt2") or strategy not in ("full", "lora"):
        raise ValueError(f"model must be 'tiny' or 'gpt2' and strategy 'full' or 'lora', "
                         f"got {model!r} and {strategy!r}")
    args = dict(model=model, strategy=strategy, batch_size=batch_size, seq_len=seq_len,
                steps=steps, checkpointing=checkpointing, chunked_loss=chunked_loss,
                fused_gelu=fused_gelu, every_n_layers=every_n_layers, threads=threads)
    # glibc keeps freed blocks up to 32 MiB for reuse, so RSS would count dead tensors; a fixed
    # 128 KiB mmap threshold gives every larger tensor its own mapping, returned when freed.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TOKENIZERS_PARALLELISM": "false",
           "MALLOC_MMAP_THRESHOLD_": "131072"}
    proc = subprocess.run([sys.executable, "-m", "bench.memory_measure", json.dumps(args)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement failed ({args}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_side_by_side(*runs: dict) -> list[dict]:
    """measure_training_memory for each dict of arguments, all at once, one process each.

    Running them together (one thread each) means a busy machine slows them alike, so their
    step times stay comparable; their memory is per process and unaffected. Notebook 11.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(lambda kw: measure_training_memory(**kw), runs))


def measure_in_turn(*runs: dict, rounds: int = 2) -> list[dict]:
    """measure_training_memory for each dict of arguments, one fresh process at a time, all threads.

    The way a user trains: one run alone with every core. `rounds` passes over all the runs
    (so a slow spell of the machine hits every run once, not one run twice); each run's step
    time and peak are the medians of its rounds. Used by `python -m bench`.
    """
    results = [[] for _ in runs]
    for _ in range(rounds):
        for kwargs, out in zip(runs, results):
            out.append(measure_training_memory(**{"threads": None, **kwargs}))
    return [{**out[0], "step_s": statistics.median(r["step_s"] for r in out),
             "total_mb": statistics.median(r["total_mb"] for r in out),
             "step_s_rounds": [r["step_s"] for r in out]} for out in results]


def _build(model: str, strategy: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    from utils.models.loading import build_tiny_model
    from utils.models.lora import apply_lora
    from utils.models.tokenizers import load_tokenizer

    if model == "tiny":
        net = build_tiny_model("tiny", load_tokenizer("tiny"))
    else:
        net = GPT2LMHeadModel(GPT2Config())
    return apply_lora(net, model) if strategy == "lora" else net


def adamw(params, lr: float = 1e-4, **kwargs):
    """Fused AdamW where this torch has it (the Trainer's default), else the plain loop."""
    try:
        return torch.optim.AdamW(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, **kwargs)


def _warm_up_autograd() -> None:
    """One step of a throwaway model: autograd's threads and kernel buffers count as imports."""
    toy = torch.nn.Sequential(torch.nn.Embedding(64, 16), torch.nn.Linear(16, 64))
    opt = torch.optim.AdamW(toy.parameters())
    ids = torch.arange(8).view(1, 8)
    torch.nn.functional.cross_entropy(toy(ids).view(8, 64), ids.view(8)).backward()
    opt.step()


def _measure_here(model, strategy, batch_size, seq_len, steps, checkpointing, chunked_loss=False,
                  fused_gelu=False, every_n_layers=1, threads=1) -> dict:
    """The child's work: build, reset the peak mark, train a few steps, report MiB."""
    import peft  # noqa: F401  (imported by apply_lora; an import is not model memory)

    from utils.models.tokenizers import load_tokenizer

    if threads:  # one thread: steadier step times for runs side by side on a shared CPU
        torch.set_num_threads(threads)
    if model == "tiny":
        load_tokenizer("tiny")  # its caches belong to the imports, not to the model
    # Every import before the first reading: importing a room runs its __init__ (utils.train's
    # brings the Trainer, accelerate and more), and that is library memory, not model memory.
    import utils.models.lora  # noqa: F401  (_build's imports, loaded here)
    from utils.train.chunked_loss import lm_loss
    from utils.train.savers import LeanLoRA, set_checkpointing

    _warm_up_autograd()
    before_build = current_rss()

    net = _build(model, strategy)
    if strategy == "lora" and (checkpointing or fused_gelu):
        LeanLoRA(net, checkpointing, every_n_layers, fused_gelu)
    elif checkpointing:
        set_checkpointing(net, True, every_n_layers)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = adamw(params)  # its states appear at the first step, inside the measured peak
    ids = torch.randint(0, net.config.vocab_size, (batch_size, seq_len),
                        generator=torch.Generator().manual_seed(0))
    before_steps = current_rss()
    method = "VmHWM reset after build" if reset_peak_rss() else "peak since process start"
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        batch = {"input_ids": ids, "labels": ids}
        (lm_loss(net, batch) if chunked_loss else net(**batch).loss).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    peak = peak_rss()
    state = sum(t.nbytes for st in opt.state.values() for t in st.values() if torch.is_tensor(t))
    return {"model": model, "strategy": strategy, "batch_size": batch_size, "seq_len": seq_len,
            "checkpointing": checkpointing, "chunked_loss": chunked_loss, "fused_gelu": fused_gelu,
            "every_n_layers": every_n_layers, "threads": torch.get_num_threads(), "trainable": sum(p.numel() for p in params),
            "weights_mb": (before_steps - before_build) / MB,
            "training_mb": (peak - before_steps) / MB, "total_mb": (peak - before_build) / MB,
            "optimizer_mb": state / MB,  # exp_avg, exp_avg_sq and a step counter per tensor
            "step_s": statistics.median(times[1:] or times),  # step 1 also allocates the states
            "method": method}


if __name__ == "__main__":
    print(json.dumps(_measure_here(**json.loads(sys.argv[1]))))
