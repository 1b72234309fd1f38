"""The race in `python -m bench --only pretrain`: nanoGPT's CPU recipe against the pocket loop.

nanoGPT's "baby GPT" CPU recipe (character level, 4 layers, 4 heads, 128 wide, block 64,
batch 12, dropout 0, AdamW lr 1e-3), written here, trains for a budget of wall time; the pocket
loop (utils.train.pretrain's train_step) trains for the same budget with its recipe for a short
budget (SHORT_BUDGET) and with ours (the checkpoint's); all are scored in bits per character on
the same held-out text, the pocket corpus's validation split. bench/pretrain.py runs it after
the levers.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from utils.data import corpus as pretrain_data
from utils.evaluate.metrics import block_loss
from utils.models.shapes import training_flops_per_token
from utils.train.pretrain import PretrainConfig, batch_rows, new_run, train_step


def scored_head(model, cfg: PretrainConfig, head) -> dict:
    """The output rows a step scores, and the training FLOPs per token that counts them."""
    rows = head.rows if head else model.config.vocab_size
    return {"head_rows": rows, "flops_per_token": training_flops_per_token(model, cfg.block_size, rows)}


@dataclasses.dataclass(frozen=True)
class CharRecipe:
    """nanoGPT's "baby GPT" on a CPU (its README; config/train_shakespeare_char.py + flags)."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    batch_size: int = 12
    dropout: float = 0.0
    learning_rate: float = 1e-3
    min_lr: float = 1e-4  # train_shakespeare_char.py: learning_rate / 10
    beta2: float = 0.99  # above the usual 0.95: few tokens a step make the gradient noisy
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    reference_val_loss: float = 1.88  # nats/char after 2,000 iterations, ~3 min on a laptop


# The pocket recipe for a budget of minutes, as nanoGPT's CPU recipe is its recipe for 3 minutes
# (its GPU recipe for Shakespeare is 6 x 384 at dropout 0.2). Three minutes show the model the
# corpus two to four times (the loop's speed decides), so dropout and a heavy weight decay only
# slow the start (they pay off when the data repeats ~14 times); the shallow shape learns
# fastest (the 150-s shape sweep ranks 4 x 128 first); and updates, not tokens, are what is
# short, so the batch is halved. Three 180-s trials on 2026-12-06 (Xeon, README, before the
# chunked loss): batch 8 2.18 bits/char, batch 4 2.12, batch 8 at lr 4e-3 2.33. Ours races
# beside it, so both are on the record.
SHORT_BUDGET = {"n_layer": 4, "dropout": 0.0, "attn_dropout": 0.0, "weight_decay": 0.1, "batch_size": 4}

WARMUP_FRACTION = 0.05  # nanoGPT: 100 warm-up iterations of 2,000; here 5% of the wall time


def time_schedule(fraction: float, peak: float, floor: float) -> float:
    """Learning rate at a fraction of the wall-time budget: linear warm-up, then cosine to floor.

    Both recipes get the same budget in seconds, not in steps, so their schedules run on time.
    """
    if fraction < WARMUP_FRACTION:
        return peak * max(fraction, 1e-3) / WARMUP_FRACTION
    progress = min(1.0, (fraction - WARMUP_FRACTION) / (1 - WARMUP_FRACTION))
    return floor + 0.5 * (1 + math.cos(math.pi * progress)) * (peak - floor)


def char_texts() -> tuple[str, str]:
    """(train, validation) text of the pocket corpus's split, each piece ending in a blank line.

    The BPE stream ends each piece with EOS; the characters end it with "\\n\\n": the same
    pieces, the same end marks, so both models are scored on the same held-out characters.
    """
    train, validation = pretrain_data.split_documents(pretrain_data.corpus_documents())
    return tuple("".join(d.text + "\n\n" for d in docs) for docs in (train, validation))


def char_model(recipe: CharRecipe, vocab_size: int) -> GPT2LMHeadModel:
    """The baby GPT as a GPT2LMHeadModel (nanoGPT's GPT is GPT-2's block; it drops biases)."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab_size, n_positions=recipe.block_size, n_embd=recipe.n_embd,
                        n_layer=recipe.n_layer, n_head=recipe.n_head, resid_pdrop=recipe.dropout,
                        embd_pdrop=recipe.dropout, attn_pdrop=recipe.dropout,
                        bos_token_id=None, eos_token_id=None)  # characters: no special tokens
    return GPT2LMHeadModel(config)


def char_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean nats per character of predicting y (x shifted by one) from x, as nanoGPT computes it."""
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


@torch.no_grad()
def char_val_loss(model, data: torch.Tensor, block: int, batch: int = 64) -> float:
    """Mean nats per character over the whole held-out text, in non-overlapping windows of `block`."""
    n = (len(data) - 1) // block
    x, y = data[:n * block].view(n, block), data[1:n * block + 1].view(n, block)
    model.eval()
    total = sum(char_loss(model, x[i:i + batch], y[i:i + batch]).item() * len(x[i:i + batch])
                for i in range(0, n, batch))
    model.train()
    return total / n


def train_char(recipe: CharRecipe, seconds: float) -> dict:
    """nanoGPT's recipe for `seconds` of wall time; its held-out loss in nats and bits per char."""
    train_text, val_text = char_texts()
    chars = sorted(set(train_text + val_text))  # nanoGPT's vocabulary: every character of the file
    index = {c: i for i, c in enumerate(chars)}
    train, val = (torch.tensor([index[c] for c in t]) for t in (train_text, val_text))
    model = char_model(recipe, len(chars)).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": [p for p in model.parameters() if p.dim() < 2],
                                    "weight_decay": 0.0}], lr=recipe.learning_rate,
                                  betas=(0.9, recipe.beta2))
    generator = torch.Generator().manual_seed(0)
    iterations, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for group in optimizer.param_groups:
            group["lr"] = time_schedule(elapsed / seconds, recipe.learning_rate, recipe.min_lr)
        offsets = torch.randint(len(train) - recipe.block_size - 1, (recipe.batch_size,), generator=generator)
        x = torch.stack([train[i:i + recipe.block_size] for i in offsets])
        y = torch.stack([train[i + 1:i + 1 + recipe.block_size] for i in offsets])
        char_loss(model, x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        iterations += 1
    nats = char_val_loss(model, val, recipe.block_size)
    return {"val_nats_per_char": nats, "bits_per_char": nats / math.log(2), "iterations": iterations,
            "chars_seen": iterations * recipe.batch_size * recipe.block_size, "vocab": len(chars),
            "parameters": sum(p.numel() for p in model.parameters()), "held_out_chars": len(val),
            "recipe": dataclasses.asdict(recipe)}


def train_pocket(cfg: PretrainConfig, seconds: float, tokenizer, blocks: dict) -> dict:
    """The pocket recipe (PretrainConfig's loop) for `seconds`; held-out nats/token and bits/char."""
    torch.manual_seed(cfg.seed)
    model, optimizer, head = new_run(cfg, tokenizer, blocks["train"])
    model.train()
    step, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for group in optimizer.param_groups:
            group["lr"] = time_schedule(elapsed / seconds, cfg.learning_rate, cfg.learning_rate * cfg.min_lr_ratio)
        train_step(model, optimizer, blocks["train"][batch_rows(step, len(blocks["train"]), cfg)], cfg, head)
        step += 1
    nats = block_loss(model, blocks["validation"])  # the full 50,257-way loss either way
    per_char = tokens_per_char(tokenizer)
    return {"val_nats_per_token": nats, "tokens_per_char": per_char,
            "bits_per_char": nats * per_char / math.log(2), "steps": step,
            "tokens_seen": step * cfg.batch_size * cfg.block_size,
            "parameters": sum(p.numel() for p in model.parameters()), **scored_head(model, cfg, head),
            "config": dataclasses.asdict(cfg)}


def tokens_per_char(tokenizer) -> float:
    """GPT-2 BPE tokens per character of the held-out text (EOS for each piece's blank line)."""
    _, validation = pretrain_data.split_documents(pretrain_data.corpus_documents())
    tokens = len(pretrain_data.token_stream(validation, tokenizer))
    return tokens / len(char_texts()[1])
