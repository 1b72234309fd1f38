import dataclasses

import pytest

from utils.config import PROFILES, DecodeConfig, get_profile


def test_profiles_exist():
    assert set(PROFILES) == {"tiny", "tiny-llama", "gpt2", "deepseek"}


def test_seed_hyperparameters():
    gpt2, deepseek = get_profile("gpt2").stage2, get_profile("deepseek").stage2
    assert (gpt2.num_train_epochs, gpt2.learning_rate, gpt2.weight_decay,
            gpt2.per_device_train_batch_size, gpt2.gradient_accumulation_steps) == (5, 3e-5, 0.01, 2, 16)
    assert (deepseek.num_train_epochs, deepseek.learning_rate, deepseek.weight_decay,
            deepseek.per_device_train_batch_size, deepseek.gradient_accumulation_steps) == (3, 1e-4, 0.0, 2, 4)
    assert gpt2.effective_batch_size == 32 and deepseek.effective_batch_size == 8


def test_seed_decoding_defaults():
    for name in PROFILES:
        d = get_profile(name).decode
        penalty = 1.2 if name == "tiny" else 1.1  # the pocket model loops at 1.1 (utils/config.py)
        assert (d.repetition_penalty, d.temperature, d.top_p) == (penalty, 0.7, 0.95)


def test_tiny_profiles_are_offline_and_scaled_down():
    for name in ("tiny", "tiny-llama"):
        p = get_profile(name)
        assert p.is_tiny and p.data.source == "sample"
        assert 0 < p.stage1.max_steps <= 100 and 0 < p.stage2.max_steps <= 100
    assert get_profile("tiny-llama").model.architecture == "llama"
    assert get_profile("deepseek").model.model_name_or_path == "deepseek-ai/deepseek-coder-1.3b-base"


def test_env_variable_picks_profile(monkeypatch):
    monkeypatch.setenv("POET_PROFILE", "tiny-llama")
    assert get_profile().name == "tiny-llama"
    monkeypatch.delenv("POET_PROFILE")
    assert get_profile().name == "tiny"


def test_unknown_profile_lists_valid_ones(monkeypatch):
    with pytest.raises(ValueError, match="unknown profile 'gpt3'.*tiny, tiny-llama, gpt2, deepseek"):
        get_profile("gpt3")
    monkeypatch.setenv("POET_PROFILE", "nope")
    with pytest.raises(ValueError, match="'nope'"):
        get_profile()


def test_profiles_are_frozen_and_replace_makes_copies():
    p = get_profile("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"
    q = p.replace(stage2={"learning_rate": 5e-4})
    assert q.stage2.learning_rate == 5e-4 and p.stage2.learning_rate != 5e-4
    assert q.to_dict()["data"]["sample_dir"].endswith("sample")


@pytest.mark.parametrize("kwargs, word", [({"temperature": -1}, "temperature"),
                                          ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"),
                                          ({"num_beams": 0}, "num_beams")])
def test_bad_decoding_values_name_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        DecodeConfig(**kwargs)


def test_bad_training_values():
    with pytest.raises(ValueError, match="learning_rate"):
        get_profile("tiny").replace(stage2={"learning_rate": 0})
