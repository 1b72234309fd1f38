"""Pretraining's corpus head: the used rows exactly, the unused ones by a weighted sample."""

import math

import pytest
import torch
import torch.nn.functional as F

from utils.models.shapes import training_flops_per_token
from utils.train.corpus_head import CorpusHead, corpus_head_loss
from utils.train.pretrain import PretrainConfig, new_pocket_model

SMALL = PretrainConfig(n_layer=1, n_embd=32, n_head=2, block_size=32, batch_size=4, dropout=0.0)  # two passes agree


def test_the_head_indexes_the_used_tokens_first():
    train = torch.tensor([[5, 7, 7, 2], [9, 7, 5, 5]])
    head = CorpusHead.from_blocks(train, vocab_size=12, samples=3)
    assert head.ids.tolist() == [2, 5, 7, 9] and head.index[[2, 5, 7, 9]].tolist() == [0, 1, 2, 3]
    assert head.unused.tolist() == [0, 1, 3, 4, 6, 8, 10, 11] and (head.index[head.unused] == -1).all()
    assert head.rows == 4 + 3
    assert CorpusHead.from_blocks(train, 12, samples=100).samples == 8  # at most every unused row


def _model_and_batch(gpt2_tok):
    torch.manual_seed(0)
    model = new_pocket_model(SMALL, gpt2_tok)
    batch = torch.randint(0, 300, (2, 16))
    return model, batch


def test_with_every_unused_row_drawn_the_loss_is_the_full_softmax(gpt2_tok):
    model, batch = _model_and_batch(gpt2_tok)
    head = CorpusHead.from_blocks(batch, len(gpt2_tok), samples=len(gpt2_tok))
    full = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
    assert corpus_head_loss(model, batch, head).item() == pytest.approx(full.item(), rel=1e-5)


def test_the_weighted_sample_puts_the_unused_rows_back_into_the_loss(gpt2_tok):
    model, batch = _model_and_batch(gpt2_tok)
    head = CorpusHead.from_blocks(batch, len(gpt2_tok), samples=512)
    no_unused = CorpusHead(head.ids, head.index, head.unused, 0)
    with torch.no_grad():
        seen_only = corpus_head_loss(model, batch, no_unused)
        full = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
        torch.manual_seed(1)
        draws = torch.stack([corpus_head_loss(model, batch, head) for _ in range(200)])
    assert seen_only < full  # leaving the unused rows out flatters the loss
    assert draws.mean().item() == pytest.approx(full.item(), abs=0.01)  # the sample puts it back
    assert draws.std().item() > 0  # different draws


def test_only_the_used_and_the_drawn_rows_get_a_gradient(gpt2_tok):
    model, batch = _model_and_batch(gpt2_tok)
    head = CorpusHead.from_blocks(batch, len(gpt2_tok), samples=64)
    corpus_head_loss(model, batch, head).backward()
    touched = model.transformer.wte.weight.grad.abs().sum(1) > 0
    assert touched[head.ids].all()
    assert touched[head.unused].sum() == 64  # the drawn ones, without replacement


def test_flops_count_the_rows_the_loss_scores(gpt2_tok):
    model = new_pocket_model(SMALL, gpt2_tok)
    full = training_flops_per_token(model, 32)
    assert full - training_flops_per_token(model, 32, head_rows=1000) == 6 * (len(gpt2_tok) - 1000) * 32
    assert math.isclose(training_flops_per_token(model, 32, head_rows=len(gpt2_tok)), full)


def test_the_chunked_loss_gives_the_same_value_and_gradients(gpt2_tok):
    model, batch = _model_and_batch(gpt2_tok)
    head = CorpusHead.from_blocks(batch, len(gpt2_tok), samples=64)
    grads = []
    for chunked in (False, True):
        model.zero_grad()
        torch.manual_seed(3)  # the same draw of unused rows
        loss = corpus_head_loss(model, batch, head, chunked=chunked)
        loss.backward()
        grads.append((loss.detach(), model.transformer.wte.weight.grad.clone(),
                      model.transformer.h[0].attn.c_attn.weight.grad.clone()))
    for plain, chunked in zip(*grads):
        torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-6)
    assert grads[0][1].abs().sum() > 0  # a gradient to compare


def test_with_every_row_scored_the_gradients_are_the_models_own(gpt2_tok):
    # one gather feeds the input embedding and the output layer: the tied embedding's gradient
    # must be what the model's own lookup and full softmax give
    model, batch = _model_and_batch(gpt2_tok)
    head = CorpusHead.from_blocks(batch, len(gpt2_tok), samples=len(gpt2_tok))
    grads = []
    for loss in (lambda: model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss,
                 lambda: corpus_head_loss(model, batch, head, chunked=True)):
        model.zero_grad()
        loss().backward()
        grads.append([model.transformer.wte.weight.grad.clone(), model.transformer.wpe.weight.grad.clone()])
    for own, ours in zip(*grads):
        torch.testing.assert_close(ours, own, rtol=1e-4, atol=1e-6)


def test_a_token_outside_the_head_or_an_untied_model_is_refused(gpt2_tok):
    model, batch = _model_and_batch(gpt2_tok)
    head = CorpusHead.from_blocks(batch[:, :8], len(gpt2_tok))
    foreign = batch.clone()
    foreign[0, 0] = int(head.unused[0])
    with pytest.raises(ValueError, match="from_blocks"):
        corpus_head_loss(model, foreign, head)
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        corpus_head_loss(model, batch[:, :8], head)
