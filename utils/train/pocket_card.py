"""The pocket model's card: what a reader needs to trust or reproduce the checkpoint.

`utils.train.pretrain` writes it beside the weights (models/pocket-gpt2/README.md); every
figure on it was measured by that run: tokens, wall time, tokens/s, MFU, the loss curve.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path

import torch

from utils.config import REPO_ROOT
from utils.data import corpus as pretrain_data
from utils.models.shapes import mfu, training_flops_per_token


def model_card(cfg, state: dict, blocks, model) -> str:
    """The card's markdown from the run's PretrainConfig, state (history, tokens, wall time), blocks
    and model: what a reader needs to trust or reproduce the checkpoint, all measured by the run."""
    last = state["history"][-1] if state["history"] else {}
    params = sum(p.numel() for p in model.parameters())
    files = pretrain_data.check_corpus()
    corpus = "\n".join(f"| `data/pretrain/{name}` | `{digest}` |" for name, digest in files.items())
    tokens_per_s = state["tokens"] / state["wall_s"] if state["wall_s"] else float("nan")
    head = state.get("head")  # the corpus head's rows, when the run used it
    flops = training_flops_per_token(model, cfg.block_size, head["used"] + head["samples"] if head else None)
    peak = state.get("peak_gemm_gflops", 0.0) * 1e9
    used = mfu(flops, tokens_per_s, peak)
    first = state["history"][0]["val_loss"] if state["history"] else float("nan")
    curve = "\n".join(f"| {h['step']:,d} | {h['tokens']:,d} | {h['wall_s'] / 60:.1f} | {h['train_loss']:.3f} | "
                      f"{h['val_loss']:.3f} |" for h in state["history"])
    samples = "\n".join(f"- step {s['step']}: " + " / ".join(repr(t) for t in s["texts"])
                        for s in state["samples"])
    loop = ", ".join([f"dropout {cfg.dropout:g} (attention {cfg.attn_dropout:g})",
                      "bf16 autocast" if cfg.bf16 else "fp32", f"{cfg.adamw} AdamW"]
                     + (["the chunked loss"] if cfg.chunked_loss else [])
                     + (["fused GELU"] if cfg.fused_gelu else [])
                     + (["15-bit dropout masks"] if cfg.bits_dropout and cfg.dropout else [])
                     + (["torch.compile"] if cfg.compile else []))
    return f"""# Pocket poet: GPT-2, {cfg.n_layer} layers x {cfg.n_embd}, pretrained on public-domain verse

Made by `python -m utils.train.pretrain` (seed {cfg.seed}); the `tiny` profile loads it as its base.

| | |
|---|---|
| architecture | GPT-2 (`GPT2LMHeadModel`), {cfg.n_layer} layers, {cfg.n_embd} wide, {cfg.n_head} heads, context {cfg.block_size} |
| output head | {_head_line(cfg, head)} |
| parameters | {params:,d} |
| tokenizer | the real GPT-2 BPE (50,257 tokens), token-compatible with `openai-community/gpt2` |
| storage | safetensors, fp16 (load as fp32 on a CPU) |
| training | {state['step']:,d} steps x {cfg.batch_size} rows x {cfg.block_size} tokens = {state['tokens']:,d} tokens seen; AdamW (betas 0.9/0.95, weight decay {cfg.weight_decay}), peak lr {cfg.learning_rate}, {cfg.warmup_steps} warm-up steps then cosine to {cfg.min_lr_ratio:g} x peak, gradient clipping {cfg.grad_clip}; {loop} |
| data | {len(blocks['train']):,d} training blocks, {len(blocks['validation']):,d} validation blocks (5% of the plays' passages and of the sonnets, held out whole) |
| validation loss | {first:.3f} after {cfg.eval_every} steps -> **{last.get('val_loss', float('nan')):.3f}** nats/token at the end (ln 50257 = 10.825 is a uniform guess) |
| final training loss | {last.get('train_loss', float('nan')):.3f} (last batch) |
| wall time | {state['wall_s'] / 60:.1f} min, {tokens_per_s:,.0f} tokens/s (validation and checkpoints included) |
| MFU | {f'{used:.2f}' if used else 'not measured'}: {flops / 1e6:.1f} MFLOP per token (`training_flops_per_token`, the head's trained rows counted) x tokens/s over {peak / 1e9:.0f} GFLOP/s, this machine's fp32 GEMM peak measured after the run |
| machine | {platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, {platform.python_version()} |

{shape_section(cfg, state)}
## Validation loss curve
| step | tokens | wall (min) | training loss (last batch) | validation loss |
|---|---|---|---|---|
{curve}

## Corpus
| file | sha256 |
|---|---|
{corpus}

## Samples (temperature 0.8, top-k 50, seed 0) during training
{samples}
"""


def _head_line(cfg, head: dict | None) -> str:
    """The card's output-head row: which rows the training loss scored."""
    tied = f"tied to the input embedding (50,257 x {cfg.n_embd}, no extra parameters)"
    if not head:
        return f"{tied}; loss over {'the chunked head, 256 positions at a time' if cfg.chunked_loss else 'the full logits'}"
    return (f"{tied}; each training step scored the {head['used']:,d} tokens of the training split "
            f"and {head['samples']:,d} of the other {head['unused']:,d} drawn at random, weighted so that "
            f"the loss estimates the full softmax's (a sampled softmax, `utils/train/corpus_head.py`). "
            f"The validation loss is the full 50,257-way one")


# Why width is held at 128 while depth may grow: every later stage (stage 1, stage 2, DPO,
# the reward stage, sampling in every notebook and test) scores all 50,257 tokens at every
# position, so its cost grows with the width of that output layer; the corpus head spares only
# pretraining. Depth adds a few hundred thousand weights per layer and costs every stage little.
SHAPE_RULE = ("the lowest held-out loss of the full-length runs 128 wide (below): every later stage "
              "scores all 50,257 tokens at every position, a cost that grows with the width, not the depth")
BENCH_FILE = REPO_ROOT / "results" / "bench-cpu.json"
CANDIDATES_DIR = REPO_ROOT / "results" / "pocket-next"  # earlier full-length runs: card + history.json each


def shape_section(cfg, state: dict | None = None, bench_file=BENCH_FILE, candidates=CANDIDATES_DIR) -> str:
    """The card's "Shape" section: the full-length runs the shape was chosen from (this one and
    the recorded candidates), then the short sweep and dropout probe of the bench."""
    mine = _shape(dataclasses.asdict(cfg))
    runs = full_length_runs(candidates) + ([("this run", dataclasses.asdict(cfg), state["history"], state["wall_s"])]
                                           if state and state.get("history") else [])
    text = f"## Shape\nChosen: **{mine}**, {SHAPE_RULE}.\n"
    if runs:
        rows = "\n".join(_run_row(*run) for run in runs)
        text += ("\nHeld-out losses in nats/token; each wall time is on its own run's machine (its card says which).\n"
                 "\n| run | shape | dropout (attention) | weight decay | tokens | wall (min) | lowest held-out | "
                 f"final held-out |\n|---|---|---|---|---|---|---|---|\n{rows}\n")
    results = json.loads(bench_file.read_text()).get("results", {}) if bench_file.is_file() else {}
    sweep, probe = results.get("pretrain-shapes"), results.get("pretrain-dropout")
    if sweep:
        rows = "\n".join(f"| {name} | {r['val_nats_per_token']:.3f} | {r['tokens_seen']:,d} | {r['tokens_per_s']:,.0f} | "
                         f"{r['mfu']:.2f} | {r['parameters']:,d} |" for name, r in sweep["shapes"].items())
        text += (f"\n`python -m bench --only pretrain-shapes` trained each candidate for "
                 f"{sweep['seconds_each']:.0f} s ({sweep['threads']} threads): it ranks how fast a shape starts, "
                 "not where it ends (at that budget the shallowest shape leads).\n\n"
                 f"| shape | held-out nats/token | tokens seen | tokens/s | MFU | parameters |\n|---|---|---|---|---|---|\n{rows}\n")
    if probe:
        runs = ", ".join(f"{name}: {r['val_nats_per_token']:.3f} after {r['passes']:.0f} passes"
                         for name, r in probe["runs"].items())
        text += (f"\nDropout (`python -m bench --only pretrain-dropout`, {probe['seconds_each']:.0f} s each on "
                 f"1/{probe['slice_of']} of the split, so the data repeats as in a full run): {runs}. "
                 f"This run: dropout {cfg.dropout:g}.\n")
    return text


def full_length_runs(candidates=CANDIDATES_DIR) -> list[tuple]:
    """(name, config, history, wall_s) of each recorded candidate run (a history.json per folder)."""
    found = []
    for path in sorted(Path(candidates).glob("**/history.json")):
        record = json.loads(path.read_text())
        folder = Path("results/pocket-next") / path.parent.relative_to(candidates)  # "." for the top folder
        found.append((f"`{folder.as_posix()}`", record["config"], record["history"], record["wall_s"]))
    return found


def _shape(config: dict) -> str:
    return f"{config['n_layer']}x{config['n_embd']} ctx{config['block_size']}"


def _run_row(name: str, config: dict, history: list, wall_s: float) -> str:
    shape = _shape(config)
    attention = config.get("attn_dropout", config["dropout"])  # one rate for both before 2026-12-06
    losses = [h["val_loss"] for h in history]
    return (f"| {name} | {shape} | {config['dropout']:g} ({attention:g}) | {config['weight_decay']:g} | {history[-1]['tokens']:,d} | "
            f"{wall_s / 60:.1f} | {min(losses):.3f} | {losses[-1]:.3f} |")
