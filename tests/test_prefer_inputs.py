"""Stage 3's bad inputs, each one clear line: settings, items, ratings, the loss, the folders."""

import errno
import math

import pytest
import torch

from utils.models.files import BrokenModelError, StorageError
from utils.pipeline import stages
from utils.pipeline.context import Context
from utils.prefer import dpo
from utils.prefer.ratings import append_rating, rating_row
from utils.runs import registry
from utils.train.loss_guards import NonFiniteLossError


def _items(n, tag=""):
    return [{"prompt_id": f"p{i}", "prompt": f"Write about rain ({i})",
             "outputs": {"verse": f"short\nlines {i}{tag}", "prose": f"a long line of prose {i}{tag}"}}
            for i in range(n)]


def _click(path, item, winner, rater="ana"):
    shown = {**item, "text_a": item["outputs"]["verse"], "text_b": item["outputs"]["prose"]}
    append_rating(path, rating_row(rater, shown, "verse", "prose", "a" if winner == "verse" else "b"))


@pytest.mark.parametrize("changes, message", [
    ({"max_steps": 0}, "PreferenceConfig.max_steps must be at least 1, got 0"),
    ({"per_device_train_batch_size": 0}, "PreferenceConfig.per_device_train_batch_size must be at least 1, got 0"),
    ({"beta": math.nan}, "PreferenceConfig.beta must be a finite number, got nan"),
    ({"learning_rate": math.inf}, "PreferenceConfig.learning_rate must be a finite number, got inf"),
    ({"learning_rate": -1e-4}, "PreferenceConfig.learning_rate must be above 0, got -0.0001"),
])
def test_preference_config_refuses_settings_no_run_can_use(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        dpo.preference_config("tiny", **changes)


def test_malformed_items_or_ratings_are_value_errors_naming_what_is_wrong(tmp_path):
    path = tmp_path / "preferences.csv"
    _click(path, _items(1)[0], "verse")
    for items, message in ((None, "items must be a list"), ("abc", "items must be a list"),
                           ([{"prompt": "p"}], "item 0 has 0 system"),
                           ([{"outputs": {"a": "x", "b": "y"}}], "item 0 has no 'prompt' string"),
                           ([{"prompt": "p", "outputs": {"a": "x", "b": 3}}], "output of 'b' is not a string")):
        with pytest.raises(ValueError, match=message):
            dpo.pairs_from_ratings(path, items, min_pairs=1)
    import pandas as pd

    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['prompt_id'"):
        dpo.pairs_from_ratings(pd.DataFrame({"rater": ["ana"]}), _items(1), min_pairs=1)
    with pytest.raises(ValueError, match="ratings must be the path of a preferences.csv .* got int"):
        dpo.pairs_from_ratings(42, _items(1), min_pairs=1)


def test_ratings_keep_hashes_so_regenerated_texts_are_not_trained_on(tmp_path):
    path, items = tmp_path / "preferences.csv", _items(4)
    for item in items:
        _click(path, item, "verse")
    pairs, dropped = dpo.pairs_from_ratings(path, items, min_pairs=1)
    assert len(pairs) == 4 and dropped["text_changed"] == 0
    regenerated = _items(4, tag=" (new sample)")
    with (pytest.warns(UserWarning, match=r"4 rating\(s\) were made on texts that differ"),
          pytest.raises(ValueError, match=r"only 0 usable .*4 text_changed")):
        dpo.pairs_from_ratings(path, regenerated, min_pairs=1)


def test_items_are_matched_by_prompt_id_not_text(tmp_path):
    path, items = tmp_path / "preferences.csv", _items(2)
    _click(path, items[0], "verse")
    _click(path, items[1], "prose")
    renamed = [{**item, "prompt": "the same prompt, reworded"} for item in items]
    pairs, _ = dpo.pairs_from_ratings(path, renamed, min_pairs=1)
    assert [p["chosen"] for p in pairs] == ["short\nlines 0", "a long line of prose 1"]


def test_raters_who_contradict_each_other_are_reported_with_counts(tmp_path):
    path, items = tmp_path / "preferences.csv", _items(3)
    for item in items:
        _click(path, item, "verse", rater="ana")
        _click(path, item, "prose", rater="ben")
    with pytest.warns(UserWarning, match=r"3 pair\(s\) of texts were preferred both ways \(raters "
                                         r"ana, ben\); 6 of the pairs cancel"):
        pairs, _ = dpo.pairs_from_ratings(path, items, min_pairs=1)
    assert len(pairs) == 6


def test_too_few_scripted_pairs_never_ask_anyone_to_rate_more():
    with pytest.raises(ValueError) as error:
        dpo.check_enough_pairs([], "scripted-rater (SIMULATED)", 16, {"identical_texts": 3})
    assert "Rate more pairs" not in str(error.value) and "samples_per_prompt" in str(error.value)
    with pytest.raises(ValueError, match="Rate more pairs in notebook 09"):
        dpo.check_enough_pairs([], "preferences.csv", 16)


def test_an_exploding_dpo_stops_naming_the_learning_rate(tmp_path):
    from utils.models.loading import build_tiny_model
    from utils.models.tokenizers import load_tokenizer

    tok = load_tokenizer("tiny")
    model, ref = build_tiny_model("tiny", tok, seed=0), build_tiny_model("tiny", tok, seed=0)
    pairs = [{"prompt": f"Write ({i})\n", "chosen": f"short\nlines {i}", "rejected": f"a long line {i}"}
             for i in range(8)]
    cfg = dpo.preference_config("tiny", per_device_train_batch_size=4, max_steps=4,
                                learning_rate=50.0, logging_steps=1)
    trainer = dpo.build_dpo_trainer(model, tok, pairs[:6], pairs[6:], cfg, tmp_path, ref_model=ref)
    with pytest.raises(NonFiniteLossError, match=r"learning_rate=50\b.*Lower the learning rate"):
        dpo.train_dpo(trainer)


def test_prefer_without_stage2_suggests_a_command_with_resume(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    with pytest.raises(registry.RunNotFoundError, match=r"--run-name r --resume --stages "
                                                        r"data,stage1,merge,stage2,prefer"):
        stages.stage_prefer(Context("tiny", run))


def test_prefer_from_a_truncated_stage2_model_is_named_with_the_fix(tmp_path):
    folder = tmp_path / "r" / registry.STAGE2_MODEL
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")  # header cut off
    with pytest.raises(BrokenModelError, match=r"stage2/model is broken: .*--resume --stages stage2"):
        stages.stage_prefer(Context("tiny", tmp_path / "r"))


def test_a_full_disk_while_saving_stage3_is_a_storage_error_and_keeps_no_half_folder(tmp_path):
    class Model:
        def save_pretrained(self, folder):
            raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "stage3" / "model"
    with pytest.raises(StorageError, match=r"the disk holding .*stage3/model is full"):
        stages.save_model_folder(Model(), None, out)
    assert not out.exists() and not list(out.parent.glob(".*partial"))


def test_prefer_flags_reach_dpo_and_pipeline_flags_are_named(capsys):
    from utils.options import RunOptions

    options = RunOptions(max_steps=50, learning_rate=1e-3, prefer_max_steps=7, prefer_beta=0.2)
    cfg = dpo.preference_config("tiny", **options.preference_changes())
    tiny_rate = dpo.PREFERENCE_CONFIGS["tiny"].learning_rate  # --learning-rate (1e-3) does not reach it
    assert (cfg.max_steps, cfg.beta, cfg.learning_rate) == (7, 0.2, tiny_rate) and tiny_rate != 1e-3
    stages.note_pipeline_flags(options, cfg)
    out = capsys.readouterr().out
    assert "--max-steps, --learning-rate set stages 1 and 2; prefer (DPO) trains with its own" in out
    assert f"max_steps 7, learning_rate {tiny_rate:g}, beta 0.2" in out
    with pytest.raises(ValueError, match="--prefer-learning-rate must be above 0"):
        RunOptions(prefer_learning_rate=0.0)
    assert torch.isfinite(torch.tensor(cfg.beta))
