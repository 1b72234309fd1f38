"""Stage 3 (utils/prefer/dpo.py, utils/prefer/scripted_rater.py): pairs from clicks, the scripted rater, DPO.

The "done when" (in the tiny profile, DPO on the scripted rater's SIMULATED pairs raises the
property rate by >= 0.15 without collapsing distinct-2) is asserted on notebook 12's run, which
uses the profile's settings: tests/test_notebooks.py.
"""

import math

import pytest
import torch

from utils.config import get_profile
from utils.prefer import dpo, scripted_rater
from utils.prefer.ratings import append_rating, rating_row

PROMPT = "Write a poem about the sea."
VERSE = "the sea is grey\nthe gulls are loud\nI walk the pier"
PROSE = "the sea is grey and the gulls are loud and I walk the long pier every single morning"


def _items(n):
    return [{"prompt_id": f"p{i}", "prompt": f"{PROMPT} ({i})",
             "outputs": {"verse": f"{VERSE} {i}", "prose": f"{PROSE} {i}"}} for i in range(n)]


def _click(path, item, choice, system_a="verse", system_b="prose"):
    append_rating(path, rating_row("ana", item, system_a, system_b, choice))


def test_pairs_from_ratings_keep_a_and_b_and_count_the_rest(tmp_path):
    path, items = tmp_path / "preferences.csv", _items(6)
    _click(path, items[0], "a")  # verse wins
    _click(path, items[1], "b", "prose", "verse")  # verse wins, shown on the right
    _click(path, items[2], "b")  # prose wins
    _click(path, items[3], "tie")
    _click(path, items[4], "skip")
    _click(path, {"prompt_id": "x", "prompt": "never shown"}, "a")  # no texts for it
    pairs, dropped = dpo.pairs_from_ratings(path, items, min_pairs=1)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        (f"{VERSE} 0", f"{PROSE} 0"), (f"{VERSE} 1", f"{PROSE} 1"), (f"{PROSE} 2", f"{VERSE} 2")]
    assert all(p["prompt"].startswith(PROMPT) and p["simulated"] is False for p in pairs)
    assert dropped == {"tie": 1, "skip": 1, "text_not_in_items": 1, "text_changed": 0,
                       "identical_texts": 0, "corrupted_lines": 0}


def test_too_few_pairs_are_refused_naming_the_file_and_the_fix(tmp_path):
    path, items = tmp_path / "preferences.csv", _items(3)
    _click(path, items[0], "a")
    _click(path, items[1], "tie")
    with pytest.raises(ValueError) as error:
        dpo.pairs_from_ratings(path, items, min_pairs=16)
    message = str(error.value)
    assert str(path) in message and "only 1 usable" in message and "1 tie" in message
    assert "notebook 09" in message and "at least 16" in message


def test_properties_check_what_they_say():
    assert scripted_rater.short_lines(VERSE) and not scripted_rater.short_lines(PROSE)
    assert not scripted_rater.short_lines("one line only")
    assert scripted_rater.no_repeated_line(VERSE)
    assert not scripted_rater.no_repeated_line("the sea\nThe sea!\nthe end")
    assert scripted_rater.property_rate([VERSE, PROSE, VERSE, PROSE]) == 0.5
    with pytest.raises(ValueError, match="unknown property"):
        scripted_rater.get_property("rhymes")


def test_scripted_pairs_prefer_the_property_and_label_themselves_simulated():
    answers = [[VERSE, PROSE, PROSE + " again", VERSE + " too"], [VERSE, VERSE], [PROSE, PROSE]]
    pairs, dropped = scripted_rater.scripted_pairs(["a", "b", "c"], answers, max_pairs_per_prompt=3)
    assert len(pairs) == 3 and {p["prompt"] for p in pairs} == {"a"}
    assert all(scripted_rater.short_lines(p["chosen"]) and not scripted_rater.short_lines(p["rejected"])
               for p in pairs)
    assert all(p["simulated"] and "SIMULATED" in p["rater"] for p in pairs)
    # "b": two identical verses, nothing to compare them with; "c": two identical proses
    assert dropped == {"tie_all_have": 1, "tie_none_has": 1, "identical_texts": 2}


@pytest.fixture(scope="module")
def tiny_pair():
    """A tiny model, a slightly different copy as the reference, and the GPT-2 tokenizer."""
    from utils.models.loading import build_tiny_model
    from utils.models.tokenizers import load_tokenizer

    tok = load_tokenizer("tiny")
    model, ref = build_tiny_model("tiny", tok, seed=0), build_tiny_model("tiny", tok, seed=0)
    with torch.no_grad():
        for p in model.parameters():  # the policy must differ from the reference, or every
            p.add_(0.02 * torch.randn_like(p))  # log-ratio is 0 and the loss is log 2
    return model, ref, tok


def test_hand_written_loss_matches_trl(tiny_pair, tmp_path):
    model, ref, tok = tiny_pair
    pairs = [{"prompt": f"{PROMPT} ({i})\n", "chosen": f"{VERSE} {i}", "rejected": f"{PROSE} {i}"}
             for i in range(4)]
    cfg = dpo.preference_config("tiny", per_device_train_batch_size=4, max_steps=1)
    trainer = dpo.build_dpo_trainer(model, tok, pairs, [], cfg, tmp_path, ref_model=ref)
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()  # TRL disabled dropout, so train mode changes nothing
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, batch)
        ours, chosen, rejected = dpo.batch_dpo_loss(model, ref, batch, cfg.beta)
    assert abs(trl_loss.item() - ours.item()) <= 1e-5
    assert abs(ours.item() - math.log(2)) > 1e-3  # a real comparison, not two zero log-ratios
    logged = trainer._metrics["train"]
    assert logged["rewards/chosen"][-1] == pytest.approx(chosen.mean().item(), abs=1e-5)
    assert logged["rewards/accuracies"][-1] == pytest.approx((chosen > rejected).float().mean().item())


def test_the_raters_clicks_load_and_train(tiny_pair, tmp_path):
    """Clicks made through the ABRater widget (the file notebook 09 writes) train a DPO step."""
    from utils.prefer.rater import ABRater

    _, ref, tok = tiny_pair
    policy = type(ref)(ref.config)
    policy.load_state_dict(ref.state_dict())
    rater = ABRater(_items(8), path=tmp_path / "preferences.csv", seed=0)
    rater.name.value = "e2e-rater"
    while not rater.done:
        shown = rater.current()
        rater.buttons["a" if shown["system_a"] == "verse" else "b"].click()
    pairs, dropped = dpo.pairs_from_ratings(rater.path, _items(8), min_pairs=8)
    assert len(pairs) == 8 and sum(dropped.values()) == 0
    assert all(p["chosen"].startswith(VERSE) for p in pairs)
    cfg = dpo.preference_config("tiny", max_steps=2, per_device_train_batch_size=4,
                                learning_rate=1e-3, logging_steps=1)
    train, held_out = dpo.split_pairs(pairs, cfg.eval_fraction, cfg.seed)
    trainer = dpo.build_dpo_trainer(policy, tok, train, held_out, cfg, tmp_path / "out", ref_model=ref)
    result = dpo.train_dpo(trainer)
    assert trainer.state.global_step == 2 and math.isfinite(result["train"]["loss"])
    assert 0.0 <= result["eval"]["eval_rewards/accuracies"] <= 1.0
    moved = max((p - q).abs().max().item() for p, q in zip(policy.parameters(), ref.parameters()))
    assert moved > 0  # the policy trained; the reference stayed frozen
    assert all(not p.requires_grad for p in ref.parameters())


def test_prefer_stage_trains_saves_and_measures_from_a_stage2_model(tiny_full_run, tmp_path):
    """The pipeline's stage 3 for real, on the whole run's stage-2 model, a few prompts and one
    step: the SIMULATED pairs, the saved model and metrics.json's keys. What it moves with the
    profile's settings is asserted on notebook 12's run (tests/test_notebooks.py)."""
    from utils.models.loading import load_model
    from utils.pipeline.stages import prefer_stage
    from utils.runs import registry

    run, tok = tiny_full_run.run_dir, tiny_full_run.tokenizer()
    instructions = tiny_full_run.data().instructions
    cfg = dpo.preference_config("tiny", max_steps=1, max_prompts=20, samples_per_prompt=4,
                                eval_samples_per_prompt=2)
    out = tmp_path / "stage3"
    metrics = prefer_stage(run / registry.STAGE2_MODEL, tok, "tiny", out,
                           [p for p, _ in instructions["train"]], [p for p, _ in instructions["test"]][:3],
                           cfg=cfg, verbose=False)
    assert set(metrics) == {"config", "pairs", "pairs_dropped", "simulated", "property", "property_before",
                            "property_after", "distinct_2_before", "distinct_2_after",
                            "reward_accuracy"}
    assert metrics["simulated"] is True and metrics["pairs"] >= dpo.MIN_PAIRS
    assert metrics["config"]["max_steps"] == 1 and 0 <= metrics["property_after"] <= 1
    tuned = load_model(get_profile("tiny"), tokenizer=tok, path=out)
    start = load_model(get_profile("tiny"), tokenizer=tok, path=run / registry.STAGE2_MODEL)
    assert any(not torch.equal(p, q) for p, q in zip(tuned.parameters(), start.parameters()))


def test_prefer_is_an_optional_pipeline_stage_that_records_its_metrics(tiny_full_run, monkeypatch):
    from utils import options
    from utils.pipeline import stages
    from utils.runs import registry
    from utils.runs import table as runs

    assert "prefer" in options.STAGE_NAMES and "prefer" not in options.DEFAULT_STAGES
    seen = {}

    def fake_prefer(model_dir, tokenizer, profile, output_dir, prompts, eval_prompts, cfg=None):
        seen.update(model_dir=model_dir, output_dir=output_dir, prompts=len(prompts))
        return {"pairs": 3, "simulated": True}

    monkeypatch.setattr(stages, "prefer_stage", fake_prefer)  # the real one: test above
    stages.STAGES["prefer"](tiny_full_run)
    run = tiny_full_run.run_dir
    assert seen["model_dir"] == run / registry.STAGE2_MODEL
    assert seen["output_dir"] == run / registry.STAGE3_MODEL and seen["prompts"] > 0
    written = registry.read_json(run / registry.METRICS)["preference"]  # (merged with a real one)
    assert (written["pairs"], written["simulated"]) == (3, True)
    row = runs.runs_table(run.parent).set_index("run").loc[run.name]
    assert row["DPO pairs"] == 3 and bool(row["simulated rater"]) and "preference" in row["stages"]
