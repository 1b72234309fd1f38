"""Pretraining in the bench: the pocket loop's speed, and nanoGPT's CPU recipe side by side.

- levers: tokens/s and MFU of `utils.train.pretrain.train_step` on the real workload (the
  pocket shape, 256-token blocks of the corpus): the first pocket checkpoint's settings ("today"),
  our defaults ("ours", PretrainConfig()), and ours with one lever changed at a time. A lever
  is kept when ours measures faster than ours with it toggled. Every setting is built and
  warmed up first (the warm-up step allocates AdamW's moments, or compiles: not timed), then
  they take turns, a few steps each (after one untimed step), round after round in a new order
  each round, and each one's median turn counts (bench/timing.py): on a VM whose speed swings,
  all of them see the same stretch of it. The fp32 matmul peak, MFU's denominator, takes turns
  with them. A toggle that measures faster changes a default only if it was faster in 80% of
  the rounds too.
- race (bench/pretrain_race.py): nanoGPT's "baby GPT" CPU recipe against the pocket loop with
  its recipe for a short budget (SHORT_BUDGET) and with ours (the checkpoint's, built for half
  an hour), each for the same wall time, scored in bits per character on the same held-out text.
`python -m bench --only pretrain [--seconds S]`; notebook 04b and the README report it. The
shape sweep and the dropout probe for the next checkpoint are in bench/pretrain_sweeps.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time

import torch

from bench.pretrain_race import (
    SHORT_BUDGET,
    CharRecipe,
    scored_head,
    train_char,
    train_pocket,
)
from bench.timing import turn_times
from utils.data import corpus as pretrain_data
from utils.models.shapes import mfu
from utils.models.tokenizers import gpt2_tokenizer
from utils.train.pretrain import PretrainConfig, batch_rows, new_run, train_step

# The loop the first pocket checkpoint (2026-12-04, 2.0M tokens) was trained with (its history.json):
# GPT2Config's dropout 0.1 (the attention's too), bf16 autocast, torch's default (for-loop) AdamW
# on a CPU, the loss over all 50,257 rows of the output layer.
TODAY = {"dropout": 0.1, "attn_dropout": 0.1, "bf16": True, "adamw": "for-loop", "chunked_loss": False,
         "compile": False, "fused_gelu": False, "bits_dropout": False, "batch_size": 8, "head": "full"}
# The same loop without bf16 autocast: where the checkpoint trained bf16 was native; this
# machine emulates it, so "today" alone would flatter every other setting ~18x.
TODAY_FP32 = {**TODAY, "bf16": False}
ALL_THREADS = None  # torch's default: one thread per core


def lever_settings(ours: PretrainConfig) -> dict[str, tuple[dict, int | None]]:
    """{name: (PretrainConfig changes from ours, threads)}: today, ours, one lever toggled each."""
    half, double = max(1, ours.batch_size // 2), ours.batch_size * 2
    return {
        "today": (TODAY, ALL_THREADS),
        "today in fp32": (TODAY_FP32, ALL_THREADS),
        "ours": ({}, ALL_THREADS),
        "full head": ({"head": "full" if ours.head == "corpus" else "corpus"}, ALL_THREADS),
        "chunked loss": ({"chunked_loss": not ours.chunked_loss}, ALL_THREADS),
        "fused GELU": ({"fused_gelu": not ours.fused_gelu}, ALL_THREADS),
        "dropout masks": ({"bits_dropout": not ours.bits_dropout}, ALL_THREADS),
        "dropout": ({"dropout": 0.1 if ours.dropout == 0 else 0.0}, ALL_THREADS),
        "attention dropout": ({"attn_dropout": 0.1 if ours.attn_dropout == 0 else 0.0}, ALL_THREADS),
        "bf16 autocast": ({"bf16": not ours.bf16}, ALL_THREADS),
        "AdamW for-loop": ({"adamw": "for-loop"}, ALL_THREADS),
        "AdamW foreach": ({"adamw": "foreach"}, ALL_THREADS),
        "AdamW fused": ({"adamw": "fused"}, ALL_THREADS),
        f"batch {half}": ({"batch_size": half}, ALL_THREADS),
        f"batch {double}": ({"batch_size": double}, ALL_THREADS),
        "torch.compile": ({"compile": not ours.compile}, ALL_THREADS),
        "1 thread": ({}, 1),
    }


# Why a lever is where it is, beyond its measured speed (the JSON carries these next to it).
LEVER_NOTES = {
    "dropout": "residual and embedding dropout: a mask on each block's output, cheap elementwise "
               "work; ours keeps 0.1 for the held-out loss: a full run repeats the data ~14 times, "
               "and `--only pretrain-dropout` measures what dropout is worth then",
    "attention dropout": "dropout on the attention probabilities keeps CPU SDPA off its fused kernel "
                         "(PyTorch's math path materialises and masks every head's scores), so it "
                         "costs most of what dropout costs; ours trains without it",
    "chunked loss": "the loss and its gradients computed inside the forward, 256 positions at a time "
                    "(utils/train/chunked_loss.py): the same values, but a chunk's logits (256 x "
                    "12,940 x 4 bytes, 13 MB) stay in the CPU's cache, where a batch's (106 MB) "
                    "go to memory and back for each pass of the softmax and its gradient",
    "fused GELU": "PyTorch's one-kernel tanh GELU for transformers' eight elementwise operations "
                  "(utils/train/savers.py, stage 1 uses it too): the same function; the saved "
                  "config still says gelu_new",
    "dropout masks": "masks from 15-bit draws, two per 32-bit random number (utils/train/dropout.py), "
                     "for PyTorch's bernoulli_, a 53-bit double per element on one thread: drop "
                     "probability 3,277 / 32,768 = 0.100006 for 0.1, the kept values scaled to match",
    "torch.compile": "compiling costs minutes on 2 cores at every start and every new shape; "
                     "it fuses the small elementwise kernels, not the matmuls, which are most of the step",
    "full head": "the loss over all 50,257 rows of the output layer: ~38,000 of them are tokens "
                 "the corpus never uses, and their matmul is most of a step's FLOPs; the corpus "
                 "head scores the used rows and a random 1,024 of the rest (corpus_head.py)",
    "batch": "the batch also sets how many updates a token budget buys (9M tokens: 4,394 steps at "
             "8 rows); ours keeps 8 rows of 256, the checkpoint's",
    "1 thread": "one thread per core is torch's default; 1 thread measures what a busy machine gives",
}


def cpu_has_native_bf16() -> bool:
    """True when oneDNN computes bf16 in hardware here (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_note(native: bool) -> str:
    """Why bf16 autocast measures as it does on this CPU."""
    if native:
        return ("this CPU computes bf16 natively (AVX512-BF16/AMX): autocast converts no operands in "
                "software here; the weights and optimizer stay fp32 anyway")
    return ("this CPU has no native bf16 (no AVX512-BF16/AMX): autocast converts every matmul's "
            "operands, and the weights and optimizer stay fp32 anyway")


LEVER_NOTES["bf16 autocast"] = bf16_note(cpu_has_native_bf16())
TIE = 0.03  # tokens/s within 3% of ours is called a tie: a few timed steps cannot separate them
SURE = 0.8  # a toggle must beat ours' turn in 80% of the rounds to change a default


def _with_threads(threads: int | None, fn):
    """fn() with torch set to `threads` threads (None: leave the default), restored afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


class LeverLoop:
    """One setting's pretraining loop, built and warmed up, then stepped a few batches at a time."""

    def __init__(self, cfg: PretrainConfig, train_blocks: torch.Tensor, tokenizer, threads: int | None):
        self.cfg, self.blocks, self.threads = cfg, train_blocks, threads
        torch.manual_seed(cfg.seed)
        self.model, self.optimizer, self.head = new_run(cfg, tokenizer, train_blocks)
        self.model.train()
        self.step, self.loss = 0, math.nan
        start = time.perf_counter()
        self.run(1)  # AdamW's moments, compilation: not timed
        self.warmup_s = time.perf_counter() - start

    def turn(self, steps: int) -> float:
        """Seconds of `steps` steps, after one untimed step, so that a turn does not time the
        switch from the setting before it (its memory, its caches)."""
        self.run(1)
        start = time.perf_counter()
        self.run(steps)
        return time.perf_counter() - start

    def run(self, steps: int) -> None:
        """`steps` optimizer steps on the next batches, with this setting's threads."""
        def go():
            for _ in range(steps):
                batch = self.blocks[batch_rows(self.step, len(self.blocks), self.cfg)]
                self.loss = train_step(self.model, self.optimizer, batch, self.cfg, self.head).item()  # waits
                self.step += 1
        _with_threads(self.threads, go)

    def row(self, turns: list[float], steps: int, peak: float) -> dict:
        """Tokens/s and MFU of the median turn (seconds of `steps` steps), and each turn's tokens/s."""
        tokens, seconds = steps * self.cfg.batch_size * self.cfg.block_size, statistics.median(turns)
        row = {"tokens_per_s": tokens / seconds, "step_s": seconds / steps, "warmup_s": self.warmup_s,
               "turn_tokens_per_s": [tokens / t for t in turns], "loss": self.loss,
               **scored_head(self.model, self.cfg, self.head)}
        return {**row, "mfu": mfu(row["flops_per_token"], row["tokens_per_s"], peak)}


GEMM_N, GEMMS_A_TURN = 2048, 4  # the peak's turn: four 2,048 x 2,048 fp32 matmuls, ~0.3 s


def gemm_turn(n: int = GEMM_N, times: int = GEMMS_A_TURN):
    """(turn, FLOPs of a turn): the machine's fp32 matmul peak as one more setting taking turns.

    MFU divides a setting's FLOP/s by this; measured in the same rounds, both numbers see the
    same stretch of a VM whose speed swings (a peak measured once at the start can be 30% off).
    """
    a, b = torch.randn(n, n), torch.randn(n, n)

    def turn():
        a @ b  # untimed, as the settings' first step
        start = time.perf_counter()
        for _ in range(times):
            a @ b
        return time.perf_counter() - start
    return turn, 2 * n ** 3 * times


def lever_table(ours: PretrainConfig, train_blocks, tokenizer, steps: int,
                only: tuple[str, ...] | None = None, rounds: int = 5) -> tuple[dict, float]:
    """(rows, peak FLOP/s): each setting of lever_settings, `steps` steps a turn, and the matmul
    peak (gemm_turn), taking turns for `rounds` rounds; tokens/s and MFU of each median turn."""
    loops, changed = {}, {}
    for name, (changes, threads) in lever_settings(ours).items():
        if only is not None and name not in only:
            continue
        cfg = dataclasses.replace(ours, **changes)
        if name != "ours" and cfg == ours and threads is ALL_THREADS:
            continue  # the toggle is ours itself (e.g. "AdamW fused" when ours is fused)
        loops[name] = LeverLoop(cfg, train_blocks, tokenizer, threads)
        changed[name] = {"changes": changes, "threads": threads or torch.get_num_threads()}
    peak_turn, peak_flops = gemm_turn()
    turns = {"peak": peak_turn}
    turns.update({name: (lambda loop=loop: loop.turn(steps)) for name, loop in loops.items()})
    times = turn_times(turns, rounds, self_timed=True, shuffle_seed=0)  # a new order each round
    peak = peak_flops / statistics.median(times["peak"])
    rows = {name: {**changed[name], **loop.row(times[name], steps, peak)} for name, loop in loops.items()}
    return rows, peak


def _kept_anyway(name: str) -> str | None:
    """Why ours keeps a lever's setting even where toggling it measures faster (None: no reason).

    Dropouts and the batch change what is learned (the batch: updates per token), not only how
    fast; bf16 autocast is fast only where a CPU has native bf16, and the default must train
    alike on every CPU (the AVX2 EPYC emulates it, 12.7x slower in results/bench-cpu.json).
    """
    if name in ("dropout", "attention dropout") or name.startswith("batch "):
        return "faster, kept for what it trains, not its speed"
    if name == "bf16 autocast":
        return "faster on this CPU, kept fp32 so that a run trains alike on every CPU"
    return None


def rounds_faster(row: dict, ours: dict) -> tuple[int, int] | None:
    """(k, n): in k of n rounds the setting's turn ran more tokens/s than ours' turn of the same
    round (None without turns). A median can lean on a few lucky turns; this counts them."""
    if "turn_tokens_per_s" not in row or "turn_tokens_per_s" not in ours:
        return None
    pairs = list(zip(row["turn_tokens_per_s"], ours["turn_tokens_per_s"]))
    return sum(theirs > mine for theirs, mine in pairs), len(pairs)


def lever_verdicts(rows: dict) -> dict[str, str]:
    """For each toggled lever: kept or dropped, by ours' tokens/s against ours with it toggled.

    A toggle measured faster changes the default only when it was faster in at least SURE of the
    rounds too: on this VM a median alone has said "faster" for foreach AdamW in one run and
    "slower" in the next.
    """
    ours = rows["ours"]["tokens_per_s"]
    verdicts = {}
    for name, row in rows.items():
        if name in ("today", "today in fp32", "ours"):
            continue
        ratio = ours / row["tokens_per_s"]
        wins = rounds_faster(row, rows["ours"])
        if ratio >= 1:
            choice = "ours as is"
        elif ratio >= 1 - TIE:
            choice = "a tie within 3%: ours as is"
        elif wins and wins[0] < SURE * wins[1]:
            choice = "faster by the median but not in most rounds, within the machine's swings: ours as is"
        else:
            choice = _kept_anyway(name) or "FASTER than ours: change the default"
        note = LEVER_NOTES.get("batch" if name.startswith("batch ") else name)
        counted = f", faster in {wins[0]} of {wins[1]} rounds" if wins else ""
        verdicts[name] = (f"{choice}: ours {ours:,.0f} tok/s, with '{name}' toggled "
                          f"{row['tokens_per_s']:,.0f} tok/s ({ratio:.2f}x{counted})"
                          + (f"; {note}" if note else ""))
    return verdicts


# ---------------------------------------------------------------- the bench entry


def pretrain_bench(seconds: float = 180.0, steps: int = 2, ours: PretrainConfig | None = None,
                   recipe: CharRecipe | None = None, only: tuple[str, ...] | None = None,
                   tokenizer=None, short_budget: dict | None = None, rounds: int = 5) -> dict:
    """The `pretrain` section of `python -m bench`: levers, then the race at equal wall time.

    Each setting takes `rounds` turns of `steps` steps. `only` limits the levers to those names
    (None: all); seconds 0 skips the race, which trains nanoGPT's recipe, ours changed by
    `short_budget` (None: SHORT_BUDGET), and ours.
    """
    ours = ours or PretrainConfig()
    tokenizer = tokenizer or gpt2_tokenizer()
    blocks = pretrain_data.pretraining_blocks(tokenizer, ours.block_size, seed=ours.seed)
    rows, peak = lever_table(ours, blocks["train"], tokenizer, steps, only, rounds)
    out = {"workload": {"n_layer": ours.n_layer, "n_embd": ours.n_embd, "block_size": ours.block_size,
                        "steps_a_turn": steps, "rounds": rounds, "threads": torch.get_num_threads(),
                        "settings_take_turns": True,  # the median turn of each counts
                        # other processes' load: on a shared machine every number here is lower
                        "load_average_1min_at_start": os.getloadavg()[0]},
           # MFU's denominator: the matmul peak's median turn among the settings' (gemm_turn)
           "peak_gemm_gflops": peak / 1e9, "peak_gemm": f"{GEMMS_A_TURN} fp32 matmuls of {GEMM_N} x "
                                                        f"{GEMM_N} a turn, taking turns with the settings",
           "levers": rows, "verdicts": lever_verdicts(rows)}
    if "today" in rows:
        out.update(today_tokens_per_s=rows["today"]["tokens_per_s"], today_mfu=rows["today"]["mfu"],
                   ours_tokens_per_s=rows["ours"]["tokens_per_s"], ours_mfu=rows["ours"]["mfu"],
                   speedup=rows["ours"]["tokens_per_s"] / rows["today"]["tokens_per_s"])
    if "today in fp32" in rows:  # the fair baseline on a CPU without native bf16
        out["speedup_vs_today_fp32"] = rows["ours"]["tokens_per_s"] / rows["today in fp32"]["tokens_per_s"]
    if seconds > 0:
        char = train_char(recipe or CharRecipe(), seconds)
        short = SHORT_BUDGET if short_budget is None else short_budget
        pocket = train_pocket(dataclasses.replace(ours, **short), seconds, tokenizer, blocks)
        pocket_ours = train_pocket(ours, seconds, tokenizer, blocks)
        out["race"] = {"seconds": seconds, "char": char, "pocket": pocket, "short_budget": short,
                       "pocket_ours": pocket_ours,
                       "pocket_better": pocket["bits_per_char"] < char["bits_per_char"],
                       "ours_better": pocket_ours["bits_per_char"] < char["bits_per_char"],
                       "held_out": "the pocket corpus's validation split (utils/data/corpus.py)"}
    return out
