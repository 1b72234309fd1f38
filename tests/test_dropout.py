"""Dropout masks from 15-bit draws (utils/train/dropout.py): the rate, the halves, the gradient."""

import dataclasses

import pytest
import torch

from utils.train import pretrain
from utils.train.dropout import LEVELS, BitsDropout, drop_count, scaled_keep_mask, swap_dropout

N = 1 << 21  # elements per statistical check: the rate's standard error is ~2e-4


def _dropped(p: float, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return scaled_keep_mask(torch.Size([N]), p, torch.float32) == 0


@pytest.mark.parametrize("p", [0.1, 0.25])
def test_each_half_of_a_draw_drops_at_the_rate(p):
    dropped, rate = _dropped(p), drop_count(p) / LEVELS
    tolerance = 5 * (rate * (1 - rate) / (N // 2)) ** 0.5
    # the two halves of one 32-bit draw: int32 random_ leaves the top bit 0, so a half that
    # kept it would never drop
    for half in (dropped[0::2], dropped[1::2]):
        assert half.float().mean().item() == pytest.approx(rate, abs=tolerance)
    assert abs(rate - p) < 1 / LEVELS


def test_neighbours_drop_independently():
    dropped = _dropped(0.1).float()
    both = (dropped[:-1] * dropped[1:]).mean().item()  # the halves of a draw, and draw to draw
    rate = dropped.mean().item()
    assert both == pytest.approx(rate * rate, abs=5 * (rate * rate / N) ** 0.5)


def test_kept_values_are_scaled_so_the_expectation_is_the_input():
    torch.manual_seed(0)
    mask = scaled_keep_mask(torch.Size([N]), 0.1, torch.float32)
    drop = drop_count(0.1)
    assert mask.unique().tolist() == [0.0, pytest.approx(LEVELS / (LEVELS - drop))]
    assert mask.mean().item() == pytest.approx(1.0, abs=2e-3)


def test_the_backward_uses_the_forwards_mask_and_a_seed_repeats_it():
    layer = BitsDropout(0.1)
    x = torch.randn(4, 64, 32, requires_grad=True)
    torch.manual_seed(7)
    out = layer(x)
    out.backward(torch.ones_like(out))
    mask = out.detach() / x.detach()
    torch.testing.assert_close(x.grad, mask)  # d(x * mask)/dx
    torch.manual_seed(7)
    torch.testing.assert_close(layer(x).detach(), out.detach())
    layer.eval()
    assert layer(x) is x


def test_a_bad_probability_fails_when_the_module_is_made():
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match="outside"):
            BitsDropout(p)


def test_the_pocket_run_swaps_its_dropouts_and_keeps_the_config(gpt2_tok):
    cfg = pretrain.PretrainConfig(n_layer=2, n_embd=32, n_head=2, block_size=32, batch_size=4)
    train = torch.randint(0, 300, (8, cfg.block_size))
    for bits in (True, False):
        model, _, _ = pretrain.new_run(dataclasses.replace(cfg, bits_dropout=bits), gpt2_tok, train)
        kinds = [type(m) for m in model.modules()]
        # the embedding's, and each block's after attention and after the MLP; the attention's
        # own dropout is 0 and stays a torch Dropout (SDPA gets p = 0)
        assert kinds.count(BitsDropout) == (1 + 2 * cfg.n_layer if bits else 0)
        assert model.config.resid_pdrop == cfg.dropout


def test_swap_dropout_leaves_zero_probability_modules():
    model = torch.nn.Sequential(torch.nn.Dropout(0.0), torch.nn.Linear(2, 2), torch.nn.Dropout(0.2))
    swaps = swap_dropout(model)
    assert [name for _, name, _ in swaps] == ["2"]
    assert type(model[0]) is torch.nn.Dropout and type(model[2]) is BitsDropout and model[2].p == 0.2
