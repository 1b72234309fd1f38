"""Top-p (nucleus) filtering that sorts only the head of the distribution.

Hugging Face's TopPLogitsWarper sorts all 50,257 logits of every row at every new token. On a
CPU that sort was the largest single cost of sampling: 31% of a reward-stage run's time (py-spy,
8 steps on the pocket model), more than all the model's forward passes (17%). The tokens it keeps are the most
likely ones: a token stays when the probability of the tokens ranked above it is below top_p.
So the k most likely tokens (`torch.topk`, a partial sort) decide the whole nucleus whenever
they hold at least top_p of the probability; a row where they do not is sorted in full, as
Hugging Face does. The kept set is the same up to float rounding of the running sums (they are
added from the top here, from the bottom there); tests/test_generation.py checks the masks and
the sampled texts against Hugging Face's.

Notebook 03 builds the sort-based version by hand (utils/generate/decoding.py).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, TopPLogitsWarper


class NucleusWarper(LogitsProcessor):
    """TopPLogitsWarper's filter, computed from the k largest logits of each row when they hold
    the nucleus. Pass it to `generate(logits_processor=...)` with the config's top_p at 1.0."""

    def __init__(self, top_p: float, k: int = 1024, filter_value: float = -float("inf"),
                 min_tokens_to_keep: int = 1):
        if not 0.0 < top_p < 1.0:
            raise ValueError(f"top_p must be in (0, 1) to filter anything, got {top_p}")
        if k < min_tokens_to_keep or min_tokens_to_keep < 1:
            raise ValueError(f"need k >= min_tokens_to_keep >= 1, got k={k}, {min_tokens_to_keep}")
        self.top_p, self.k, self.filter_value = top_p, k, filter_value
        self.min_tokens_to_keep = min_tokens_to_keep
        self._full_sort = TopPLogitsWarper(top_p, filter_value, min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        k = min(self.k, scores.shape[-1])
        top, order = torch.topk(scores, k, dim=-1)  # descending
        probs = torch.exp(top - torch.logsumexp(scores, dim=-1, keepdim=True))
        above = probs.cumsum(dim=-1) - probs  # the probability ranked above each token
        keep = above < self.top_p
        keep[..., :self.min_tokens_to_keep] = True
        out = torch.full_like(scores, self.filter_value).scatter(-1, order, top.masked_fill(~keep, self.filter_value))
        short = probs.sum(dim=-1) < self.top_p  # rows whose nucleus reaches past the k largest
        if short.any():
            out[short] = self._full_sort(input_ids[short], scores[short])
        return out
