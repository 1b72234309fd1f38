"""utils.runs.registry: run folders, atomic files, which model a run has, the samples reader, the report."""

import json

import pytest

from utils.config import get_profile
from utils.models import files
from utils.runs import registry, report


def _fake_run(root, name, metrics):
    registry.write_config(root / name, get_profile("tiny"))
    (root / name / registry.METRICS).write_text(json.dumps(metrics))
    return root / name


def test_latest_model_prefers_stage2_and_stage1_source_prefers_merged(tmp_path):
    run = _fake_run(tmp_path, "r", {})
    assert registry.latest_model(run) is None and registry.stage1_model_source(run) is None
    (run / registry.STAGE1_ADAPTER).mkdir(parents=True)
    assert registry.stage1_model_source(run) == run / registry.STAGE1_ADAPTER
    (run / registry.MERGED).mkdir()
    (run / registry.MERGED / "config.json").write_text("{}")
    assert registry.stage1_model_source(run) == run / registry.MERGED
    assert registry.latest_model(run) == ("merged", run / registry.MERGED)
    (run / registry.STAGE2_MODEL).mkdir(parents=True)
    assert registry.latest_model(run) == ("merged", run / registry.MERGED)  # no config.json yet
    (run / registry.STAGE2_MODEL / "config.json").write_text("{}")
    assert registry.latest_model(run) == ("stage2", run / registry.STAGE2_MODEL)
    assert registry.latest_model(run, stages=("merged",)) == ("merged", run / registry.MERGED)


def test_read_samples_skips_lines_that_are_not_json_objects(tmp_path):
    good = {"model": "stage2", "prompt": "rain", "generation": "wet"}
    (tmp_path / registry.SAMPLES).write_bytes(
        (json.dumps(good) + "\n{not json\n[1, 2]\n\n").encode() + b"\xff\xfe\n")
    with pytest.warns(UserWarning, match=r"skipped 3 line\(s\).*\[2, 3, 5\]"):
        assert registry.read_samples(tmp_path) == [good]  # the run folder ...
    with pytest.warns(UserWarning):
        assert registry.read_samples(tmp_path / registry.SAMPLES) == [good]  # ... or the file
    assert registry.read_samples(tmp_path / "missing") == []


def test_final_model_paths_finds_the_latest_model_of_runs_of_this_profile(tmp_path):
    for name in ("both", "merged-only", "no-model"):
        _fake_run(tmp_path, name, {})
    for sub in ("both/stage2/model", "both/merged", "merged-only/merged"):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "config.json").write_text("{}")
    other = tmp_path / "llama-run"
    registry.write_config(other, get_profile("tiny-llama"))
    (other / "merged").mkdir()
    (other / "merged" / "config.json").write_text("{}")
    _fake_run(tmp_path, "corrupt", {})
    (tmp_path / "corrupt" / registry.CONFIG).write_text("{not json")
    assert registry.final_model_paths("tiny", tmp_path) == {
        "both": tmp_path / "both" / "stage2" / "model", "merged-only": tmp_path / "merged-only" / "merged"}
    assert registry.final_model_paths("tiny-llama", tmp_path) == {"llama-run": other / "merged"}


def test_json_is_written_atomically(tmp_path):
    path = registry.write_json_atomic(tmp_path / "metrics.json", {"a": 1})
    registry.write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_metrics_sections_merge_instead_of_replacing(tmp_path):
    registry.update_metrics(tmp_path, "stage2", {"train_loss": 1.0})
    registry.update_metrics(tmp_path, "eval", {"test_loss": 2.0})
    registry.update_metrics(tmp_path, "eval", {"bleu": 3.0})  # another developer's metric
    assert registry.read_json(tmp_path / "metrics.json") == {
        "stage2": {"train_loss": 1.0}, "eval": {"test_loss": 2.0, "bleu": 3.0}}


def test_samples_of_one_model_replace_only_that_models_lines(tmp_path):
    registry.write_samples(tmp_path, "stage1", [{"prompt": "a", "generation": "b"}])
    registry.write_samples(tmp_path, "stage2", [{"prompt": "c", "generation": "d"}])
    registry.write_samples(tmp_path, "stage1", [{"prompt": "e", "generation": "f"}])
    assert [(s["model"], s["prompt"]) for s in registry.read_samples(tmp_path)] == [
        ("stage2", "c"), ("stage1", "e")]


def test_existing_run_is_refused_without_overwrite(tmp_path):
    run = tmp_path / "run"
    registry.prepare_run_dir(run)
    (run / "metrics.json").write_text("{}")
    with pytest.raises(registry.RunExistsError, match="not a run folder"):  # no config.json
        registry.prepare_run_dir(run, overwrite=True)
    registry.write_config(run, get_profile("tiny"))
    with pytest.raises(registry.RunExistsError, match="--overwrite"):
        registry.prepare_run_dir(run)
    registry.prepare_run_dir(run, resume=True)
    assert (run / "metrics.json").exists()  # resume keeps the results
    registry.prepare_run_dir(run, overwrite=True)
    assert list(run.iterdir()) == []


def test_run_names_must_be_plain_folder_names(tmp_path):
    for bad in ("../elsewhere", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="plain folder name"):
            registry.run_path(bad, tmp_path)


def test_missing_run_is_reported_with_the_runs_there_are(tmp_path):
    registry.write_json_atomic(tmp_path / "first" / "config.json", {})
    with pytest.raises(registry.RunNotFoundError, match=r"'nope' not found .*existing runs: first"):
        registry.find_run("nope", tmp_path)


def test_last_checkpoint_skips_one_cut_off_mid_save(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert files.last_checkpoint(tmp_path).endswith("checkpoint-4")
    assert files.last_checkpoint(tmp_path / "none") is None


def test_git_commit_is_read_without_git():
    commit = registry.git_commit()
    assert commit == "unknown" or (len(commit) == 40 and int(commit, 16) >= 0)


def test_seed_table_has_the_seeds_columns():
    table = report.seed_table({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 16,
                                 "epochs": 5.0, "learning_rate": 3e-5, "train_loss": 2.5,
                                 "val_loss": 2.75, "test_loss": 2.8})
    assert table.splitlines()[0].startswith("| batch | accumulation | epochs | learning rate")
    assert table.splitlines()[2] == "| 2 | 16 | 5 | 3e-05 | 2.5 | 2.75 | 2.8 |"


def test_a_corrupt_registry_file_is_named(tmp_path):  # U2, C4 (metrics.json is [])
    (tmp_path / "metrics.json").write_text("{\n")
    with pytest.raises(ValueError, match=f"{tmp_path / 'metrics.json'} is not valid JSON"):
        registry.update_metrics(tmp_path, "eval", {"loss": 1.0})
    (tmp_path / "metrics.json").write_text("[]")
    with pytest.raises(ValueError, match="metrics.json holds list, not a JSON object; repair or delete it"):
        registry.update_metrics(tmp_path, "eval", {"loss": 1.0})


def test_bad_samples_lines_do_not_break_the_report_or_the_samples_writer(tmp_path):  # U2
    run = _fake_run(tmp_path, "r", {"eval": {"loss": 1.5}})
    (run / registry.SAMPLES).write_text('{"model": "stage2", "prompt": "p", "generation": "g"}\n'
                                        'not json\n{"prompt": 7}\n')
    with pytest.warns(UserWarning, match="skipped 1 line"):
        text = report.render_report(run)
    assert "| eval | loss | 1.5 |" in text and "**stage2**, prompt:" in text
    with pytest.warns(UserWarning, match="skipped 1 line"):
        registry.write_samples(run, "stage2", [{"prompt": "q", "generation": "h"}])
    rows = registry.read_samples(run)
    assert [r.get("prompt") for r in rows] == [7, "q"]
