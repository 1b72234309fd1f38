"""The corpus head: pretraining scores the tokens the corpus uses, and a sample of the rest.

The pocket model keeps the real GPT-2 tokenizer, so its tied embedding has 50,257 rows, but
the training split uses only about 11,900 of them. With the full head most of a step's FLOPs
(the 50,257-way output matmul, forward and backward) score tokens that never occur. Their rows
still need one lesson, "not me", or the saved model would give them real probability: the full
softmax teaches it by pushing every one of them down at every step.

The corpus head keeps that lesson for a fraction of the cost (a sampled softmax): each step
scores all the used rows exactly, plus `samples` of the unused rows drawn at random without
replacement. The drawn rows' exponentials are weighted by unused / samples, so their sum is an
unbiased estimate of all unused rows' sum, and each unused row gets about the full softmax's
push on average. The saved model is a plain GPT2LMHeadModel; its validation loss is the ordinary
full 50,257-way one. `python -m bench --only pretrain` measures it against the full head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.train.chunked_loss import linear_cross_entropy

SAMPLES = 1024  # unused rows scored a step: ~9% more head FLOPs than the used rows alone


@dataclass(frozen=True)
class CorpusHead:
    """The output rows pretraining scores: the training split's tokens, and a sample of the rest."""

    ids: torch.Tensor  # [V'] the used token ids, sorted
    index: torch.Tensor  # [V] each token id's row in ids, -1 where unused
    unused: torch.Tensor  # the unused token ids
    samples: int  # unused rows drawn each step

    @classmethod
    def from_blocks(cls, train: torch.Tensor, vocab_size: int, samples: int = SAMPLES) -> CorpusHead:
        ids = torch.unique(train)
        index = torch.full((vocab_size,), -1, dtype=torch.long)
        index[ids] = torch.arange(len(ids))
        unused = (index < 0).nonzero()[:, 0]
        return cls(ids, index, unused, min(samples, len(unused)))

    @property
    def rows(self) -> int:
        """Output rows a step scores: the FLOPs that `training_flops_per_token` counts."""
        return len(self.ids) + self.samples


def corpus_head_loss(model, batch: torch.Tensor, head: CorpusHead,
                     chunked: bool = False) -> torch.Tensor:
    """Next-token loss of packed blocks, a sampled estimate of the full softmax's.

    The scored rows are gathered first (used, then drawn) and the drawn ones' weight is added to
    their slice of the logits: one matmul, no copy of the logits. chunked: the loss and its
    gradients computed 256 positions at a time in the forward (utils/train/chunked_loss.py): the
    same values, and a chunk's logits stay in the CPU's cache (`bench --only pretrain`: "chunked
    loss"). The draw uses torch's global generator, so a resumed run (which restores it) draws
    the same rows.
    """
    hidden = model.transformer(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
    hidden = hidden[:, :-1].reshape(-1, hidden.size(-1))  # position t predicts token t + 1
    drawn = head.unused[:0]
    if head.samples:
        drawn = head.unused[torch.randperm(len(head.unused))[:head.samples]]
    weight = model.get_output_embeddings().weight[torch.cat([head.ids, drawn])]
    # the log of how many unused rows each drawn one stands for
    tail = (head.samples, math.log(len(head.unused) / head.samples)) if head.samples else None
    targets = head.index[batch[:, 1:]].reshape(-1)  # used rows come first, so ids index them
    if chunked:
        return linear_cross_entropy(hidden, weight, targets, tail=tail) / targets.numel()
    logits = (hidden @ weight.T).float()
    if tail:
        logits[:, -tail[0]:] += tail[1]
    return F.cross_entropy(logits, targets)
