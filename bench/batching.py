"""Batching strategies for stage 2, compared by the padding they add. Notebook 11.

The seed's way (random batches padded to 512), dynamic padding (random batches padded to
their longest row) and length grouping (rows of similar length share a batch, the Trainer's
`group_by_length`). bench/efficiency.py times them; bench/gpu.py runs them on a GPU.
"""

from __future__ import annotations

import random
from functools import lru_cache

from utils.config import Profile, get_profile
from utils.data.collate import SFTCollator
from utils.data.prepare import prepare_data
from utils.data.tokenize import encode_pairs
from utils.models.tokenizers import load_tokenizer

SEED_MAX_LENGTH = 512  # the seed padded every row to 512 tokens...
SEED_BATCH_SIZE = 2  # ...two rows at a time


def stage2_rows(profile: Profile | str | None = None):
    """(tokenizer, encoded stage-2 training rows) of a profile, cached: treat them as read-only."""
    return _stage2_rows(get_profile(profile))


@lru_cache(maxsize=4)
def _stage2_rows(profile: Profile):
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
