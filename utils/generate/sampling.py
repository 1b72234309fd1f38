"""Plain sampling at a temperature, drawn by inverse CDF instead of `torch.multinomial`.

On a CPU, `torch.multinomial` (what `generate(do_sample=True)` calls) draws an exponential
random number for every one of the 50,257 columns of every row: 39 ms for 32 rows here, 45%
of a reward-stage step (cProfile, 4 steps on the pocket model), more than the model's forward
passes. One uniform number per row against the running sum of the probabilities (`cumsum`,
`searchsorted`) draws from the same distribution in under a millisecond. The reward stage's
rollouts (utils/prefer/reward.py) sample here; everything a reader sees still goes through
`generate` (utils/generate/batched.py).
"""

from __future__ import annotations

import torch

from utils.generate.decoding import cache_argument
from utils.models.loading import eos_is_not_padding


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id per row of probs [rows, vocab], each drawn with its row's probabilities."""
    cdf = probs.float().cumsum(dim=-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp(max=probs.shape[-1] - 1)


@torch.no_grad()
def sample(model, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, temperature: float,
           eos_id: int) -> torch.Tensor:
    """[rows, <= max_new_tokens] new tokens after left-padded prompts (ids, mask), sampled at
    `temperature` with no other filter; a row that has written EOS is filled with EOS after it,
    as `generate` fills it with the pad id (EOS here). Stops early when every row has ended."""
    rows = ids.shape[0]
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # left padding: count from the first real token
    done = torch.zeros(rows, dtype=torch.bool, device=ids.device)
    new, past, cache = [], None, cache_argument(model)
    step_ids, step_positions = ids, positions
    with eos_is_not_padding(model):
        for _ in range(max_new_tokens):
            out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_positions,
                        use_cache=True, logits_to_keep=1, **{cache: past})
            past = getattr(out, cache)
            token = draw(torch.softmax(out.logits[:, -1].float() / temperature, dim=-1))
            token = torch.where(done, torch.full_like(token, eos_id), token)
            new.append(token)
            done |= token == eos_id
            if bool(done.all()):
                break
            step_ids, step_positions = token[:, None], step_positions[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.stack(new, dim=1)
