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


class _ScoredRows(torch.autograd.Function):
    """weight[rows] for distinct rows; the backward writes the rows' gradient into a zero
    gradient of the whole weight (index_copy_, no accumulation: the rows are distinct)."""

    @staticmethod
    def forward(ctx, weight, rows):
        ctx.save_for_backward(rows)
        ctx.shape = weight.shape
        return weight.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad):
        (rows,) = ctx.saved_tensors
        return grad.new_zeros(ctx.shape).index_copy_(0, rows, grad), None


def corpus_head_loss(model, batch: torch.Tensor, head: CorpusHead,
                     chunked: bool = False) -> torch.Tensor:
    """Next-token loss of packed blocks, a sampled estimate of the full softmax's.

    The scored rows of the tied embedding are gathered once (used, then drawn), and both ends of
    the model read them: the input embeds each token from its used row (every token of the
    training blocks is one), and the output layer scores them all. So a step builds one
    gradient of the 50,257 x 128 embedding, not two summed (the output's gather and the input
    lookup each filled a zero one). The drawn rows' weight is added to their slice of the
    logits. chunked: the loss and its gradients computed 256 positions at a time in the
    forward (utils/train/chunked_loss.py): the same values, and a chunk's logits stay in the
    CPU's cache (`bench --only pretrain`: "chunked loss"). The draw uses torch's global
    generator, so a resumed run (which restores it) draws the same rows.
    """
    embedding = model.get_input_embeddings().weight
    if embedding is not model.get_output_embeddings().weight:
        raise ValueError("the corpus head reads the input and output rows from one tied embedding; "
                         "this model's are separate (tie_word_embeddings=False)")
    positions = head.index[batch]
    if bool((positions < 0).any()):
        raise ValueError("the batch has tokens the corpus head does not score: build the head from "
                         "the blocks it trains on (CorpusHead.from_blocks)")
    drawn = head.unused[:0]
    if head.samples:
        drawn = head.unused[torch.randperm(len(head.unused))[:head.samples]]
    weight = _ScoredRows.apply(embedding, torch.cat([head.ids, drawn]))
    embeds = F.embedding(positions, weight)  # the used rows come first, so index points into them
    hidden = model.transformer(inputs_embeds=embeds, attention_mask=torch.ones_like(batch)).last_hidden_state
    hidden = hidden[:, :-1].reshape(-1, hidden.size(-1))  # position t predicts token t + 1
    # the log of how many unused rows each drawn one stands for
    tail = (head.samples, math.log(len(head.unused) / head.samples)) if head.samples else None
    targets = positions[:, 1:].reshape(-1)
    if chunked:
        return linear_cross_entropy(hidden, weight, targets, tail=tail) / targets.numel()
    logits = (hidden @ weight.T).float()
    if tail:
        logits[:, -tail[0]:] += tail[1]
    return F.cross_entropy(logits, targets)
