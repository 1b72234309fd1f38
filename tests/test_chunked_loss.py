"""utils.train.chunked_loss: the chunked cross-entropy equals the plain one (value and gradients),
and the pipeline's Trainer uses it in both stages (for training and validation), with
checkpointing for a LoRA model only."""

import copy
import warnings

import torch
from transformers.activations import NewGELUActivation

from utils.config import IGNORE_INDEX, get_profile
from utils.data.collate import SFTCollator
from utils.models.loading import build_tiny_model
from utils.models.lora import apply_lora
from utils.train.chunked_loss import (
    linear_cross_entropy,
    lm_loss,
    supports_chunked_loss,
)
from utils.train.savers import LeanLoRA, fuse_gelu, is_lora, unfuse_gelu
from utils.train.trainer import build_trainer


def test_linear_cross_entropy_matches_plain_value_and_gradients():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 37, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (3, 37), generator=g)
    labels[0, :5] = IGNORE_INDEX
    h2, w2 = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    ours = linear_cross_entropy(hidden, weight, labels, chunk=7)  # chunks that do not divide
    plain = torch.nn.functional.cross_entropy((h2 @ w2.T).view(-1, 50), labels.view(-1),
                                              ignore_index=IGNORE_INDEX, reduction="sum")
    (2.5 * ours).backward()
    (2.5 * plain).backward()
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hidden.grad, h2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weight.grad, w2.grad, rtol=1e-5, atol=1e-5)
    assert hidden.grad[0, :5].abs().max() == 0  # ignored positions get no gradient



def test_the_tail_offset_is_added_to_the_last_rows_logits():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(19, 8, generator=g, requires_grad=True)
    weight = torch.randn(30, 8, generator=g, requires_grad=True)
    labels = torch.randint(0, 30, (19,), generator=g)
    h2, w2 = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    ours = linear_cross_entropy(hidden, weight, labels, chunk=4, tail=(6, 1.5))
    logits = h2 @ w2.T
    plain = torch.nn.functional.cross_entropy(torch.cat([logits[:, :24], logits[:, 24:] + 1.5], 1),
                                              labels, reduction="sum")
    ours.backward()
    plain.backward()
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weight.grad, w2.grad, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, linear_cross_entropy(hidden, weight, labels, chunk=4))  # it moved the loss

def tiny_lora(gpt2_tok):
    profile = get_profile("tiny")
    torch.manual_seed(0)
    model = apply_lora(build_tiny_model(profile, gpt2_tok, seed=0), profile)
    model.train()
    return profile, model


def test_lm_loss_equals_the_models_loss_and_adapter_gradients(gpt2_tok):
    _, model = tiny_lora(gpt2_tok)
    model.eval()  # no dropout: the two forwards must see the same network
    assert is_lora(model) and supports_chunked_loss(model)
    rows = [{"input_ids": list(range(5, 30))}, {"input_ids": list(range(40, 52))}]
    batch = SFTCollator(gpt2_tok.pad_token_id)(rows)
    twin = copy.deepcopy(model)
    ours, plain = lm_loss(model, batch, chunk=8), twin(**batch).loss
    ours.backward()
    plain.backward()
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5)
    grads = [(n, p.grad) for n, p in model.named_parameters() if p.requires_grad]
    twin_grads = dict((n, p.grad) for n, p in twin.named_parameters() if p.requires_grad)
    assert grads and all(g is not None for _, g in grads)
    for name, grad in grads:
        torch.testing.assert_close(grad, twin_grads[name], rtol=1e-4, atol=1e-6)


def test_stage1_trainer_uses_chunked_loss_and_checkpointing_then_undoes_it(gpt2_tok, tmp_path, capsys):
    profile, model = tiny_lora(gpt2_tok)
    rows = [{"input_ids": list(range(i, i + 32))} for i in range(8)]
    trainer = build_trainer(model, profile.stage1, tmp_path, rows, rows[:2],
                            SFTCollator(gpt2_tok.pad_token_id), gpt2_tok, max_steps=2,
                            eval_strategy="no", save_strategy="no")
    assert trainer.loss_fn is lm_loss
    calls = []
    trainer.loss_fn = lambda *a: calls.append(1) or lm_loss(*a)  # count that the Trainer uses it
    base = model.get_base_model()
    assert base.is_gradient_checkpointing
    # every second block is checkpointed (the tiny model has two), and the GELU is the fused one
    assert [block.gradient_checkpointing for block in base.transformer.h] == [True, False]
    assert all(type(block.mlp.act) is torch.nn.GELU for block in base.transformer.h)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    notices = capsys.readouterr().err + " ".join(str(w.message) for w in caught)
    assert "use_cache=True" not in notices and len(calls) == 2
    assert not model.get_base_model().is_gradient_checkpointing  # the merged model must not keep it
    assert all(type(block.mlp.act) is NewGELUActivation for block in base.transformer.h)
    # the adapters trained through the checkpointed blocks (lora_B starts at zero)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_B" in n)


def test_stage2_scores_only_label_positions_with_the_models_loss_and_gradients(gpt2_tok, tmp_path):
    """Full fine-tuning (tied input and output embedding) through lm_loss: the same loss and
    gradients as the model's own, and the Trainer's validation gives the model's mean too."""
    profile = get_profile("tiny")
    model = build_tiny_model(profile, gpt2_tok, seed=0)
    rows = [{"input_ids": list(range(5, 30)), "labels": [IGNORE_INDEX] * 10 + list(range(15, 30))},
            {"input_ids": list(range(40, 52)), "labels": [IGNORE_INDEX] * 4 + list(range(44, 52))}]
    trainer = build_trainer(model, profile.stage2, tmp_path, rows, rows,
                            SFTCollator(gpt2_tok.pad_token_id), gpt2_tok)
    assert trainer.loss_fn is lm_loss and not model.is_gradient_checkpointing
    batch = SFTCollator(gpt2_tok.pad_token_id)(rows)
    model.eval()  # no dropout: the two forwards must see the same network
    twin = copy.deepcopy(model)
    ours, plain = lm_loss(model, batch), twin(**batch).loss
    ours.backward()
    plain.backward()
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)
    tied = model.get_output_embeddings().weight
    assert tied is model.get_input_embeddings().weight  # one matrix, two gradient paths summed
    torch.testing.assert_close(tied.grad, twin.get_input_embeddings().weight.grad, rtol=1e-4, atol=1e-7)
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():  # validation keeps no gradient state
        assert lm_loss(model, batch).grad_fn is None
    metrics = trainer.evaluate()
    assert abs(metrics["eval_loss"] - plain.item()) < 1e-5


def test_fused_gelu_computes_gpt2s_gelu_and_is_put_back(gpt2_tok):
    x = torch.linspace(-6, 6, 1001, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    fused, plain = torch.nn.GELU(approximate="tanh")(x), NewGELUActivation()(x2)
    fused.sum().backward()
    plain.sum().backward()
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)  # float rounding in the tails
    _, model = tiny_lora(gpt2_tok)
    model.eval()
    batch = SFTCollator(gpt2_tok.pad_token_id)([{"input_ids": list(range(5, 40))}])
    with torch.no_grad():
        before = model(**batch).loss
        swaps = fuse_gelu(model)
        assert len(swaps) == 2  # one per block of the tiny model
        fused_loss = model(**batch).loss
        unfuse_gelu(swaps)
    torch.testing.assert_close(fused_loss, before, rtol=1e-6, atol=1e-6)
    assert all(type(child) is NewGELUActivation for _, _, child in swaps)
    assert model.get_base_model().transformer.h[0].mlp.act is swaps[0][2]


def test_lean_lora_without_checkpointing_only_fuses_the_gelu(gpt2_tok):
    _, model = tiny_lora(gpt2_tok)
    lean = LeanLoRA(model, checkpointing=False)
    assert not model.get_base_model().is_gradient_checkpointing
    assert type(model.get_base_model().transformer.h[1].mlp.act) is torch.nn.GELU
    lean.on_train_end()
    assert type(model.get_base_model().transformer.h[1].mlp.act) is NewGELUActivation
