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
