"""utils.prefer.items: items to rate from generations or run folders, and their pairs."""

import json

import pytest

from utils.prefer import items as items_mod


def test_items_from_generations_and_pairs():
    items = items_mod.items_from_generations(["rain", "sea"], {"greedy": ["g1", "g2"], "sampled": ["s1", "s2"],
                                                           "hot": ["h1", "h2"]})
    assert [i["prompt_id"] for i in items] == [items_mod.prompt_id("rain"), items_mod.prompt_id("sea")]
    assert items[1]["outputs"] == {"greedy": "g2", "sampled": "s2", "hot": "h2"}
    pairs = items_mod.pair_items(items)
    assert [sorted(p["outputs"]) for p in pairs[:3]] == [["greedy", "hot"], ["greedy", "sampled"],
                                                         ["hot", "sampled"]]
    assert len(pairs) == 6


def test_items_with_fewer_than_two_systems_raise():
    with pytest.raises(ValueError, match="at least two"):
        items_mod.items_from_generations(["rain"], {"greedy": ["g"]})
    with pytest.raises(ValueError, match="item 1 has 1 system"):
        items_mod.validate_items([{"prompt": "a", "outputs": {"x": "1", "y": "2"}},
                              {"prompt": "b", "outputs": {"x": "1"}}])
    with pytest.raises(ValueError, match="has 2 generations for 1 prompts"):
        items_mod.items_from_generations(["rain"], {"x": ["1", "2"], "y": ["1"]})


def test_items_from_runs_matches_prompts_and_renames_shared_names(tmp_path):
    one, two = tmp_path / "run-a", tmp_path / "run-b"
    one.mkdir()
    two.mkdir()
    lines_one = [{"model": "stage2", "prompt": "rain", "generation": "wet"},
                 {"model": "stage2", "prompt": "only here", "generation": "x"},
                 {"model": "base", "prompt": "rain", "generation": "plain"}]
    (one / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines_one) + "{not json\n")
    (two / "samples.jsonl").write_text(json.dumps({"model": "stage2", "prompt": "rain",
                                                   "generation": "drops"}) + "\n"
                                       + json.dumps({"prompt": "rain", "text": "no model"}) + "\n")
    assert items_mod.find_sample_runs(tmp_path) == [one, two]
    with pytest.warns(UserWarning, match="skipped 1 line"):
        items = items_mod.items_from_runs([one, two / "samples.jsonl"])  # a folder or its file
    assert len(items) == 1
    assert items[0]["outputs"] == {"run-a:stage2": "wet", "base": "plain", "run-b:stage2": "drops",
                                   "run-b": "no model"}


def test_items_from_runs_reads_what_the_run_registry_writes(tmp_path):
    from utils.runs import registry

    run = tmp_path / "tiny-run"
    rows = [{"prompt": "rain", "generation": "wet"}, {"prompt": "sea", "generation": "salt"}]
    registry.write_samples(run, "stage1", rows)
    registry.write_samples(run, "stage2", [{**r, "generation": r["generation"].upper()} for r in rows])
    items = items_mod.items_from_runs(items_mod.find_sample_runs(tmp_path))
    assert [i["outputs"] for i in items] == [{"stage1": "wet", "stage2": "WET"},
                                             {"stage1": "salt", "stage2": "SALT"}]
