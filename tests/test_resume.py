"""A run killed mid-way resumes from its last complete checkpoint and ends where an unbroken run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# 8 rows in a batch of 8: every step is a new epoch, with its own shuffle to restore on resume.
# The tiny profile logs every 5 steps (pocket base): 6 steps, a checkpoint at 5, so the loss
# logged at step 6 covers step 6 alone in the unbroken run and in the resumed one.
ARGS = ["--stages", "stage2", "--max-steps", "6", "--save-steps", "5", "--max-rows", "8"]


def pipeline(runs: Path, *argv) -> subprocess.Popen:
    env = {**os.environ, "POET_PROFILE": "tiny", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "utils.pipeline", "--runs-dir", str(runs), *ARGS, *argv],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def metrics(runs: Path, name: str) -> dict:
    return json.loads((runs / name / "metrics.json").read_text())["stage2"]


def kill_after_checkpoint(proc: subprocess.Popen, folder: Path, step: int) -> None:
    """SIGKILL the run as soon as checkpoint-<step> is complete (its trainer_state.json is written)."""
    marker = folder / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_killed_run_resumes_and_matches_an_unbroken_run(tmp_path):
    finish(pipeline(tmp_path, "--run-name", "unbroken"))
    proc = pipeline(tmp_path, "--run-name", "killed")
    kill_after_checkpoint(proc, tmp_path / "killed" / "stage2" / "checkpoints", step=5)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "metrics.json").exists()  # it never got to the end

    out = finish(pipeline(tmp_path, "--run-name", "killed", "--resume"))
    resumed, unbroken = metrics(tmp_path, "killed"), metrics(tmp_path, "unbroken")
    assert "resuming from" in out and resumed["resumed_from"].endswith("checkpoint-5")
    assert resumed["global_step"] == unbroken["global_step"] == 6
    # The loss logged at the last step covers step 6 (logging_steps=5) in both runs; full
    # determinism on a CPU makes them equal, and so are the final weights' validation and test losses.
    assert resumed["train_loss"] == pytest.approx(unbroken["train_loss"], rel=1e-6)
    assert resumed["val_loss"] == pytest.approx(unbroken["val_loss"], rel=1e-6)
    assert resumed["test_loss"] == pytest.approx(unbroken["test_loss"], rel=1e-6)
    # The killed process's lock was stale and taken over; the resume is recorded, unchanged.
    config = json.loads((tmp_path / "killed" / "config.json").read_text())
    assert config["resumes"][-1]["changed"] == {} and not (tmp_path / "killed" / ".lock").exists()
