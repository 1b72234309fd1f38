"""Nothing stale: a re-run stage drops what the stages after it made; --resume compares every
option that changes results; a moved course folder still resumes (utils/runs/stale.py, guard)."""

import json

import pytest

from utils.config import get_profile
from utils.pipeline import job as pipeline
from utils.runs import guard as run_guard
from utils.runs import registry, stale


def finished_run(root, name="r", **options):
    """A run folder as a whole run plus prefer leaves it (no weights: nothing here loads them)."""
    run = root / name
    registry.write_config(run, get_profile("tiny"), stages=["stage2", "prefer"],
                          options={"packing": "auto", "max_rows": None, "from_run": None, **options})
    registry.write_json_atomic(run / registry.METRICS, {s: {"x": 1} for s in (
        "stage1", "merge", "stage2", "eval", "learning", "preference")})
    registry.write_json_atomic(run / registry.LOG_HISTORY, {"stage1": [], "stage2": []})
    registry.write_samples(run, "stage2", [{"prompt": "p", "generation": "g"}])
    for folder in (registry.STAGE1_ADAPTER, registry.MERGED, registry.STAGE2_MODEL, registry.STAGE3_MODEL):
        (run / folder).mkdir(parents=True)
    (run / "report.md").write_text("old report")
    return run


def test_rerunning_stage2_drops_evaluate_report_and_stage3_with_a_note(tmp_path, capsys):
    run = finished_run(tmp_path)
    dropped = stale.invalidate_downstream(run, ["stage2"])
    metrics = registry.read_json(run / registry.METRICS)
    assert set(metrics) == {"stage1", "merge", "stage2"}  # eval, learning, preference gone
    assert not (run / registry.STAGE3_MODEL).exists() and not (run / "report.md").exists()
    assert (run / registry.STAGE2_MODEL).exists() and (run / registry.MERGED).exists()
    assert registry.read_samples(run) == []  # the old stage-2 answers
    assert "metrics.json['preference']" in dropped
    out = capsys.readouterr().out
    assert "note: stage2 run again, so prefer's outputs are stale and removed" in out


def test_stale_follows_what_feeds_what():
    assert stale.stale_stages(["stage2"]) == ["evaluate", "report", "prefer", "reward"]
    assert stale.stale_stages(["stage1"]) == ["merge", "stage2", "evaluate", "report", "prefer", "reward"]
    assert stale.stale_stages(["evaluate"]) == ["report"]
    assert stale.stale_stages(["data"]) == []  # the same settings: the same data
    assert stale.stale_stages(["data"], data_changed=True)[0] == "stage1"
    assert stale.stale_stages(["stage2", "evaluate", "report", "prefer", "reward"]) == []
    assert stale.stale_stages(["reward"]) == ["report"]


def test_resume_through_the_pipeline_drops_the_old_stage3(tmp_path):
    run = finished_run(tmp_path)
    pipeline.main(["--runs-dir", str(tmp_path), "--run-name", "r", "--resume", "--stages", "report"])
    assert "preference" in registry.read_json(run / registry.METRICS)  # report feeds nothing
    stale.invalidate_downstream(run, ["stage2"])
    from utils.runs import table as runs

    row = runs.runs_table(tmp_path).set_index("run").loc["r"]
    assert "DPO pairs" not in row or row.isna()["DPO pairs"]


@pytest.mark.parametrize("flags, change", [
    (["--max-rows", "40"], "options.max_rows: None -> 40"),
    (["--packing", "off"], "options.packing: 'auto' -> 'off'"),
    (["--prefer-max-steps", "5"], "options.prefer_max_steps: None -> 5"),
])
def test_resume_compares_the_options_that_change_results(tmp_path, flags, change):
    finished_run(tmp_path)
    with pytest.raises(SystemExit) as stop:
        pipeline.cli(["--runs-dir", str(tmp_path), "--run-name", "r", "--resume", *flags,
                      "--stages", "report"])
    assert change in str(stop.value) and "--allow-changed-settings" in str(stop.value)


def test_resume_refuses_a_changed_from_run(tmp_path):
    finished_run(tmp_path, "a")
    finished_run(tmp_path, "b", from_run="a")
    finished_run(tmp_path, "c")
    with pytest.raises(SystemExit, match="options.from_run: 'a' -> 'c'"):
        pipeline.cli(["--runs-dir", str(tmp_path), "--run-name", "b", "--resume", "--from-run", "c",
                      "--stages", "report"])


def test_repository_paths_are_stored_relative_and_old_absolute_ones_still_match(tmp_path):
    profile = get_profile("tiny")
    assert profile.to_dict()["model"]["pretrained_dir"] == "models/pocket-gpt2"
    run = finished_run(tmp_path)
    config = json.loads((run / registry.CONFIG).read_text())
    config["profile"]["model"]["pretrained_dir"] = "/old/place/poet-llm-course/models/pocket-gpt2"
    config["profile"]["data"]["sample_dir"] = "/old/place/poet-llm-course/data/sample"
    (run / registry.CONFIG).write_text(json.dumps(config))  # a run made before the folder moved
    assert run_guard.check_resume(run, profile) == {}
    run_guard.check_from_run(run, profile)  # no RunGuardError
    assert not run_guard.same_setting("/elsewhere/models/other", "models/pocket-gpt2")
