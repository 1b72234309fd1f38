"""Tests for utils/evaluate/metrics.py: each metric against its reference library or a hand count."""

import math

import pronouncing
import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer
from transformers import GPT2Config, GPT2LMHeadModel

from utils.evaluate import metrics

RHYMED = """The cat sat softly by the door,
and watched the rain upon the floor.
A lamp burned low against the night,
and filled the room with amber light."""

UNRHYMED = """The kettle hums beside the window,
a sparrow lands upon the fence;
my letters wait inside a cupboard,
the river keeps its own slow counsel."""


class StubLM(torch.nn.Module):
    """Returns fixed logits (seq_len x vocab), the same for every row of the batch."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)

    def forward(self, input_ids, attention_mask=None):
        batch, seq_len = input_ids.shape
        return type("Out", (), {"logits": self.logits[:seq_len].expand(batch, -1, -1)})


@pytest.fixture(scope="module")
def tiny_gpt2():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    return GPT2LMHeadModel(config)  # built in train mode: the metrics must switch dropout off


# ---- loss and perplexity -------------------------------------------------------------

def test_uniform_logits_perplexity_equals_vocab_size():
    vocab = 37
    model = StubLM(torch.zeros(8, vocab))
    ids = torch.randint(0, vocab, (2, 8))
    batch = {"input_ids": ids, "labels": ids}
    assert metrics.perplexity(model, batch) == pytest.approx(vocab, rel=1e-6)
    assert metrics.perplexity_from_loss(math.log(vocab)) == pytest.approx(vocab, rel=1e-12)


def test_completion_loss_ignores_masked_positions():
    torch.manual_seed(0)
    model = StubLM(torch.randn(6, 11))
    ids = torch.randint(0, 11, (1, 6))
    labels = ids.clone()
    labels[0, :3] = -100  # prompt tokens 0-2: logits 0-1 predict them, so they must not count
    batch = {"input_ids": ids, "labels": labels}
    before = metrics.completion_loss(model, batch)
    with torch.no_grad():
        model.logits[1] += torch.randn(11) * 5  # predicts masked label 2
    assert metrics.completion_loss(model, batch) == before
    with torch.no_grad():
        model.logits[3] += torch.randn(11) * 5  # predicts scored label 4
    assert metrics.completion_loss(model, batch) != before


def test_token_nll_matches_hf_loss(tiny_gpt2):
    ids = torch.randint(0, 50, (2, 10))
    labels = ids.clone()
    labels[:, :4] = -100
    nll, n = metrics.token_nll(tiny_gpt2, ids, labels)
    assert n == 2 * (10 - 4)
    assert tiny_gpt2.training  # mode restored
    tiny_gpt2.eval()
    with torch.no_grad():
        hf_loss = tiny_gpt2(input_ids=ids, labels=labels).loss.item()
    tiny_gpt2.train()
    assert nll / n == pytest.approx(hf_loss, rel=1e-5)


def test_completion_loss_averages_per_token_not_per_batch():
    torch.manual_seed(0)
    model = StubLM(torch.randn(8, 11))
    ids = torch.randint(0, 11, (1, 8))
    short, long_ = ids.clone(), ids.clone()
    short[0, :6] = -100  # 2 tokens scored
    b1, b2 = {"input_ids": ids, "labels": short}, {"input_ids": ids, "labels": long_}
    (s1, n1), (s2, n2) = (metrics.token_nll(model, ids, l) for l in (short, long_))
    per_token = (s1 + s2) / (n1 + n2)  # not the mean of the two batch means
    assert metrics.completion_loss(model, [b1, b2]) == pytest.approx(per_token, rel=1e-9)


def test_sliding_window_short_text_equals_plain_loss(tiny_gpt2):
    ids = torch.randint(0, 50, (1, 20))
    total, n = metrics.sliding_window_nll(tiny_gpt2, ids, max_length=32, stride=16)
    plain, m = metrics.token_nll(tiny_gpt2, ids, ids)
    assert n == m == 19
    assert total == pytest.approx(plain, rel=1e-6)


def test_sliding_window_long_text_scores_each_token_once(tiny_gpt2):
    ids = torch.randint(0, 50, (50,))  # longer than n_positions=32
    total, n = metrics.sliding_window_nll(tiny_gpt2, ids, max_length=16, stride=8)
    assert n == 49 and math.isfinite(total)
    # stride == max_length is plain chunking: the sum of each chunk's own loss
    total, n = metrics.sliding_window_nll(tiny_gpt2, ids[:32], max_length=16, stride=16)
    chunks = [metrics.token_nll(tiny_gpt2, c[None], c[None]) for c in (ids[:16], ids[16:32])]
    assert n == 30  # the first token of each chunk has no context inside it
    assert total == pytest.approx(sum(c[0] for c in chunks), rel=1e-6)


def test_sliding_window_bad_stride(tiny_gpt2):
    with pytest.raises(ValueError, match="stride"):
        metrics.sliding_window_nll(tiny_gpt2, torch.zeros(1, 4, dtype=torch.long), 8, 9)


def test_completion_loss_bad_batches():
    model = StubLM(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="empty"):
        metrics.completion_loss(model, [])
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="no label tokens"):
        metrics.completion_loss(model, {"input_ids": ids, "labels": torch.full_like(ids, -100)})


# ---- overlap with references ---------------------------------------------------------

HYPS = ["the cat sat on the mat", "a lamp burned low against the night"]
REFS = ["the cat lay on the mat", "a candle burned low into the night"]


def test_bleu_matches_sacrebleu_and_is_100_for_identical():
    assert metrics.bleu(HYPS, REFS) == sacrebleu.corpus_bleu(HYPS, [REFS]).score
    assert metrics.bleu(REFS, REFS) == pytest.approx(100.0, abs=1e-9)  # float exp(log)


def test_rouge_matches_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = [scorer.score(r, h) for h, r in zip(HYPS, REFS)]
    got = metrics.rouge(HYPS, REFS)
    assert set(got) == {"rouge_1", "rouge_2", "rouge_l"}
    for ours, theirs in [("rouge_1", "rouge1"), ("rouge_2", "rouge2"), ("rouge_l", "rougeL")]:
        assert got[ours] == pytest.approx(sum(e[theirs].fmeasure for e in expected) / 2, abs=1e-12)


def test_rouge_l_hand_computed_lcs():
    # LCS of "the cat sat on the mat" / "the cat lay on the mat" = "the cat on the mat" = 5 words;
    # P = R = 5/6, so F1 = 5/6.
    assert metrics.rouge(HYPS[:1], REFS[:1])["rouge_l"] == pytest.approx(5 / 6, abs=1e-12)
    # LCS of "a b c d" / "a c e" = "a c": P = 2/4, R = 2/3, F1 = 2PR/(P+R) = 4/7.
    assert metrics.rouge(["a b c d"], ["a c e"])["rouge_l"] == pytest.approx(4 / 7, abs=1e-12)


def test_exact_match_normalises():
    assert metrics.normalize_text("  Hello,\tWORLD!! ") == "hello world"
    hyps, refs = ["Hello,  World!", "hello world."], ["hello world", "hello there"]
    assert metrics.exact_match(hyps, refs) == 0.5


# ---- diversity -----------------------------------------------------------------------

def test_distinct_n_hand_counted():
    texts = ["The cat sat on the mat", "the CAT ran"]
    # unigrams: 9 tokens, unique {the, cat, sat, on, mat, ran} = 6
    assert metrics.distinct_n(texts, 1) == 6 / 9
    # bigrams: 5 + 2 = 7 (none across texts), "the cat" twice -> 6 unique
    assert metrics.distinct_n(texts, 2) == 6 / 7
    assert metrics.distinct_n(["", "one"], 2) == 0.0  # no bigrams anywhere


def test_self_bleu_matches_sacrebleu_sentence_bleu():
    texts = ["the cat sat on the mat", "the cat sat on a hat", "rain fell on the quiet town"]
    expected = [sacrebleu.sentence_bleu(t, [o for o in texts if o is not t]).score for t in texts]
    assert metrics.self_bleu(texts) == pytest.approx(sum(expected) / 3, abs=1e-12)
    assert metrics.self_bleu(["a b c d", "a b c d"]) == pytest.approx(100.0, abs=1e-9)
    assert metrics.self_bleu(["alone"]) == 0.0


def test_repetition_rate_hand_counted():
    # "a b a b a b": bigrams ab ba ab ba ab, the last 3 repeat -> 3/5; "x y z" -> 0
    assert metrics.repetition_rate(["a b a b a b", "x y z"], n=2) == pytest.approx(0.3, abs=1e-12)
    assert metrics.repetition_rate([""], n=2) == 0.0


# ---- poetic form ---------------------------------------------------------------------

def test_syllables_known_and_unknown_words():
    assert [metrics.syllables(w) for w in ("water", "poetry", "cat", "Water,")] == [2, 3, 1, 2]
    assert metrics.syllables("glorp") == 1 and metrics.syllables("glome") == 1  # heuristic
    assert metrics.syllables("") == 0


def test_line_stats_and_syllables_per_line():
    assert metrics.line_stats(RHYMED) == (4, 28 / 4)
    assert metrics.line_stats("") == (0, 0.0)
    assert metrics.syllables_per_line("The cat sat by the door\n\nwater poetry") == [6, 5]


def test_rhyme_rate_quatrains():
    assert metrics.rhyme_rate(RHYMED) == 1.0
    assert metrics.rhyme_rate(UNRHYMED) == 0.0
    abcb = "I walk alone\nbeneath the moon\nthe rivers bend\nand sing in tune"
    assert metrics.rhyme_rate(abcb) == 0.5
    assert metrics.rhyme_rate("") == 0.0


def test_rhyme_rate_stays_within_stanzas():
    assert metrics.rhyme_rate("a quiet door\n\nthe marble floor") == 0.0


def test_words_rhyme_agrees_with_pronouncing():
    for a, b in [("door", "floor"), ("night", "light"), ("cat", "dog"), ("window", "fence")]:
        assert metrics.words_rhyme(a, b) == (b in pronouncing.rhymes(a))
    assert not metrics.words_rhyme("door", "Door!")  # repeating a word is not a rhyme
    assert metrics.words_rhyme("Door,", "floor.")
    assert metrics.words_rhyme("glorp", "florp")  # unknown words: by spelling


# ---- everything at once and bad input -----------------------------------------------

def test_evaluate_generations_keys_and_values():
    result = metrics.evaluate_generations([RHYMED, UNRHYMED], [RHYMED, RHYMED])
    assert set(result) == {"bleu", "rouge_l", "exact_match", "distinct_1", "distinct_2",
                           "self_bleu", "rhyme_rate", "rouge_1", "rouge_2", "distinct_3",
                           "repetition_rate", "mean_lines", "mean_syllables_per_line"}
    assert result["exact_match"] == 0.5
    assert result["rhyme_rate"] == 0.5
    assert result["mean_lines"] == 4.0
    assert result["bleu"] == metrics.bleu([RHYMED, UNRHYMED], [RHYMED, RHYMED])


def test_evaluate_generations_empty_strings():
    result = metrics.evaluate_generations(["", ""], ["", "a poem"])
    assert result["exact_match"] == 0.5
    for key in ("bleu", "distinct_1", "rhyme_rate", "repetition_rate", "mean_lines",
                "mean_syllables_per_line"):
        assert result[key] == 0.0, key


@pytest.mark.parametrize("fn", [metrics.bleu, metrics.rouge, metrics.exact_match,
                                metrics.evaluate_generations])
def test_pair_metrics_bad_input(fn):
    with pytest.raises(ValueError, match="hypotheses is empty"):
        fn([], ["x"])
    with pytest.raises(ValueError, match="references is empty"):
        fn(["x"], [])
    with pytest.raises(ValueError, match="hypotheses has 2 texts but references has 1"):
        fn(["x", "y"], ["x"])
    with pytest.raises(TypeError, match=r"references\[1\] is int"):
        fn(["x", "y"], ["x", 3])
    with pytest.raises(TypeError, match="list of str"):
        fn("a poem", "a poem")


@pytest.mark.parametrize("fn", [lambda t: metrics.distinct_n(t, 2), metrics.self_bleu,
                                metrics.repetition_rate])
def test_set_metrics_bad_input(fn):
    with pytest.raises(ValueError, match="texts is empty"):
        fn([])
    with pytest.raises(TypeError, match=r"texts\[0\] is NoneType"):
        fn([None])


@pytest.mark.parametrize("fn", [metrics.line_stats, metrics.syllables, metrics.syllables_per_line,
                                metrics.rhyme_rate, metrics.normalize_text])
def test_single_text_metrics_reject_non_strings(fn):
    with pytest.raises(TypeError, match="must be str"):
        fn(["a list"])


# ---- edge cases found against sacrebleu and rouge-score -----------------------------


def test_rouge_tokenizer_keeps_non_ascii_words_and_matches_the_default_on_ascii():
    from rouge_score import tokenizers

    ascii_text = "The swallows were flying low, over 3 rivers_and fields!"
    ours = metrics.UnicodeTokenizer().tokenize(ascii_text)
    assert ours == tokenizers.DefaultTokenizer(use_stemmer=True).tokenize(ascii_text)
    for text in ["дождь идёт над рекой", "雨が降る 夜の川"]:
        default = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(text, text)
        assert metrics.rouge([text], [text])["rouge_l"] == 1.0
        assert default["rougeL"].fmeasure == 0.0  # the library's default drops every word
    assert "été" in metrics.UnicodeTokenizer().tokenize("l'été brûle les blés")
    assert "t" in tokenizers.DefaultTokenizer().tokenize("l'été")  # the default splits at é
    assert metrics.rouge(["дождь идёт"], ["дождь спит"])["rouge_1"] == pytest.approx(0.5)


def test_exact_match_of_texts_that_normalise_to_nothing():
    assert metrics.exact_match(["🙂"], ["!!"]) == 0.0
    assert metrics.exact_match(["..."], [""]) == 0.0
    assert metrics.exact_match(["", " "], ["", ""]) == 1.0
    assert metrics.exact_match(["Hello!"], ["hello"]) == 1.0


def test_bleu_with_several_references_matches_sacrebleu():
    hyps = ["the cat sat on the mat", "a lamp burned low against the night", "rain on the roof"]
    refs = [["the cat lay on the mat", "a cat sat on a mat"],
            ["a candle burned low into the night"],
            ["rain fell on the roof", "the rain on a roof", "rain upon the roof"]]
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(3)]
    assert metrics.bleu(hyps, refs) == sacrebleu.corpus_bleu(hyps, streams).score
    # a second reference can only help: the best match per n-gram counts
    assert metrics.bleu(hyps, refs) > metrics.bleu(hyps, [r[0] for r in refs])
    with pytest.raises(ValueError, match=r"references\[1\] is empty"):
        metrics.bleu(hyps, [["a"], [], ["b"]])


def test_perplexity_of_a_diverged_loss_is_infinite_not_an_error():  # catalogue: C1
    assert metrics.perplexity_from_loss(709.0) == pytest.approx(math.exp(709.0))
    assert metrics.perplexity_from_loss(1.4e6) == math.inf
    assert math.isnan(metrics.perplexity_from_loss(math.nan))
