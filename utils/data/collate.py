"""Batches: dynamic padding (SFTCollator), packing where attention keeps examples apart. Notebooks 05 and 07.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DataCollatorWithFlattening

from utils.config import IGNORE_INDEX


@dataclass
class SFTCollator:
    """Dynamic padding: pad each batch to its longest row (labels -100 on padding)."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict]) -> dict:
        longest = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for r in rows:
            pad = longest - len(r["input_ids"])
            batch["input_ids"].append(list(r["input_ids"]) + [self.pad_token_id] * pad)
            batch["attention_mask"].append([1] * len(r["input_ids"]) + [0] * pad)
            labels = r.get("labels", r["input_ids"])
            batch["labels"].append(list(labels) + [IGNORE_INDEX] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


def padding_share(batch: dict) -> float:
    """Fraction of a batch's positions that are padding (attention_mask == 0)."""
    mask = batch["attention_mask"]
    return float(1.0 - mask.sum().item() / mask.numel())


# Attention implementations that keep packed examples apart when given position_ids that
# restart at 0 (and no attention_mask, no KV cache): transformers v5 turns the restarts into a
# block-diagonal mask for eager and sdpa, and into cu_seqlens for FlashAttention.
# tests/test_training.py checks eager and sdpa on both tiny architectures.
EXACT_PACKING_ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3")


def packing_is_exact(model) -> bool:
    """True when this model's attention keeps packed examples apart (see EXACT_PACKING_ATTENTION)."""
    return getattr(model.config, "_attn_implementation", None) in EXACT_PACKING_ATTENTION


def packing_collator() -> DataCollatorWithFlattening:
    """Concatenate a batch into one row; position_ids restart at 0 for every example. Notebook 07.

    No attention_mask is returned: transformers v5 reads the example boundaries from the
    position_ids only when the mask is absent (and the model runs without a KV cache, which the
    Trainer switches off). Each example's first label becomes -100, so no example is asked to
    predict the next one's first token.
    """
    return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)


def stage2_collator(model, tokenizer, packing: str = "auto"):
    """Packing where it is exact (packing='auto'/'on'), else dynamic padding with SFTCollator."""
    if packing not in ("auto", "on", "off"):
        raise ValueError(f"packing must be 'auto', 'on' or 'off', got {packing!r}")
    exact = packing_is_exact(model)
    if packing == "on" and not exact:
        impl = model.config._attn_implementation
        raise ValueError(f"packing is not exact with attn_implementation={impl!r}; "
                         f"use one of {EXACT_PACKING_ATTENTION} or --packing off")
    if packing != "off" and exact:
        return packing_collator()
    return SFTCollator(tokenizer.pad_token_id)


def batches(rows, collator, batch_size: int):
    """Yield collated batches of `rows`, in order (for evaluation)."""
    for start in range(0, len(rows), batch_size):
        yield collator(rows[start:start + batch_size])
