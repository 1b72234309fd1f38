"""The corpus head: pretraining scores the tokens the corpus uses, not all 50,257.

The pocket model keeps the real GPT-2 tokenizer, so its tied embedding has 50,257 rows, but
the training split uses about 11,900 of them. With the full head most of a step's FLOPs (the
50,257-way output matmul, forward and backward) score tokens that never occur, whose rows only
learn "not me". The corpus head computes the loss over the used rows alone: about 3x the
tokens per second (`python -m bench --only pretrain`, the "full head" lever). The unused rows
are never an input nor a target, so training leaves them alone (weight decay aside).

The saved model is a plain GPT2LMHeadModel with the full head, and its validation loss is the
full 50,257-way one. `place_unseen_rows` gives the unused rows what the full softmax would have
taught them: they all move together against the mean direction of the final hidden states, by
one scalar fitted by likelihood, with the Good-Turing estimate of meeting a token type not
seen before (the share of training tokens whose type occurs once) as the rate at which such
tokens come. Each row keeps its own initial vector, so as inputs they stay distinct.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.models.loading import eval_mode


@dataclass(frozen=True)
class CorpusHead:
    """The output rows pretraining trains: the token ids of the training split."""

    ids: torch.Tensor  # [V'] the used token ids, sorted
    index: torch.Tensor  # [V] each token id's row in ids, -1 where unused
    novel_rate: float  # Good-Turing: the share of training tokens whose type occurs once

    @classmethod
    def from_blocks(cls, train: torch.Tensor, vocab_size: int) -> CorpusHead:
        ids, counts = torch.unique(train, return_counts=True)
        index = torch.full((vocab_size,), -1, dtype=torch.long)
        index[ids] = torch.arange(len(ids))
        return cls(ids, index, (counts == 1).sum().item() / train.numel())

    @property
    def rows(self) -> int:
        return len(self.ids)


def corpus_head_loss(model, batch: torch.Tensor, head: CorpusHead) -> torch.Tensor:
    """Next-token loss of packed blocks over the corpus's rows of the tied output layer."""
    hidden = model.transformer(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
    hidden = hidden[:, :-1].reshape(-1, hidden.size(-1))  # position t predicts token t + 1
    logits = hidden @ model.get_output_embeddings().weight[head.ids].T
    return F.cross_entropy(logits.float(), head.index[batch[:, 1:]].reshape(-1))


@torch.no_grad()
def _final_hidden(model, blocks: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """[positions, width] final hidden states of the blocks (each row's last position dropped)."""
    with eval_mode(model):
        parts = [model.transformer(input_ids=rows, attention_mask=torch.ones_like(rows))
                 .last_hidden_state[:, :-1] for rows in blocks.split(batch_size)]
    hidden = torch.cat(parts)
    return hidden.reshape(-1, hidden.size(-1)).float()


def _logsumexp_rows(hidden: torch.Tensor, weight: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """logsumexp over `weight`'s rows of hidden @ weight.T, a slice of positions at a time."""
    return torch.cat([torch.logsumexp(h @ weight.T, dim=-1) for h in hidden.split(chunk)])


@torch.no_grad()
def place_unseen_rows(model, head: CorpusHead, train: torch.Tensor, n_blocks: int = 16) -> dict:
    """Shift the unused rows by -beta x the mean hidden direction u, beta fitted by likelihood.

    The fit's model of the data: at every training position, with probability head.novel_rate
    the next token is one training never saw, any of the unused rows alike; otherwise it is
    the token that is there. beta >= 0 minimises that expected loss. The loss is convex in
    beta, its slope is mean(along x (rate - unused share)), and the unused rows' log-sum-exp is
    theirs without the shift minus beta x along (along = hidden . u), so after one pass of the
    model over `n_blocks` training blocks the fit is a bisection on vectors.
    Returns beta, the unused rows' mean probability share after the shift, and the rate.
    """
    weight = model.get_input_embeddings().weight  # tied: the output layer is this tensor
    unused = head.index < 0
    picks = torch.linspace(0, len(train) - 1, min(n_blocks, len(train))).long()
    hidden = _final_hidden(model, train[picks].to(weight.device))
    direction = hidden.mean(0) / hidden.mean(0).norm()
    weight_f = weight.detach().float()
    gap = _logsumexp_rows(hidden, weight_f[unused]) - _logsumexp_rows(hidden, weight_f[head.ids])
    along = hidden @ direction

    def share(beta: float) -> torch.Tensor:  # the unused rows' probability at each position
        return torch.sigmoid(gap - beta * along)

    def slope(beta: float) -> float:  # d(expected loss)/d(beta); it rises with beta
        return (along * (head.novel_rate - share(beta))).mean().item()

    beta = 0.0
    if slope(0.0) < 0:
        low, high = 0.0, 1.0
        while slope(high) < 0:
            low, high = high, high * 2
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if slope(middle) < 0 else (low, middle)
        beta = (low + high) / 2
    weight[unused] -= (beta * direction).to(weight.dtype)
    return {"beta": beta, "unused_mass": share(beta).mean().item(), "target": head.novel_rate}
