"""Model folders on disk: written whole or not at all, checked before they are loaded.

A model folder (merged/, stage2/model/, stage1/adapter/) is saved into a hidden sibling
folder and renamed into place when complete (`building`), so a kill or a full disk never
leaves a half folder that looks valid. `folder_problem` says what is wrong with one that is
broken anyway (older runs, hand edits), and `checkpoint_is_intact` lets a resume skip a
checkpoint that was cut off. Used by utils/runs/registry.py and utils/pipeline/models.py.
"""

from __future__ import annotations

import errno
import json
import shutil
import struct
import warnings
from contextlib import contextmanager
from pathlib import Path

WEIGHTS = ("*.safetensors",)
PICKLES = ("*.bin", "*.pt", "*.pth", "*.pkl")


class StorageError(OSError):
    """Writing failed for a reason of the disk (full, read-only, a name too long); the message
    names the folder and what to do."""


class BrokenModelError(ValueError):
    """A model folder that exists but cannot be loaded; the message says how to rebuild it."""


def storage_error(error: OSError, folder: Path) -> OSError:
    """A StorageError naming the disk and the folder for the errors a user can fix, else `error`."""
    folder = Path(folder)
    if error.errno == errno.ENOSPC:
        free = shutil.disk_usage(_existing(folder)).free / 2**20
        return StorageError(errno.ENOSPC, f"the disk holding {folder} is full ({free:.0f} MiB "
                            "free); nothing half-written was kept. Free some space there, or "
                            "pass --runs-dir on another disk, and run again")
    if error.errno == errno.EROFS or error.errno == errno.EACCES:
        return StorageError(error.errno, f"{folder} cannot be written ({error.strerror}); pass "
                            "--runs-dir (or set POET_RUNS_DIR) to a folder you can write")
    if error.errno == errno.ENAMETOOLONG:
        return StorageError(error.errno, f"a path under {folder} is too long for this file "
                            "system; choose a shorter --run-name or --runs-dir")
    return error


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@contextmanager
def building(folder: str | Path, enabled: bool = True):
    """Yield a temporary folder beside `folder`; when the block ends without error, it replaces
    `folder` in one rename. On an error it is deleted, and a disk error becomes a StorageError.
    enabled=False (a process that does not write) yields `folder` itself and does nothing."""
    folder = Path(folder)
    if not enabled:
        yield folder
        return
    tmp, old = folder.with_name(f".{folder.name}.partial"), folder.with_name(f".{folder.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise storage_error(error, folder) from error
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)  # two renames: the old folder stays whole until the new one is in place
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- checks before loading



def save_model_folder(model, tokenizer, folder) -> None:
    """Save a model and its tokenizer whole or not at all; a full disk is a StorageError."""
    with building(folder) as partial:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)

def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is cut off or unreadable, read from its header alone; None if whole."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(length)) if 0 < length <= size - 8 else None
    except (OSError, ValueError, struct.error):
        header = None
    if not isinstance(header, dict):
        return f"{path.name} has no readable header ({size} bytes)"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    expected = 8 + length + max(ends, default=0)
    if size != expected:
        return f"{path.name} is cut off ({size:,} of {expected:,} bytes)"
    return None


def folder_problem(folder: str | Path, config_name: str = "config.json") -> str | None:
    """What is wrong with a saved model (or adapter) folder, in words; None when it looks whole."""
    folder = Path(folder)
    config = folder / config_name
    try:
        ok = isinstance(json.loads(config.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        ok = False
    if not ok:
        return f"{config_name} is missing, empty or not JSON"
    weights = sorted(p for pattern in WEIGHTS for p in folder.glob(pattern))
    if not weights:
        pickles = sorted(p.name for pattern in PICKLES for p in folder.glob(pattern))
        if pickles:
            return f"it holds only pickle weights ({', '.join(pickles)}), which are never loaded"
        return "it has no weights (*.safetensors)"
    return next(filter(None, map(safetensors_problem, weights)), None)


def checkpoint_is_intact(checkpoint: str | Path) -> bool:
    """True when a Trainer checkpoint's trainer_state.json reads and its weights are whole."""
    checkpoint = Path(checkpoint)
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # the Trainer writes trainer_state.json last: without it, cut off mid-save
    return not any(safetensors_problem(p) for p in checkpoint.glob("*.safetensors"))


def last_checkpoint(folder: str | Path) -> str | None:
    """The newest intact Trainer checkpoint in `folder`, or None; a newer one that was cut off
    (no trainer_state.json, truncated weights: model_files.checkpoint_is_intact) is skipped
    with a warning naming it."""
    found = sorted(Path(folder).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    while found and not checkpoint_is_intact(found[-1]):
        warnings.warn(f"{found.pop()} was cut off mid-save; resuming from the one before", stacklevel=2)
    return str(found[-1]) if found else None
