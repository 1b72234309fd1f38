"""The run registry: one folder per run under runs/, written so that a crash never half-writes it.

runs/<run_name>/
    config.json        profile, hyperparameters, library versions, git commit, command line
    log_history.json   {"stage1": [...], "stage2": [...]}: the Trainer's log entries
    metrics.json       {"stage1": {...}, "merge": {...}, "stage2": {...}, "eval": {...}}
    samples.jsonl      generations, one JSON object a line, tagged with the model that wrote them
    stage1/adapter/    the LoRA adapter (save_pretrained, safetensors)
    merged/            base + adapter folded together (save_pretrained, safetensors)
    stage2/model/      the fully fine-tuned model (save_pretrained, safetensors)
    stage*/checkpoints/  Trainer checkpoints that `resume_from_checkpoint` reads
Introduced in notebook 06; `python -m utils.pipeline` writes it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

from utils.config import REPO_ROOT, Profile, get_profile, runs_dir
from utils.models.files import storage_error

CONFIG, LOG_HISTORY, METRICS, SAMPLES = "config.json", "log_history.json", "metrics.json", "samples.jsonl"
STAGE1_ADAPTER, MERGED, STAGE2_MODEL = "stage1/adapter", "merged", "stage2/model"
STAGE3_MODEL = "stage3/model"  # stage 3 (prefer, DPO): the preference-tuned model
REWARD_MODEL = "reward/model"  # the reward stage: the model tuned on the rhyme reward
MODEL_FOLDERS = {"stage3": STAGE3_MODEL, "stage2": STAGE2_MODEL, "merged": MERGED}  # newest first
CHECKPOINTS = {"stage1": "stage1/checkpoints", "stage2": "stage2/checkpoints"}
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RunExistsError(FileExistsError):
    """The run folder is already there; the message names --overwrite and --resume."""


class RunNotFoundError(FileNotFoundError):
    """A run (or a stage's output inside it) that was asked for does not exist."""


# ---------------------------------------------------------------- writing files safely


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write text to a temporary file beside `path`, then rename it over `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # pid: two writers never share a tmp
    try:
        tmp.write_text(text, encoding="utf-8")
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise storage_error(error, path.parent) from error
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | Path, obj) -> Path:
    """Pretty JSON, written atomically: a reader sees the old file or the new one, never half."""
    text = json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def json_safe(obj):
    """obj with NaN and infinite floats as the strings "nan", "inf", "-inf" (float() reads them)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def read_json(path: str | Path, default=None, error: type[Exception] = ValueError):
    """The JSON object in `path`, or `default` when the file does not exist.

    The one reader of the run folder's JSON files: a broken file, or one that holds something
    other than an object, raises `error` (a ValueError by default) naming the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        return default
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as problem:
        raise error(f"{path} is not valid JSON ({problem}); repair or delete it") from None
    if not isinstance(data, dict):
        raise error(f"{path} holds {type(data).__name__}, not a JSON object; repair or delete it")
    return data


# ---------------------------------------------------------------- run folders


def check_run_name(name: str) -> str:
    """A run name must be one plain folder name (letters, digits, '.', '_', '-')."""
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name) or len(name) > 100:
        raise ValueError(f"run name {name!r} must be a plain folder name of at most 100 "
                         "characters: letters, digits, '.', '_', '-'")
    return name


def run_path(name: str, root: str | Path | None = None) -> Path:
    """runs/<name> (under $POET_RUNS_DIR or `root`), whether or not it exists."""
    return Path(root or runs_dir()) / check_run_name(name)


def list_runs(root: str | Path | None = None) -> list[str]:
    """Names of the run folders that have a config.json, sorted."""
    root = Path(root or runs_dir())
    return sorted(p.parent.name for p in root.glob(f"*/{CONFIG}")) if root.exists() else []


def check_new_run(run_dir: Path, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse an existing run folder unless --overwrite (start again) or --resume (continue it)."""
    if run_dir.exists() and any(run_dir.iterdir()) and not (overwrite or resume):
        raise RunExistsError(
            f"run folder {run_dir} already exists; pass --overwrite to replace it, --resume to "
            "continue it from its last checkpoint, or choose another --run-name")


def prepare_run_dir(run_dir: Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create the run folder; with overwrite (and not resume) delete the old one first, but only
    if it is a run (it has a config.json): any other folder is refused, never deleted."""
    check_new_run(run_dir, overwrite, resume)
    if overwrite and not resume and run_dir.exists():
        if not (run_dir / CONFIG).exists() and any(run_dir.iterdir()):
            raise RunExistsError(f"{run_dir} is not a run folder (no {CONFIG}), so it is not "
                                 "deleted; move it away or choose another run name")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def find_run(name: str, root: str | Path | None = None) -> Path:
    """The folder of an existing run, or RunNotFoundError listing the runs there are."""
    path = run_path(name, root)
    if not (path / CONFIG).exists():
        known = ", ".join(list_runs(root)) or "none yet"
        raise RunNotFoundError(f"run {name!r} not found in {path.parent} (existing runs: {known})")
    return path


# ---------------------------------------------------------------- the registry files


def git_commit(root: Path = REPO_ROOT) -> str:
    """The checked-out commit, read from .git without running git ('unknown' outside a clone)."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return "unknown"


def write_config(run_dir: Path, profile: Profile, **extra) -> dict:
    """config.json: the profile (hyperparameters of both stages), versions, commit, command."""
    from utils.env import library_versions

    config = {"profile": profile.to_dict(), "library_versions": library_versions(),
              "git_commit": git_commit(), "command": " ".join(sys.argv),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}
    write_json_atomic(Path(run_dir) / CONFIG, config)
    return config


def update_section(run_dir: Path, filename: str, section: str, values) -> dict:
    """Set one top-level key of a registry JSON file; dict values merge into what is there."""
    path = Path(run_dir) / filename
    data = read_json(path, {})
    if isinstance(values, dict) and isinstance(data.get(section), dict):
        values = {**data[section], **values}
    data[section] = values
    write_json_atomic(path, data)
    return data


def update_metrics(run_dir: Path, section: str, values: dict) -> dict:
    """Merge `values` into metrics.json[section] (other sections and keys are kept)."""
    return update_section(run_dir, METRICS, section, values)


def save_log_history(run_dir: Path, stage: str, history: list[dict]) -> dict:
    """Store a stage's Trainer log_history under its name in log_history.json."""
    return update_section(run_dir, LOG_HISTORY, stage, list(history))


def write_samples(run_dir: Path, model: str, rows: list[dict]) -> Path:
    """Replace the samples.jsonl lines of `model` with `rows` (lines of other models are kept)."""
    path = Path(run_dir) / SAMPLES
    kept = [r for r in read_samples(run_dir) if r.get("model") != model]
    lines = [json.dumps(r, ensure_ascii=False) for r in kept + [{"model": model, **r} for r in rows]]
    return write_text_atomic(path, "".join(line + "\n" for line in lines))


def read_samples(run: str | Path) -> list[dict]:
    """Every JSON-object line of a run's samples.jsonl (give the run folder or the file).

    The one reader of samples files: an empty list when there is none; a line that is not a
    JSON object (a crash mid-write, a hand edit) is skipped with a warning naming its number.
    """
    path = Path(run)
    path = path / SAMPLES if path.is_dir() else path
    if not path.exists():
        return []
    rows, skipped = [], []
    for n, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if isinstance(record, dict):
            rows.append(record)
        else:
            skipped.append(n)
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} line(s) that are not JSON objects "
                      f"(lines {skipped[:10]})", stacklevel=2)
    return rows


# ---------------------------------------------------------------- which model a run has


def latest_model(run_dir: Path, stages=("stage2", "merged")) -> tuple[str, Path] | None:
    """(stage, folder) of the newest full model a run saved, trying `stages` in order; else None.

    stage2/model (stage 2's result) comes before merged/ (stage 1 folded into the base).
    """
    for stage in stages:
        folder = Path(run_dir) / MODEL_FOLDERS[stage]
        if (folder / "config.json").exists():
            return stage, folder
    return None


def stage1_model_source(run_dir: Path) -> Path | None:
    """Where stage 2 can start from in a run: its merged model, else its stage-1 adapter, else None."""
    for sub in (MERGED, STAGE1_ADAPTER):
        if (Path(run_dir) / sub).exists():
            return Path(run_dir) / sub
    return None


def final_model_paths(profile: Profile | str | None = None, root=None) -> dict[str, Path]:
    """{run: folder of its latest model (stage2/model, else merged)} for runs of this profile.
    Notebook 08."""
    name, root, found = get_profile(profile).name, Path(root or runs_dir()), {}
    for run in list_runs(root):
        try:
            config = read_json(root / run / CONFIG, {})
        except (OSError, ValueError):
            continue  # runs_table warns about broken runs; here they simply have no model
        if not isinstance(config, dict) or config.get("profile", {}).get("name") != name:
            continue  # another architecture or tokenizer: not comparable on the same footing
        model = latest_model(root / run)
        if model:
            found[run] = model[1]
    return found


# ---------------------------------------------------------------- the report


