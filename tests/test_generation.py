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
