"""The training entry point runs data-parallel: two CPU processes under torchrun (gloo backend)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.slow
def test_stage2_on_two_processes_takes_half_the_steps(tmp_path):
    rows, batch, processes = 32, 8, 2  # --max-rows 32; the tiny profile's batch of 8 per process
    cmd = [str(TORCHRUN), "--nproc_per_node", str(processes), "-m", "utils.pipeline",
           "--runs-dir", str(tmp_path), "--run-name", "ddp", "--stages", "stage2", "--epochs", "1",
           "--max-rows", str(rows)]
    env = {**os.environ, "POET_PROFILE": "tiny", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    stage2 = json.loads((tmp_path / "ddp" / "metrics.json").read_text())["stage2"]
    # One epoch: each process sees half the 4 batches, so 2 optimizer steps instead of 4.
    assert stage2["world_size"] == processes
    assert stage2["global_step"] == math.ceil(math.ceil(rows / batch) / processes) == 2
    assert stage2["epochs"] == 1.0 and stage2["tokens_per_second"] > 0
    assert (tmp_path / "ddp" / "stage2" / "model" / "model.safetensors").exists()
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == processes
