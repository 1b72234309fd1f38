"""utils.evaluate.seed_prompts: the seed's two prompts answered by several models, side by side."""

import pytest

from utils.config import get_profile, random_init
from utils.evaluate import seed_prompts
from utils.models.loading import load_model
from utils.models.tokenizers import load_tokenizer


def test_side_by_side_gives_each_model_the_same_seeded_prompts():
    profile = random_init(get_profile("tiny"))
    tok = load_tokenizer(profile)
    model = load_model(profile, tokenizer=tok)
    settings = {"do_sample": True, "temperature": 1.0, "max_new_tokens": 6}
    table = seed_prompts.side_by_side({"a": model, "b": model}, tok, settings, seed=7)
    assert list(table.columns) == ["a", "b"] and list(table.index) == ["generic", "poem request"]
    assert table["a"].tolist() == table["b"].tolist()  # same weights, same seed: same text
    assert seed_prompts.SEED_PROMPTS["poem request"].endswith("\nAssistant:")
    with pytest.raises(ValueError, match="at least one model"):
        seed_prompts.side_by_side({}, tok, settings, seed=7)
