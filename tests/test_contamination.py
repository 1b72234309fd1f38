"""Cross-dataset contamination between stage-1 poems and stage-2 answers."""

import pytest

from utils.data import contamination as c

# Invented texts. Poem 0 is copied exactly, poem 1 with other case and spacing,
# poem 2 shares exactly 13 words in a row with an answer, poem 3 only 12.
POEMS = ["the owl keeps the barn\nthe mice keep the owl",
         "Under the bridge the water\nwrites its long grey letter",
         "one two three four five six seven eight nine ten eleven twelve thirteen fourteen",
         "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi"]
ANSWERS = [" the owl keeps the barn\nthe mice keep the owl\n",
           "under the   bridge the water writes its long grey letter",
           "Here: two three four five six seven eight nine ten eleven twelve thirteen fourteen!",
           "zeta beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu",
           "a poem about nothing in particular"]


def test_each_check_finds_its_own_kind():
    found = c.find_contamination(POEMS, ANSWERS, n=13)
    assert found.exact == {0}
    assert found.normalised == {0, 1}  # the exact copy is also equal after normalising
    # 13-word runs: answers 0 and 1 are long enough only if a poem is; answer 2 shares 13 words
    # with poem 2; answer 3 shares only 12 with poem 3 (its first word differs).
    assert found.ngram == {2}
    assert found.answers == {0, 1, 2} and found.poems == {0, 1, 2}


def test_shorter_ngrams_catch_more():
    assert c.find_contamination(POEMS, ANSWERS, n=12).ngram == {2, 3}
    assert c.word_ngrams("A, b! c", 2) == {"a b", "b c"}


def test_report_and_dropping():
    splits = {"train": [("q", a) for a in ANSWERS[:2]], "test": [("q", a) for a in ANSWERS[2:]]}
    report, matches = c.contamination_report(POEMS, splits, n=13)
    assert report["train"] == {"answers": 2, "exact": 1, "normalised": 2, "13gram": 0,
                               "any": 2, "poems_involved": 2}
    assert report["test"]["13gram"] == 1 and report["test"]["any"] == 1
    assert report["poems_involved"] == 3
    poems, same, n = c.drop_contaminated(POEMS, splits, matches, "poems")
    assert poems == [POEMS[3]] and same is splits and n == 3
    poems, kept, n = c.drop_contaminated(POEMS, splits, matches, "instructions")
    assert poems is POEMS and kept == {"train": [], "test": [("q", ANSWERS[3]), ("q", ANSWERS[4])]}
    assert n == 3
    with pytest.raises(ValueError, match="'none', 'poems' or 'instructions'"):
        c.drop_contaminated(POEMS, splits, matches, "both")


def test_profile_option_drops_poems_in_prepare_data(tiny_profile):
    from utils.data import prepare as data
    from utils.models.tokenizers import load_tokenizer

    tok = load_tokenizer(tiny_profile)
    base = data.prepare_data(tiny_profile, tok)
    dropped = data.prepare_data(tiny_profile.replace(data={"drop_contaminated": "poems"}), tok)
    involved = base.report["contamination"]["poems_involved"]
    assert involved > 0
    n_base = sum(len(v) for v in base.poems.values())
    assert sum(len(v) for v in dropped.poems.values()) == n_base - involved
    assert dropped.report["contamination"]["rows_dropped"] == involved
    assert dropped.instructions == base.instructions


def test_config_rejects_an_unknown_drop_option():
    from utils.config import DataConfig

    with pytest.raises(ValueError, match="drop_contaminated must be one of"):
        DataConfig(drop_contaminated="both")
