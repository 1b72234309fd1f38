"""utils.runs.guard: --overwrite deletes only runs, one writer per run, safe --resume and --from-run.

Every refusal here comes before any model is loaded, so these tests train nothing.
"""

import errno
import json
import os
import socket
import subprocess
import sys

import pytest

from utils.config import get_profile
from utils.options import RunOptions
from utils.pipeline import job as pipeline
from utils.runs import guard as run_guard
from utils.runs import registry


def fake_run(root, name, profile="tiny", **extra):
    registry.write_config(root / name, get_profile(profile), stages=["stage2"], **extra)
    (root / name / "metrics.json").write_text("{}")
    return root / name


def refused(tmp_path, *argv) -> str:
    with pytest.raises(SystemExit) as stop:
        pipeline.cli(["--runs-dir", str(tmp_path), *argv])
    return str(stop.value)


def test_overwrite_never_deletes_the_from_run_source(tmp_path):  # D1
    run = fake_run(tmp_path, "v")
    (run / "merged").mkdir()
    message = refused(tmp_path, "--run-name", "v", "--overwrite", "--from-run", "v", "--stages", "stage2")
    assert "--overwrite would delete run 'v', which --from-run reads" in message
    assert (run / "merged").is_dir() and (run / "metrics.json").exists()


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):  # D2
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.txt").write_text("years of work")
    message = refused(tmp_path, "--run-name", "notes", "--overwrite", "--stages", "data")
    assert "is not a run folder" in message and "move it away" in message
    assert (tmp_path / "notes" / "thesis.txt").read_text() == "years of work"
    with pytest.raises(registry.RunExistsError, match="not a run folder"):
        registry.prepare_run_dir(tmp_path / "notes", overwrite=True)  # the notebooks' path
    assert (tmp_path / "notes" / "thesis.txt").exists()


def test_a_notebook_never_overwrites_another_notebooks_run(tmp_path):  # D3
    run = fake_run(tmp_path, "06-stage1-tiny", notebook="06_stage1_lora_domain_adaptation")
    with pytest.raises(run_guard.RunGuardError, match="made by 06_stage1_lora_domain_adaptation"):
        run_guard.check_overwrite(run, owner="07_stage2_full_finetuning")
    own = fake_run(tmp_path, "07-stage2-tiny", notebook="07_stage2_full_finetuning")
    run_guard.check_overwrite(own, owner="07_stage2_full_finetuning")  # its own run: allowed
    run_guard.check_overwrite(tmp_path / "new", owner="07_stage2_full_finetuning")
    message = refused(tmp_path, "--run-name", "06-stage1-tiny", "--overwrite", "--stages", "data")
    assert "made by 06_stage1_lora_domain_adaptation, not utils.pipeline" in message  # notebook 08
    assert (run / "metrics.json").exists()


def test_a_live_writer_holds_the_run_and_a_dead_ones_lock_is_stale(tmp_path):  # S1
    run = fake_run(tmp_path, "r")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / run_guard.LOCK).write_text(json.dumps(
            {"pid": sleeper.pid, "host": socket.gethostname(), "started": "now"}))
        message = refused(tmp_path, "--run-name", "r", "--resume", "--stages", "data")
        assert f"being written by process {sleeper.pid}" in message and str(run / ".lock") in message
    finally:
        sleeper.kill()
        sleeper.wait()
    assert run_guard.lock_is_stale(json.loads((run / run_guard.LOCK).read_text()))
    assert run_guard.acquire_lock(run) == run / run_guard.LOCK  # taken over
    assert json.loads((run / run_guard.LOCK).read_text())["pid"] == os.getpid()
    run_guard.release_lock(run)
    assert not (run / run_guard.LOCK).exists()


def test_resume_of_a_missing_run_is_refused(tmp_path):  # S1
    message = refused(tmp_path, "--run-name", "ghost", "--resume", "--stages", "data")
    assert "run 'ghost' does not exist" in message and "drop --resume" in message
    assert not (tmp_path / "ghost").exists()


def test_resume_with_changed_settings_is_refused_unless_allowed(tmp_path):  # S2
    fake_run(tmp_path, "r")
    message = refused(tmp_path, "--run-name", "r", "--resume", "--learning-rate", "0.5", "--stages", "report")
    assert "stage2.learning_rate" in message and "--allow-changed-settings" in message
    pipeline.main(["--runs-dir", str(tmp_path), "--run-name", "r", "--resume", "--learning-rate",
                   "0.5", "--allow-changed-settings", "--stages", "report"])
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["profile"]["stage2"]["learning_rate"] == 0.5
    assert config["resumes"][-1]["changed"]["stage2.learning_rate"][1] == 0.5
    assert not (tmp_path / "r" / run_guard.LOCK).exists()  # released at the end


def test_from_run_of_another_architecture_is_refused(tmp_path):  # S3
    fake_run(tmp_path, "llama", profile="tiny-llama")
    message = refused(tmp_path, "--run-name", "x", "--from-run", "llama", "--stages", "stage2")
    assert "profile 'tiny-llama'" in message and "architecture 'llama' vs 'gpt2'" in message
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("flags, said", [
    (("--max-steps", "0"), "--max-steps must be at least 1, got 0"),
    (("--max-rows", "0"), "--max-rows must be at least 1, got 0"),
    (("--max-rows", "-1"), "--max-rows must be at least 1, got -1"),
    (("--epochs", "nan"), "--epochs must be a finite number, got nan"),
    (("--learning-rate", "-1"), "--learning-rate must be above 0, got -1.0"),
])
def test_numbers_are_checked_before_any_work(tmp_path, flags, said):  # S4, U3 (--epochs nan)
    assert said in refused(tmp_path, "--run-name", "n", *flags)
    assert not (tmp_path / "n").exists()
    with pytest.raises(ValueError, match=said.split(",")[0]):
        RunOptions(**{flags[0][2:].replace("-", "_"): float(flags[1]) if "." in flags[1] or
                      flags[1] == "nan" else int(flags[1])})


def test_run_names_with_a_newline_or_too_long_are_refused(tmp_path):  # U6, C4 (300 characters)
    for name in ("run\n", "a" * 300):
        with pytest.raises(ValueError, match="plain folder name"):
            registry.run_path(name, tmp_path)


def test_a_failed_runs_leftover_config_does_not_block_its_name(tmp_path):  # U6
    registry.write_config(tmp_path / "r", get_profile("tiny"))  # a run that died before training
    assert run_guard.is_leftover(tmp_path / "r")
    pipeline.main(["--runs-dir", str(tmp_path), "--run-name", "r", "--stages", "report"])
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert "finished" in config and not run_guard.is_leftover(tmp_path / "r")
    assert "already exists" in refused(tmp_path, "--run-name", "r", "--stages", "report")


def test_runs_dir_that_is_a_file_is_named(tmp_path):  # C4
    (tmp_path / "file").write_text("")
    message = refused(tmp_path / "file", "--run-name", "r", "--stages", "data")
    assert "is a file, not a folder" in message


def test_too_few_rows_are_found_before_training(tmp_path):  # U3: --max-rows 1
    message = refused(tmp_path, "--run-name", "one", "--max-rows", "1", "--stages", "data,stage1")
    assert "the train split of the poems has no blocks of" in message and "raise --max-rows (now 1)" in message
    assert not (tmp_path / "one" / "stage1").exists() and run_guard.is_leftover(tmp_path / "one")


def test_an_empty_test_split_is_found_before_stage2_trains(tmp_path):  # U3
    from types import SimpleNamespace

    from utils.pipeline.context import Context, Inputs
    from utils.pipeline.stages import check_inputs

    data = SimpleNamespace(poems={}, instructions={"train": [("p", "c")], "validation": [("p", "c")],
                                                   "test": []})
    ctx = Context(get_profile("tiny"), tmp_path, inputs=Inputs(tokenizer=object(), data=data))
    with pytest.raises(ValueError, match="the test split of the instructions has no rows .* "
                                         "check the data files"):
        check_inputs(ctx, ["stage2", "evaluate"])
    check_inputs(ctx, ["report"])  # nothing to check for stages that read no data


def test_a_run_path_that_is_a_file_or_a_read_only_runs_dir_is_named(tmp_path, monkeypatch):  # C4
    (tmp_path / "r").write_text("")
    assert "is a file, not a run folder" in refused(tmp_path, "--run-name", "r", "--stages", "data")

    def read_only(path, *args, **kwargs):  # what a read-only mount answers (root bypasses chmod)
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(os, "mkdir", read_only)
    message = refused(tmp_path, "--run-name", "new", "--stages", "data")
    assert f"{tmp_path / 'new'} cannot be written (Read-only file system)" in message
    assert "--runs-dir" in message
