"""utils.models.files: model folders written whole or not at all, broken ones named with the fix."""

import errno
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from utils.config import get_profile
from utils.models import files
from utils.models.files import (
    BrokenModelError,
    StorageError,
    building,
    checkpoint_is_intact,
    folder_problem,
)
from utils.pipeline.context import Context
from utils.pipeline.models import final_model, stage2_start
from utils.runs import registry


def weights_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    save_file({"w": torch.zeros(64)}, str(folder / "model.safetensors"))
    return folder


def cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_truncated_last_checkpoint_falls_back_to_the_one_before(tmp_path):  # C2
    for step in (2, 4):
        weights_folder(tmp_path / f"checkpoint-{step}")
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    cut(tmp_path / "checkpoint-4" / "model.safetensors", 100)
    assert not checkpoint_is_intact(tmp_path / "checkpoint-4")
    with pytest.warns(UserWarning, match="checkpoint-4 was cut off mid-save"):
        assert files.last_checkpoint(tmp_path).endswith("checkpoint-2")


def test_a_full_disk_names_the_disk_and_folder_and_leaves_no_half_folder(tmp_path, monkeypatch):  # C3
    target = weights_folder(tmp_path / "run" / "merged")  # an earlier, whole merged model

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StorageError, match=rf"the disk holding {target} is full .* MiB free"):
        with building(target) as folder:
            (folder / "config.json").write_text("{}")
            monkeypatch.setattr(Path, "write_bytes", full)
            (folder / "model.safetensors").write_bytes(b"x")
    monkeypatch.undo()
    assert folder_problem(target) is None  # the old folder is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["merged"]  # no .partial left
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(StorageError, match=f"disk holding {tmp_path / 'run'} is full"):
        registry.update_metrics(tmp_path / "run", "eval", {"loss": 1.0})  # the registry's files too


@pytest.mark.parametrize("damage, said", [
    (lambda f: (f / "config.json").write_text(""), "config.json is missing, empty or not JSON"),
    (lambda f: (f / "model.safetensors").unlink(), "it has no weights"),
    (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"), "only pickle weights"),
    (lambda f: cut(f / "model.safetensors", 150), "model.safetensors is cut off"),
])
def test_a_broken_model_folder_is_named_with_the_fix(tmp_path, damage, said):  # U1
    run = tmp_path / "r"
    registry.write_config(run, get_profile("tiny"))
    damage(weights_folder(run / registry.MERGED))
    assert said in folder_problem(run / registry.MERGED)
    ctx = Context(get_profile("tiny"), run)
    for stage_of in (final_model, stage2_start):
        with pytest.raises(BrokenModelError) as caught:
            stage_of(ctx)
        message = str(caught.value)
        assert f"{run / 'merged'} is broken: " in message and said in message and "--stages merge" in message
        assert "internet" not in message
