"""Pretraining's corpus head: the loss over the used rows, and the placement of the rest."""

import pytest
import torch
import torch.nn.functional as F

from utils.models.shapes import training_flops_per_token
from utils.train.corpus_head import CorpusHead, corpus_head_loss, place_unseen_rows
from utils.train.pretrain import PretrainConfig, new_pocket_model

SMALL = PretrainConfig(n_layer=1, n_embd=32, n_head=2, block_size=32, batch_size=4)


def test_the_head_indexes_the_used_tokens_and_counts_singletons():
    train = torch.tensor([[5, 7, 7, 2], [9, 7, 5, 5]])
    head = CorpusHead.from_blocks(train, vocab_size=12)
    assert head.ids.tolist() == [2, 5, 7, 9] and head.rows == 4
    assert head.index[[2, 5, 7, 9]].tolist() == [0, 1, 2, 3]
    assert (head.index >= 0).sum() == 4 and head.index[0] == -1
    assert head.novel_rate == pytest.approx(2 / 8)  # types 2 and 9 occur once, of 8 tokens


def test_the_loss_is_the_full_softmax_restricted_to_the_used_rows(gpt2_tok):
    torch.manual_seed(0)
    model = new_pocket_model(SMALL, gpt2_tok)
    batch = torch.randint(0, 300, (2, 16))
    head = CorpusHead.from_blocks(batch, len(gpt2_tok))
    logits = model(input_ids=batch).logits[:, :-1][..., head.ids]
    expected = F.cross_entropy(logits.reshape(-1, head.rows), head.index[batch[:, 1:]].reshape(-1))
    assert corpus_head_loss(model, batch, head).item() == pytest.approx(expected.item(), rel=1e-5)
    corpus_head_loss(model, batch, head).backward()  # only used rows get a gradient
    grad = model.transformer.wte.weight.grad
    unused = head.index < 0
    assert grad[unused].abs().sum() == 0 and grad[head.ids].abs().sum() > 0


def _expected_loss(model, train, head) -> float:
    """The fit's objective, by the model's own full softmax: a share novel_rate of next tokens
    is any unused token alike, the rest the token that is there."""
    with torch.no_grad():
        logp = model(input_ids=train).logits[:, :-1].log_softmax(-1)
    seen = -logp.gather(-1, train[:, 1:, None])[..., 0]
    novel = -logp[..., head.index < 0].mean(-1)
    return ((1 - head.novel_rate) * seen + head.novel_rate * novel).mean().item()


def test_placement_moves_the_unused_rows_together_to_the_likeliest_place(gpt2_tok):
    torch.manual_seed(0)
    model = new_pocket_model(SMALL, gpt2_tok).eval()
    train = torch.randint(0, 2000, (8, 32))
    head = CorpusHead.from_blocks(train, len(gpt2_tok))
    weight = model.transformer.wte.weight
    before = weight.detach().clone()
    placed = place_unseen_rows(model, head, train, n_blocks=8)
    unused = head.index < 0
    assert placed["beta"] > 0  # an untrained model spreads its mass over all 50,257 rows
    assert torch.equal(weight[head.ids], before[head.ids])  # the trained rows are untouched
    shift = weight[unused] - before[unused]
    assert torch.allclose(shift, shift[:1].expand_as(shift), atol=1e-6)  # one vector for all
    with torch.no_grad():
        share = model(input_ids=train).logits[:, :-1].softmax(-1)[..., unused].sum(-1).mean().item()
    assert placed["unused_mass"] == pytest.approx(share, rel=0.02)
    best = _expected_loss(model, train, head)
    step = shift[0] * 0.2  # a fifth of the shift further, then back
    for move in (step, -2 * step):
        with torch.no_grad():
            weight[unused] += move
        assert _expected_loss(model, train, head) > best


def test_flops_count_the_rows_the_loss_scores(gpt2_tok):
    model = new_pocket_model(SMALL, gpt2_tok)
    full = training_flops_per_token(model, 32)
    assert full - training_flops_per_token(model, 32, head_rows=1000) == 6 * (len(gpt2_tok) - 1000) * 32
