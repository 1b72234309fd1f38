"""Tests for utils/course/seed_facts.py: the deck's published figures, complete and self-consistent."""

import math

from utils.course import seed_facts
from utils.runs import experiments


def test_every_published_loss_is_a_number():
    results, best = seed_facts.SEED_RESULTS, seed_facts.SEED_BEST
    assert len(results) == 5 and len(best) == 2
    for table, columns in ((results, ["training loss", "val loss"]),
                           (best, ["training loss", "val loss", "test loss"])):
        assert table[columns].notna().all().all()
        assert "seed deck" in table.attrs["source"]


def test_the_figures_the_course_quotes():
    results = seed_facts.SEED_RESULTS.set_index("experiment")
    assert results.loc["gpt2-b2-acc8-e3-lr5e-5", ["training loss", "val loss"]].tolist() == [2.4758, 2.1564]
    assert results.loc["deepseek-b2-acc4-e1-lr1e-4", "val loss"] == 0.0157
    assert list(results["effective batch"]) == [8, 16, 32, 8, 16]
    best = seed_facts.SEED_BEST.set_index("model")
    assert best.loc[seed_facts.DEEPSEEK, "test loss"] == 0.01577
    assert best.loc[seed_facts.GPT2, "test loss"] == 2.1512
    assert math.isclose(best.loc[seed_facts.GPT2, "test perplexity"], math.exp(2.1512), abs_tol=1e-4)
    assert seed_facts.SEED_BEST.attrs["split sizes"] == {"train": 1764, "validation": 111, "test": 331}


def test_the_best_block_repeats_the_best_validation_rows():
    results, best = seed_facts.SEED_RESULTS, seed_facts.SEED_BEST.set_index("model")
    gpt2 = results[results["model"] == seed_facts.GPT2]
    assert gpt2["val loss"].min() == best.loc[seed_facts.GPT2, "val loss"]


def test_deck_runs_are_the_sweeps_experiments():
    assert list(seed_facts.SEED_RESULTS["experiment"]) == list(experiments.SWEEP)


def test_careful_reader_notes_are_computed_from_the_table():
    notes = seed_facts.careful_reader_notes()
    assert "best validation loss 2.1564 in gpt2-b2-acc8-e3-lr5e-5" in notes[0]
    assert "final setup (5 epochs" in notes[0] and "gpt2-b2-acc16-e5-lr3e-5" in notes[0]
    assert "a row the table does not show" in notes[1]  # DeepSeek's final 3 epochs were not tabled
    assert notes[-1] == "validation loss is below training loss in 5 of 5 rows"
    flipped = seed_facts.SEED_RESULTS.assign(**{"val loss": seed_facts.SEED_RESULTS["training loss"] + 1})
    assert seed_facts.careful_reader_notes(flipped)[-1] == "validation loss is below training loss in 0 of 5 rows"


def test_the_lora_line_agrees_with_its_numbers():
    lora = seed_facts.LORA_GPT2
    assert seed_facts.LORA_GPT2_LINE == (f"trainable params: {lora['trainable']:,} || all params: "
                                         f"{lora['total']:,} || trainable%: {lora['percent']:.4f}")
    assert round(100 * lora["trainable"] / lora["total"], 4) == lora["percent"]
