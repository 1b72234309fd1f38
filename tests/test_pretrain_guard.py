"""Pretraining's arguments and output folder: refused before the first step, in one line."""

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from utils.config import POCKET_DIR, REPO_ROOT
from utils.train import pretrain, pretrain_guard
from utils.train.pretrain import PretrainConfig
from utils.train.pretrain_guard import PretrainGuardError

SMALL = PretrainConfig(n_layer=1, n_embd=32, n_head=2, block_size=32, batch_size=4,
                       max_tokens=4 * 32 * 2, warmup_steps=1, eval_every=2)


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _cli(*args, runs_dir):
    env = {**os.environ, "POET_RUNS_DIR": str(runs_dir)}
    return subprocess.run([sys.executable, "-m", "utils.train.pretrain", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.mark.parametrize("flags, message", [
    (["--learning-rate", "-1"], "--learning-rate must be above 0, got -1.0"),
    (["--learning-rate", "nan"], "--learning-rate must be a finite number, got nan"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--eval-every", "0"], "--eval-every must be at least 1, got 0"),
    (["--n-head", "3"], "--n-head 3 does not divide --n-embd 128"),
    (["--block-size", "100000"], "--block-size 100000 is over the GPT-2 tokenizer's context"),
])
def test_bad_arguments_end_in_one_line_before_any_work(tmp_path, flags, message):
    done = _cli(*flags, runs_dir=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip()[7:]}"]
    assert message in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no folder made


@pytest.mark.parametrize("changes, message", [
    ({"dropout": 1.0}, "--dropout is the share of activations dropped, so at least 0 and below 1, got 1.0"),
    ({"attn_dropout": -0.1}, "--attn-dropout is the share of activations dropped"),
    ({"attn_dropout": float("nan")}, "--attn-dropout is the share of activations dropped, so at least 0 and below 1, got nan"),
])
def test_a_dropout_outside_0_to_1_is_refused(changes, message):
    with pytest.raises(PretrainGuardError, match=re.escape(message)):
        pretrain_guard.check_config(dataclasses.replace(SMALL, **changes))
    pretrain_guard.check_config(dataclasses.replace(SMALL, dropout=0.0, attn_dropout=0.5))  # in range


def test_no_out_never_touches_the_committed_checkpoint(tmp_path):
    before = _digests(POCKET_DIR)
    out = pretrain_guard.prepare_out(None, SMALL)
    assert out.parent.name == "pretrain" and not pretrain_guard.is_committed_pocket(out)
    with pytest.raises(PretrainGuardError, match="committed pocket checkpoint.*--rebuild-pocket"):
        pretrain_guard.prepare_out(POCKET_DIR, SMALL, overwrite=True)
    assert _digests(POCKET_DIR) == before


def test_out_dot_or_a_users_folder_is_refused_even_with_overwrite(tmp_path):
    readme = (REPO_ROOT / "README.md").read_bytes()
    for overwrite in (False, True):
        with pytest.raises(PretrainGuardError, match="holds files pretraining did not write"):
            pretrain_guard.prepare_out(REPO_ROOT, SMALL, overwrite=overwrite)
    assert (REPO_ROOT / "README.md").read_bytes() == readme
    mine = tmp_path / "mine"
    (mine / "checkpoint").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(PretrainGuardError, match=r"\(notes.txt\)"):
        pretrain_guard.prepare_out(mine, SMALL, overwrite=True)
    assert (mine / "checkpoint").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(PretrainGuardError, match="is a file, not a folder"):
        pretrain_guard.prepare_out(tmp_path / "file", SMALL)


def _fake_run(folder, cfg, finished):
    """A folder as pretrain() leaves it: finished (model files) or stopped (checkpoint/)."""
    folder.mkdir(parents=True)
    if finished:
        for name in ("config.json", "model.safetensors", "README.md"):
            (folder / name).write_text("{}")
        (folder / "history.json").write_text(json.dumps({"config": dataclasses.asdict(cfg)}))
    else:
        (folder / "checkpoint").mkdir()
        (folder / "checkpoint" / "state.json").write_text(
            json.dumps({"step": 2, "config": dataclasses.asdict(cfg)}))


def test_own_finished_output_needs_overwrite_and_resume_needs_a_checkpoint(tmp_path):
    done = tmp_path / "done"
    _fake_run(done, SMALL, finished=True)
    with pytest.raises(PretrainGuardError, match="holds a finished pocket model; pass --overwrite"):
        pretrain_guard.prepare_out(done, SMALL)
    with pytest.raises(PretrainGuardError, match="--resume: .* no checkpoint/ to continue"):
        pretrain_guard.prepare_out(done, SMALL, resume=True)
    assert pretrain_guard.prepare_out(done, SMALL, overwrite=True) == done
    with pytest.raises(PretrainGuardError, match="--resume: .* holds no checkpoint"):
        pretrain_guard.prepare_out(tmp_path / "new", SMALL, resume=True)


def test_resume_refuses_changed_settings(tmp_path):
    stopped = tmp_path / "stopped"
    _fake_run(stopped, SMALL, finished=False)
    assert pretrain_guard.prepare_out(stopped, SMALL, resume=True) == stopped
    other = dataclasses.replace(SMALL, learning_rate=1e-3, seed=1)
    with pytest.raises(PretrainGuardError, match=r"--learning-rate 0.002 -> 0.001, --seed 0 -> 1"):
        pretrain_guard.prepare_out(stopped, other, resume=True)
    with pytest.raises(FileExistsError, match="pass --resume to continue it, or --overwrite"):
        pretrain_guard.prepare_out(stopped, SMALL)
    pretrain_guard.prepare_out(stopped, SMALL, overwrite=True)  # start over: the checkpoint goes
    assert not (stopped / "checkpoint").exists()


def test_the_loop_records_its_settings_for_resume(tmp_path, monkeypatch):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pretrain, "save_pocket", stop)  # stop after the last checkpoint
    with pytest.raises(KeyboardInterrupt):
        pretrain.pretrain(SMALL, tmp_path / "run", progress=False)
    assert pretrain_guard.saved_config(tmp_path / "run") == dataclasses.asdict(SMALL)
