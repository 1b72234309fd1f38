"""The next pocket checkpoint's choices, measured: its shape, and dropout when the data repeats.

- shapes: each candidate shape (depth, width, heads, context) trained by the pocket recipe
  for the same wall time, its held-out loss and speed (`python -m bench --only pretrain-shapes`).
- dropout: ours with and without dropout on a slice of the split, as many passes as a full run
  (`--only pretrain-dropout`).
The pretraining card (utils/train/pocket_card.py) lists both; bench/pretrain_race.py holds the
pocket loop for a budget of seconds that these reuse (the race against nanoGPT's recipe).
"""

from __future__ import annotations

import dataclasses
import os

import torch

from bench.pretrain_race import train_pocket
from utils.data import corpus as pretrain_data
from utils.models.shapes import mfu, peak_gemm_flops
from utils.models.tokenizers import gpt2_tokenizer
from utils.train.pretrain import PretrainConfig

# ---------------------------------------------------------------- the shape sweep

# Candidates at width 128 (context 256 unless named): deeper, a longer context, and one wider
# shape. Every head is 32 wide. Each sets its depth, so the sweep means the same whatever
# PretrainConfig's default depth is. With the corpus head the output layer scores ~12,900 rows,
# not 50,257, so the transformer body is no longer a rounding error of a step. The checkpoint
# stays 128 wide (utils/train/pocket_card.py, SHAPE_RULE): the wider shape is measured to show
# what that rule gives up.
SHAPES = {
    "4x128 ctx256": {"n_layer": 4},
    "6x128 ctx256": {"n_layer": 6},
    "8x128 ctx256": {"n_layer": 8},
    "4x128 ctx512": {"n_layer": 4, "block_size": 512, "batch_size": 4},  # the same tokens a step
    "6x192 ctx256": {"n_layer": 6, "n_embd": 192, "n_head": 6},
}


def shape_sweep(seconds: float, ours: PretrainConfig | None = None, shapes: dict | None = None,
                tokenizer=None) -> dict:
    """Each shape trained for `seconds` of wall time with ours' loop and schedule, one after the
    other; held-out nats/token (each on its own context's blocks), tokens seen, tokens/s, MFU.

    Equal wall time, not equal steps: a bigger shape sees fewer tokens, which is its real cost.
    A short budget favours small shapes; the sweep ranks candidates, the full run decides.
    """
    ours = ours or PretrainConfig()
    tokenizer = tokenizer or gpt2_tokenizer()
    peak, rows, blocks = peak_gemm_flops(), {}, {}
    for name, changes in (shapes or SHAPES).items():
        cfg = dataclasses.replace(ours, **changes)
        if (cfg.block_size, cfg.seed) not in blocks:  # the corpus is cut once per context length
            blocks[cfg.block_size, cfg.seed] = pretrain_data.pretraining_blocks(tokenizer, cfg.block_size, seed=cfg.seed)
        row = train_pocket(cfg, seconds, tokenizer, blocks[cfg.block_size, cfg.seed])
        tokens_per_s = row["tokens_seen"] / seconds
        rows[name] = {"changes": changes, "val_nats_per_token": row["val_nats_per_token"],
                      "bits_per_char": row["bits_per_char"], "tokens_seen": row["tokens_seen"],
                      "tokens_per_s": tokens_per_s, "mfu": mfu(row["flops_per_token"], tokens_per_s, peak),
                      "parameters": row["parameters"]}
    best = min(rows, key=lambda name: rows[name]["val_nats_per_token"])
    return {"seconds_each": seconds, "threads": torch.get_num_threads(),
            "load_average_1min_at_start": os.getloadavg()[0], "shapes": rows, "best": best}


# ---------------------------------------------------------------- dropout when the data repeats

# The full run repeats the ~346,000-token training split dozens of times; a few minutes of the
# sweep see it about twice, too few passes to show over-fitting. The probe trains ours on an
# equal slice of the split (1 / `slice_of`) for the same wall time, so that it makes about as
# many passes as the full run, with and without dropout.
DROPOUT_PROBE = (0.0, 0.1)


def dropout_probe(seconds: float, slice_of: int = 16, ours: PretrainConfig | None = None,
                  rates: tuple[float, ...] = DROPOUT_PROBE, tokenizer=None) -> dict:
    """Held-out nats/token of ours at each dropout rate, trained on 1/slice_of of the split."""
    ours = ours or PretrainConfig()
    tokenizer = tokenizer or gpt2_tokenizer()
    blocks = pretrain_data.pretraining_blocks(tokenizer, ours.block_size, seed=ours.seed)
    rows = torch.linspace(0, len(blocks["train"]) - 1, max(1, len(blocks["train"]) // slice_of)).long()
    sliced = {"train": blocks["train"][rows], "validation": blocks["validation"]}
    runs = {}
    for rate in rates:
        row = train_pocket(dataclasses.replace(ours, dropout=rate), seconds, tokenizer, sliced)
        runs[f"dropout {rate:g}"] = {"val_nats_per_token": row["val_nats_per_token"],
                                     "tokens_seen": row["tokens_seen"],
                                     "passes": row["tokens_seen"] / sliced["train"].numel()}
    return {"seconds_each": seconds, "slice_of": slice_of, "train_tokens": sliced["train"].numel(),
            "threads": torch.get_num_threads(), "load_average_1min_at_start": os.getloadavg()[0],
            "runs": runs, "best": min(runs, key=lambda name: runs[name]["val_nats_per_token"])}
