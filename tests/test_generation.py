"""utils.generate.batched: batched, seeded generation that leaves the model as it was."""

import dataclasses

import pytest

from utils.config import get_profile
from utils.generate.batched import generate_batched, generate_texts
from utils.models.loading import load_model_and_tokenizer

PROMPTS = ["User: Write a poem about the sea\nAssistant:", "User: Write a poem about snow\nAssistant:",
           "User: A haiku about rain, please\nAssistant:", "User: Continue: The moon\nAssistant:"]


@pytest.mark.parametrize("name", ["tiny", "tiny-llama"])
def test_batched_left_padded_generation_matches_one_prompt_at_a_time(name):
    profile = get_profile(name)
    model, tokenizer = load_model_and_tokenizer(profile)
    greedy = dataclasses.replace(profile.decode, do_sample=False, max_new_tokens=6)
    prompts = PROMPTS  # different lengths: the short ones get left padding
    batched = generate_batched(model, tokenizer, prompts, greedy, batch_size=4)
    assert batched == generate_texts(model, tokenizer, prompts, greedy)


def test_generation_is_reproducible_with_the_seed():
    model, tok = load_model_and_tokenizer("tiny")
    decode = get_profile("tiny").decode
    a = generate_texts(model, tok, ["The sea"], decode, seed=1)
    b = generate_texts(model, tok, ["The sea"], decode, seed=1)
    assert a == b and isinstance(a[0], str) and a[0]


def test_dict_settings_an_empty_prompt_and_the_model_left_as_it_was():
    model, tok = load_model_and_tokenizer("tiny")
    model.train()
    before = model.generation_config.to_dict()
    greedy = {"do_sample": False, "num_beams": 1, "max_new_tokens": 5}
    texts = generate_batched(model, tok, ["", "The sea"], greedy, seed=None)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert texts == generate_batched(model, tok, ["", "The sea"], greedy, seed=None)  # greedy: no chance
    assert model.training and model.generation_config.to_dict() == before
    with pytest.raises(ValueError, match="temperature"):
        generate_batched(model, tok, ["x"], {**greedy, "do_sample": True, "temperature": 0.0})
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_batched(model, tok, ["x"], {"do_sample": False})


# ---------------------------------------------------------------- top-p without the full sort


def _pocket_logits(rows=16):
    """Next-token logits of the pocket model after real prompts, at the profile's temperature."""
    import torch

    model, tok = load_model_and_tokenizer("tiny")
    enc = tok(PROMPTS * (rows // len(PROMPTS)), return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).logits[:, -1].float()
    return logits / get_profile("tiny").decode.temperature


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95, 0.999])
@pytest.mark.parametrize("k", [8, 1024])
def test_nucleus_keeps_the_tokens_hugging_face_keeps(top_p, k):
    """The pocket model's own distributions and a flat and a peaked one: with k=8 most rows
    fall back to the full sort, with 1024 most do not; the masks are Hugging Face's either way."""
    import torch
    from transformers import TopPLogitsWarper

    from utils.generate.nucleus import NucleusWarper

    torch.manual_seed(0)
    scores = torch.cat([_pocket_logits(), torch.randn(4, 50257) * 0.1, torch.randn(4, 50257) * 8])
    ids = torch.zeros((len(scores), 1), dtype=torch.long)
    ours, theirs = NucleusWarper(top_p, k=k)(ids, scores.clone()), TopPLogitsWarper(top_p)(ids, scores.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.equal(ours[~torch.isinf(ours)], scores[~torch.isinf(theirs)])
    kept = (~torch.isinf(theirs)).sum(dim=1)
    assert kept.min() >= 1 and kept.max() < 50257  # something filtered, the best kept


def test_nucleus_refuses_settings_that_filter_nothing_or_keep_too_few():
    from utils.generate.nucleus import NucleusWarper

    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="top_p must be in"):
            NucleusWarper(bad)
    with pytest.raises(ValueError, match="min_tokens_to_keep"):
        NucleusWarper(0.9, k=1, min_tokens_to_keep=2)


def test_sampling_gives_the_texts_of_hugging_faces_top_p():
    """generate_batched's sampled texts with our warper equal those of generate's own top-p."""
    model, tok = load_model_and_tokenizer("tiny")
    decode = get_profile("tiny").decode
    ours = generate_batched(model, tok, PROMPTS * 4, decode, seed=3, batch_size=16)
    assert ours == generate_batched(model, tok, PROMPTS * 4, decode, seed=3, batch_size=16, fast_top_p=False)


def test_inverse_cdf_draws_follow_the_probabilities():
    """utils.generate.sampling.draw: each row's frequencies match its probabilities, and a token
    of probability 0 is never drawn."""
    import torch

    from utils.generate.sampling import draw

    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2], [0.0, 0.0, 0.0, 1.0]])
    g = torch.Generator().manual_seed(0)
    drawn = torch.stack([draw(probs, g) for _ in range(20_000)])  # [draws, rows]
    freq = torch.stack([(drawn[:, 0] == t).float().mean() for t in range(4)])
    torch.testing.assert_close(freq, probs[0], atol=0.015, rtol=0)
    assert (drawn[:, 1] == 3).all() and not (drawn[:, 0] == 1).any()


def test_sampled_rollouts_match_the_models_own_probabilities_and_stop_at_eos():
    """utils.generate.sampling.sample on left-padded prompts: the tokens generate's KV cache
    would see (the same logits at every step as a full forward pass), EOS filled after a row
    ends, and the same draws for the same torch seed."""
    import torch

    from utils.generate.sampling import sample

    model, tok = load_model_and_tokenizer(get_profile("tiny"))
    model.eval()
    rows = [tok("The sea at night")["input_ids"], tok("A heron")["input_ids"]]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.eos_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    torch.manual_seed(0)
    new = sample(model, ids, mask, 12, temperature=0.7, eos_id=tok.eos_token_id)
    torch.manual_seed(0)
    assert torch.equal(new, sample(model, ids, mask, 12, temperature=0.7, eos_id=tok.eos_token_id))
    assert new.shape[0] == 2 and 1 <= new.shape[1] <= 12
    # a greedy-like temperature picks the model's own most likely token given the whole row
    cold = sample(model, ids, mask, 6, temperature=1e-4, eos_id=tok.eos_token_id)
    full = torch.cat([ids, cold], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(cold)], dim=1)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=full_mask,
                       position_ids=(full_mask.cumsum(1) - 1).clamp(min=0)).logits
    expected = logits[:, width - 1:-1].argmax(-1)
    ended = (cold == tok.eos_token_id).cumsum(1) > (cold == tok.eos_token_id).long()  # after an EOS
    assert torch.equal(cold[~ended], expected[~ended])
    assert (cold[ended] == tok.eos_token_id).all()
