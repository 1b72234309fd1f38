"""What `python -m utils.train.pretrain` may do before its first step: its arguments and its --out.

Every argument is checked before the corpus is tokenized, each failure one line naming the flag
(tests/README.md, the bad-input catalogue). The output folder follows the pipeline runs' rule:
a new run writes into a folder that is absent or empty; `--overwrite` replaces only a folder
this script made (nothing in it but its own files), never a user's README.md or checkpoint/;
`--resume` needs that folder's checkpoint/ and the settings it was started with. The committed
checkpoint, models/pocket-gpt2, is never the default: a run without --out writes
runs/pretrain/<date>-<time>/, and only `--rebuild-pocket` replaces the committed one.
Used by utils/train/pretrain.py (notebook 04b tells its story).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path

from utils.config import POCKET_DIR, runs_dir

# What pretrain() writes into its --out: save_pretrained's files, the history, the card and the
# resumable checkpoint. A folder holding anything else was not made by it.
OWN_NAMES = {"config.json", "generation_config.json", "model.safetensors", "history.json",
             "README.md", "checkpoint"}
CHECKPOINT = "checkpoint"
# The GPT-2 tokenizer's model_max_length: a longer context has no position the real GPT-2 has,
# and 50,257 x block_size logits per row grow past what a CPU step can hold.
MAX_BLOCK_SIZE = 1024


class PretrainGuardError(ValueError):
    """An argument or output folder pretraining refuses; the message names the flag and the fix."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ---------------------------------------------------------------- the arguments


# name -> (smallest allowed value, whether the bound itself is allowed)
LOWER_BOUNDS = {"n_layer": (1, True), "n_embd": (1, True), "n_head": (1, True),
                "block_size": (2, True), "batch_size": (1, True), "max_tokens": (1, True),
                "learning_rate": (0.0, False), "min_lr_ratio": (0.0, True),
                "warmup_steps": (0, True), "weight_decay": (0.0, True), "grad_clip": (0.0, False),
                "eval_every": (1, True), "seed": (0, True)}


# shares of activations a dropout zeroes: 1 would zero them all
PROBABILITIES = ("dropout", "attn_dropout")

# settings with a fixed set of values
CHOICES = {"head": ("corpus", "full"), "adamw": ("fused", "foreach", "for-loop")}


def check_config(cfg) -> None:
    """PretrainGuardError for the first setting no run can train with (NaN, 0, <0, shapes)."""
    for name, (low, inclusive) in LOWER_BOUNDS.items():
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PretrainGuardError(f"{_flag(name)} must be a finite number, got {value!r}")
        if value < low or (value == low and not inclusive):
            bound = f"at least {low}" if inclusive else f"above {low:g}"
            raise PretrainGuardError(f"{_flag(name)} must be {bound}, got {value!r}")
    for name in PROBABILITIES:
        if not 0 <= getattr(cfg, name) < 1:
            raise PretrainGuardError(f"{_flag(name)} is the share of activations dropped, so at "
                                     f"least 0 and below 1, got {getattr(cfg, name)!r}")
    if cfg.min_lr_ratio > 1:
        raise PretrainGuardError(f"--min-lr-ratio is the floor of the cosine as a share of the "
                                 f"peak, so at most 1, got {cfg.min_lr_ratio!r}")
    if cfg.n_embd % cfg.n_head:
        raise PretrainGuardError(f"--n-head {cfg.n_head} does not divide --n-embd {cfg.n_embd}: "
                                 "each head gets n_embd / n_head dimensions; choose a divisor, "
                                 f"e.g. --n-head {_divisor_near(cfg.n_embd, cfg.n_head)}")
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise PretrainGuardError(f"{_flag(name)} must be one of {', '.join(allowed)}, "
                                     f"got {getattr(cfg, name)!r}")
    if cfg.block_size > MAX_BLOCK_SIZE:
        raise PretrainGuardError(f"--block-size {cfg.block_size} is over the GPT-2 tokenizer's "
                                 f"context of {MAX_BLOCK_SIZE} tokens; choose at most "
                                 f"{MAX_BLOCK_SIZE} (the committed model uses 256)")


def _divisor_near(width: int, heads: int) -> int:
    return min((d for d in range(1, width + 1) if width % d == 0), key=lambda d: abs(d - heads))


# ---------------------------------------------------------------- the output folder


def default_out() -> Path:
    """A new folder for a run given no --out: runs/pretrain/<date>-<time> (never the committed one).

    One level below runs/, so the runs table (runs/*/config.json) does not take it for a run."""
    return runs_dir() / "pretrain" / time.strftime("%Y%m%d-%H%M%S")


def is_committed_pocket(out: Path) -> bool:
    return Path(out).resolve() == POCKET_DIR.resolve()


def foreign_names(out: Path) -> list[str]:
    """The entries of `out` that pretraining did not write (sorted)."""
    return sorted(p.name for p in Path(out).iterdir() if p.name not in OWN_NAMES)


def saved_config(out: Path) -> dict | None:
    """The settings the unfinished run in out/checkpoint started with (None: not recorded)."""
    try:
        state = json.loads((Path(out) / CHECKPOINT / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state.get("config") if isinstance(state, dict) else None


def check_out(out: Path, cfg, resume: bool = False, overwrite: bool = False,
              rebuild_pocket: bool = False) -> None:
    """Refuse an --out that would lose work: a file, someone else's folder, a finished model
    without --overwrite, the committed checkpoint without --rebuild-pocket, a bad --resume."""
    out = Path(out)
    if is_committed_pocket(out) and not rebuild_pocket:
        raise PretrainGuardError(
            f"--out {out} is the committed pocket checkpoint that the tiny profile starts from; "
            "pass --rebuild-pocket to replace it on purpose, or choose another --out")
    if out.exists() and not out.is_dir():
        raise PretrainGuardError(f"--out {out} is a file, not a folder; choose a folder")
    _check_writable(out)
    if not out.is_dir() or not any(out.iterdir()):
        if resume:
            raise PretrainGuardError(f"--resume: {out} holds no checkpoint to continue; drop "
                                     "--resume to start a new run there")
        return
    foreign = foreign_names(out)
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise PretrainGuardError(
            f"--out {out} holds files pretraining did not write ({listed}), so it will not write "
            "there, with or without --overwrite; choose an empty or new --out")
    checkpoint = (out / CHECKPOINT / "state.json").is_file()
    if resume:
        _check_resume(out, cfg, checkpoint)
    elif checkpoint and not overwrite:
        raise FileExistsError(f"{out / CHECKPOINT} holds an unfinished run: pass --resume to "
                              "continue it, or --overwrite to start over")
    elif not checkpoint and not overwrite:
        raise PretrainGuardError(f"--out {out} holds a finished pocket model; pass --overwrite "
                                 "to replace it, or choose another --out")


def _check_writable(out: Path) -> None:
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PretrainGuardError(f"--out {out}: {existing} is a file, not a folder; choose a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PretrainGuardError(f"--out {out} cannot be written ({existing} is read-only for "
                                 "you); choose a folder you can write")


def _check_resume(out: Path, cfg, checkpoint: bool) -> None:
    if not checkpoint:
        raise PretrainGuardError(f"--resume: {out} holds a finished model and no checkpoint/ to "
                                 "continue; drop --resume (with --overwrite to train it again)")
    saved, ours = saved_config(out), dataclasses.asdict(cfg)
    if saved is None:
        raise PretrainGuardError(f"--resume: {out / CHECKPOINT}/state.json does not record the "
                                 "settings it started with, so a resume could mix two runs; "
                                 "start over with --overwrite")
    changed = {k: (saved.get(k), v) for k, v in ours.items() if saved.get(k) != v}
    if changed:
        listed = ", ".join(f"{_flag(k)} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise PretrainGuardError(f"--resume with settings that differ from the checkpoint's "
                                 f"({listed}); resume with the same flags, or start over with "
                                 "--overwrite")


def prepare_out(out: Path | None, cfg, resume: bool = False, overwrite: bool = False,
                rebuild_pocket: bool = False) -> Path:
    """Check the settings and the folder; the folder to write (default_out() when None).

    A fresh start with --overwrite drops the old checkpoint/ only: the finished files are
    replaced when the new ones are saved, so a crash before then still leaves a whole model.
    """
    check_config(cfg)
    out = Path(out) if out is not None else (POCKET_DIR if rebuild_pocket else default_out())
    check_out(out, cfg, resume, overwrite, rebuild_pocket)
    if overwrite and not resume:
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    return out
