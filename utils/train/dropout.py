"""Dropout with masks from 15 random bits: the pocket loop's residual dropout at half the cost.

PyTorch's CPU dropout draws each mask element with `bernoulli_`: a double from the Mersenne
Twister per element, on one thread. A pocket step draws 17 masks of 8 x 256 x 128 (the
embedding's and two per block); the bench's "dropout masks" lever measures what they cost.

Here one 32-bit draw makes two mask elements. torch's int32 `random_` gives 31 uniform bits;
read as two 16-bit halves with their top bit cleared, each half is a uniform 15-bit number,
and an element is dropped when its number is below round(p x 32,768). The drop probability
is that count over 32,768: 3,277 / 32,768 = 0.100006 for p = 0.1, within 1.6e-5 of p for
any p. Kept values are scaled by one over the kept fraction, so the output's expectation is
the input, as with PyTorch's dropout. The draws come from torch's global generator, so
`torch.manual_seed` repeats a run and a resumed run (which restores the generator's state)
continues its masks. `python -m bench --only pretrain` measures it ("dropout masks").
"""

from __future__ import annotations

import torch

from utils.train.savers import swap_modules

LEVELS = 1 << 15  # the values a 15-bit number takes


def drop_count(p: float) -> int:
    """How many of the LEVELS values drop an element: the drop probability is this / LEVELS."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability {p} is outside [0, 1)")
    return round(p * LEVELS)


def scaled_keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """A mask of `shape`: 0 where an element drops, 1 / (kept fraction) where it stays."""
    n, drop = shape.numel(), drop_count(p)
    bits = torch.empty((n + 1) // 2, dtype=torch.int32).random_()  # 31 uniform bits each
    numbers = bits.view(torch.int16)[:n].bitwise_and_(LEVELS - 1)  # two 15-bit numbers each
    return (numbers.view(shape) >= drop).to(dtype).mul_(LEVELS / (LEVELS - drop))


class _MaskDropout(torch.autograd.Function):
    """x times a scaled keep mask; the backward multiplies the gradient by the same mask."""

    @staticmethod
    def forward(ctx, x, p):
        mask = scaled_keep_mask(x.shape, p, x.dtype)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class BitsDropout(torch.nn.Module):
    """A drop-in for `torch.nn.Dropout` (training mode drops, eval mode passes through)."""

    def __init__(self, p: float):
        super().__init__()
        drop_count(p)  # a bad p fails here, not at the first step
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return _MaskDropout.apply(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def swap_dropout(model) -> list:
    """Swap the model's `torch.nn.Dropout` modules with p > 0 for BitsDropout; returns
    (parent, name, module) of each swap. Dropout modules hold no weights: the saved model and
    its config are unchanged."""
    return swap_modules(model, lambda m: type(m) is torch.nn.Dropout and m.p > 0, lambda m: BitsDropout(m.p))
