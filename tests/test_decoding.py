"""utils.generate.decoding: greedy, beam search and sampling match `model.generate` token for token."""

import itertools
from functools import lru_cache

import pytest
import torch
import transformers
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from utils.generate.decoding import (
    Beam,
    apply_sampling_filters,
    as_generate_output,
    beam_search,
    check_settings,
    context_length,
    encode_prompt,
    greedy_search,
    sample,
    sample_next_token,
)
from utils.models.loading import load_model_and_tokenizer
from utils.models.tokenizers import gpt2_tokenizer

PROMPTS = ["The moon", "Rain on the slate roof and", "A",
           "User: Write a poem about bread.\nAssistant:"]
PROFILES = ["tiny", "tiny-llama"]


@lru_cache(maxsize=None)
def _model(profile):
    transformers.logging.set_verbosity_error()  # "flags may be ignored" notes from generate
    model, tokenizer = load_model_and_tokenizer(profile)
    return model.eval(), tokenizer


def _hf(model, ids, **kwargs):
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)


# A grid that reaches every branch: EOS inside the top beams (the EOS id is set to a token
# the search meets), all length-penalty signs, the three early_stopping modes.
BEAM_GRID = [  # (num_beams, length_penalty, early_stopping, max_new_tokens, num_return_sequences)
    (2, 1.0, False, 9, 1), (3, 0.0, False, 9, 3), (4, 2.0, "never", 9, 2), (3, -1.0, True, 9, 2),
    (5, 1.0, True, 7, 5), (2, 2.0, False, 1, 2), (3, 1.0, "never", 8, 1), (4, -1.0, False, 6, 3),
]


@pytest.mark.parametrize("profile", PROFILES)
def test_beam_search_matches_generate(profile):
    model, tok = _model(profile)
    eos_endings = 0
    for i, prompt in enumerate(PROMPTS[:3]):
        ids = encode_prompt(tok, prompt, 10, context_length(model))
        path = greedy_search(model, ids, 6)
        stops = [path[1], None] if i == 0 else [path[1]]  # None: the model's own EOS
        for (k, lp, es, n_new, n_ret), eos in itertools.product(BEAM_GRID, stops):
            beams = beam_search(model, ids, k, n_new, lp, es, n_ret, eos_token_id=eos)
            out = _hf(model, ids, num_beams=k, do_sample=False, length_penalty=lp, early_stopping=es,
                      max_new_tokens=n_new, num_return_sequences=n_ret, eos_token_id=eos,
                      output_scores=True, return_dict_in_generate=True)
            assert torch.equal(as_generate_output(ids, beams, tok.pad_token_id), out.sequences)
            assert torch.equal(torch.tensor([b.score for b in beams]), out.sequences_scores)
            eos_endings += sum(eos is not None and b.tokens[-1] == eos for b in beams)
    assert eos_endings > 10  # the EOS branch really ran


def test_beam_scores_are_length_normalised_logprobs():
    model, tok = _model("tiny")
    ids = encode_prompt(tok, "The moon", 5, context_length(model))
    for lp in (0.0, 1.0, 2.0):
        best = beam_search(model, ids, num_beams=3, max_new_tokens=5, length_penalty=lp)[0]
        full = torch.cat([ids, torch.tensor([best.tokens])], dim=1)
        with torch.no_grad():
            logp = torch.log_softmax(model(full).logits[0, :-1].float(), dim=-1)
        picked = logp[ids.shape[1] - 1:].gather(1, torch.tensor(best.tokens)[:, None]).sum()
        assert best.score == pytest.approx(picked.item() / len(best.tokens) ** lp, abs=1e-4)


@pytest.mark.parametrize("profile", PROFILES)
def test_greedy_matches_generate(profile):
    model, tok = _model(profile)
    for prompt in PROMPTS:
        ids = encode_prompt(tok, prompt, 12, context_length(model))
        path = greedy_search(model, ids, 12)
        assert path == _hf(model, ids, do_sample=False, max_new_tokens=12)[0, ids.shape[1]:].tolist()
        # With EOS set to the 4th token, both stop right after it.
        stopped = greedy_search(model, ids, 12, eos_token_id=path[3])
        assert stopped == path[:path.index(path[3]) + 1]
        hf = _hf(model, ids, do_sample=False, max_new_tokens=12, eos_token_id=path[3])
        assert stopped == hf[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("profile", PROFILES)
def test_sample_matches_generate_under_the_same_seed(profile):
    model, tok = _model(profile)
    ids = encode_prompt(tok, "Rain on the slate roof and", 15, context_length(model))
    for seed, (t, k, p, rp) in enumerate([(0.7, 0, 0.95, 1.1), (1.0, 40, 1.0, 1.0), (1.5, 5, 0.5, 1.3)]):
        torch.manual_seed(seed)
        ours = sample(model, ids, 15, temperature=t, top_k=k, top_p=p, repetition_penalty=rp)
        torch.manual_seed(seed)
        hf = _hf(model, ids, do_sample=True, temperature=t, top_k=k, top_p=p,
                 repetition_penalty=rp, max_new_tokens=15)
        assert ours == hf[0, ids.shape[1]:].tolist()


def _hf_filters(temperature, top_k, top_p, repetition_penalty):
    procs = [RepetitionPenaltyLogitsProcessor(repetition_penalty), TemperatureLogitsWarper(temperature)]
    procs += [TopKLogitsWarper(top_k)] if top_k else []
    procs += [TopPLogitsWarper(top_p)] if top_p < 1 else []
    return LogitsProcessorList(procs)


@pytest.mark.parametrize("settings", [(0.7, 0, 0.95, 1.1), (1.0, 5, 1.0, 1.0), (1.3, 50, 0.5, 1.5),
                                      (0.2, 3, 0.99, 0.8), (2.0, 1, 0.1, 1.0)])
def test_sampling_filters_match_hf_processors(settings):
    torch.manual_seed(0)
    logits = torch.randn(3, 1000) * 3
    seen = torch.randint(0, 1000, (3, 12))
    expected = _hf_filters(*settings)(seen, logits.clone())
    assert torch.equal(apply_sampling_filters(logits, seen, *settings), expected)


def test_sampling_filters_defaults_are_the_seeds_settings():
    torch.manual_seed(1)
    logits, seen = torch.randn(2, 500), torch.randint(0, 500, (2, 4))
    assert torch.equal(apply_sampling_filters(logits, seen), _hf_filters(0.7, 0, 0.95, 1.1)(seen, logits.clone()))


def test_top_k_one_is_greedy_and_sample_next_token_is_seeded():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.9]])
    assert sample_next_token(logits, top_k=1).item() == 1
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    draws = [sample_next_token(logits, temperature=1.0, top_p=1.0, generator=g).item() for g in (g1, g2)]
    assert draws[0] == draws[1]


# ---------------------------------------------------------------- bad input


def test_empty_prompt_starts_from_bos():
    model, tok = _model("tiny")
    assert encode_prompt(tok, "", 5, 256).tolist() == [[tok.bos_token_id]]  # GPT-2: <|endoftext|>
    _, llama_tok = _model("tiny-llama")
    assert encode_prompt(llama_tok, "", 5, 256).tolist() == [[llama_tok.bos_token_id]]
    assert len(beam_search(model, encode_prompt(tok, "", 3, 256), 2, 3)[0].tokens) == 3


def test_empty_prompt_without_bos_is_a_clear_error():
    tok = gpt2_tokenizer()
    tok.bos_token = None
    with pytest.raises(ValueError, match="empty prompt.*no BOS"):
        encode_prompt(tok, "", 5, 256)


def test_a_lone_surrogate_in_a_prompt_is_named_not_a_type_error():
    tok = gpt2_tokenizer()
    with pytest.raises(ValueError, match=r"not valid text \('\\ud83d' at position 5\).*emoji"):
        encode_prompt(tok, "rose \ud83d", 5, 256)
    assert encode_prompt(tok, "rose \U0001F339", 5, 256).shape[1] > 1  # a whole emoji is fine


@pytest.mark.parametrize("profile", PROFILES)
def test_long_prompt_is_cut_from_the_left_with_a_warning(profile):
    model, tok = _model(profile)
    words = " ".join(f"w{i}" for i in range(400))
    full = tok(words)["input_ids"]
    with pytest.warns(UserWarning, match="keeping the last 246"):
        ids = encode_prompt(tok, words, 10, context_length(model))
    assert ids.shape == (1, 246)  # 256 positions - 10 new tokens
    if tok.bos_token_id is not None and full[0] == tok.bos_token_id:  # tiny-llama keeps its BOS
        assert ids[0].tolist() == full[:1] + full[-245:]
    else:
        assert ids[0].tolist() == full[-246:]
    assert len(greedy_search(model, ids, 10)) == 10  # and it still generates


def test_no_room_for_new_tokens_is_an_error():
    with pytest.raises(ValueError, match="max_new_tokens=256"):
        encode_prompt(gpt2_tokenizer(), "hello", 256, 256)


@pytest.mark.parametrize("kwargs, name", [
    ({"num_beams": 0}, "num_beams"), ({"num_beams": -2}, "num_beams"),
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.01}, "top_p"), ({"top_p": -0.5}, "top_p"),
    ({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"top_k": -1}, "top_k"), ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
])
def test_bad_settings_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        check_settings(**kwargs)


def test_bad_settings_are_caught_by_every_entry_point():
    model, tok = _model("tiny")
    ids = encode_prompt(tok, "The moon", 5, 256)
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(model, ids, num_beams=0, max_new_tokens=5)
    with pytest.raises(ValueError, match="top_p"):
        apply_sampling_filters(torch.zeros(1, 10), top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        sample(model, ids, 5, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        sample_next_token(torch.zeros(1, 10), temperature=-0.5)


def test_as_generate_output_pads_on_the_right():
    ids = torch.tensor([[5, 6]])
    out = as_generate_output(ids, [Beam([1, 2, 3], -1.0), Beam([4], -2.0)], pad_token_id=0)
    assert out.tolist() == [[5, 6, 1, 2, 3], [5, 6, 4, 0, 0]]


def test_beam_search_takes_one_prompt():
    model = object()  # never reached: the input is checked first
    batch = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match=r"takes one prompt .*got shape \(2, 3\)"):
        beam_search(model, batch, num_beams=2, max_new_tokens=3)
    with pytest.raises(ValueError, match="empty"):
        beam_search(model, torch.zeros(1, 0, dtype=torch.long), num_beams=2, max_new_tokens=3)
    with pytest.raises(TypeError, match="torch.Tensor"):
        beam_search(model, [[1, 2, 3]], num_beams=2, max_new_tokens=3)


def test_beam_search_accepts_a_1d_prompt():
    model, tok = _model("tiny")
    ids = encode_prompt(tok, "The sea", 3, 256)
    flat = beam_search(model, ids[0], num_beams=2, max_new_tokens=3)
    assert [b.tokens for b in flat] == [b.tokens for b in beam_search(model, ids, 2, 3)]
