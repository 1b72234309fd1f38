"""Who may touch a run folder: what --overwrite may delete, one writer at a time, safe resumes.

Checked by utils/pipeline/job.py before any stage writes (tests/README.md, the bad-input
catalogue, lists every refusal):
- `--overwrite` deletes only a folder that is a run (its config.json names a profile), never
  the run that `--from-run` reads, and never a run another notebook made (`owner`; notebook
  07's parameters cell checks its RUN_NAME);
- one process writes a run at a time: a lock file names its holder (pid, host, time), and a
  lock whose holder is gone is stale and taken over;
- `--resume` continues only a run that exists, with the settings it started with, unless
  `--allow-changed-settings` says otherwise (the changes are then recorded in config.json);
- `--from-run` reads only a run of the same architecture and tokenizer as the profile.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from utils.config import Profile
from utils.runs import registry

LOCK = ".lock"
# A folder holding only these was made by a run that failed before it trained anything.
LEFTOVERS = {registry.CONFIG, "data_report.json", LOCK}
# What stage 2 of one run may take from another: the same model family and vocabulary.
COMPATIBLE_KEYS = ("architecture", "model_name_or_path", "pretrained_dir")


class RunGuardError(ValueError):
    """A run-folder operation that would lose or mix up a run; the message says what to do."""


def read_config(run_dir: Path) -> dict | None:
    """A run's config.json as a dict; None when absent; RunGuardError naming it when unreadable."""
    return registry.read_json(Path(run_dir) / registry.CONFIG, error=RunGuardError)


def is_run_folder(path: Path) -> bool:
    """True for a folder a pipeline run made: its config.json names a profile."""
    try:
        config = read_config(path)
    except RunGuardError:
        return (Path(path) / registry.CONFIG).exists()  # a run with a broken config is still a run
    return isinstance(config, dict) and isinstance(config.get("profile"), dict)


def is_leftover(run_dir: Path) -> bool:
    """True for a run that stopped before it trained: only config.json and the data report,
    and no "finished" in config.json. Reusing its name loses nothing."""
    run_dir = Path(run_dir)
    names = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if not (names and names <= LEFTOVERS and is_run_folder(run_dir)):
        return False
    return "finished" not in (read_config(run_dir) or {})


def clear_run_dir(run_dir: Path) -> None:
    """Delete everything in a run folder except its lock (the caller checked it is a run)."""
    for child in Path(run_dir).iterdir():
        if child.name == LOCK:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def check_overwrite(run_dir: Path, from_run: Path | None = None, owner: str | None = None) -> None:
    """Refuse an --overwrite that would delete a non-run folder, the --from-run source, or a
    run made by another writer than `owner` (a notebook's name; None: utils.pipeline, which may
    replace pipeline runs but not a notebook's)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunGuardError(f"{run_dir} is a file, not a run folder; choose another --run-name "
                            "or --runs-dir")
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return
    if from_run is not None and run_dir.resolve() == Path(from_run).resolve():
        raise RunGuardError(f"--overwrite would delete run {run_dir.name!r}, which --from-run "
                            "reads; give the new run another --run-name")
    if not is_run_folder(run_dir):
        raise RunGuardError(f"{run_dir} is not a run folder (it has no {registry.CONFIG} naming a "
                            "profile), so --overwrite will not delete it; move it away or choose "
                            "another --run-name")
    made_by, owner = made_by_of(run_dir), owner or "utils.pipeline"
    if made_by != owner:
        raise RunGuardError(f"run {run_dir.name!r} was made by {made_by}, not {owner}; overwriting "
                            f"it would delete {made_by}'s models. Choose another run name")


def made_by_of(run_dir: Path) -> str:
    """Which notebook made a run (config.json's "notebook"), else "utils.pipeline"."""
    try:
        config = read_config(run_dir) or {}
    except RunGuardError:
        return "an unknown writer"
    return config.get("notebook") or "utils.pipeline"


# ---------------------------------------------------------------- one writer per run


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def lock_is_stale(holder: dict) -> bool:
    """True when the lock's holder is gone: a process of this host that no longer runs.

    A lock from another host (a shared drive) is never stale here: its process cannot be seen.
    """
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return True  # unreadable: written by no live writer of ours
    return holder.get("host") == socket.gethostname() and not _alive(holder["pid"])


def acquire_lock(run_dir: Path) -> Path:
    """Take the run's lock file, or RunGuardError naming the live holder. Returns the lock path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text(encoding="utf-8") or "null")
            except (OSError, ValueError):
                holder = None
            if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                return path  # this process already holds it (a second stage call)
            if not lock_is_stale(holder):
                raise RunGuardError(
                    f"run {run_dir.name!r} is being written by process {holder['pid']} on "
                    f"{holder['host']} since {holder.get('started')}; wait for it to finish, or "
                    f"delete {path} if that process is gone") from None
            path.unlink(missing_ok=True)  # the holder died: take the lock over
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(_holder(), file)
        return path
    raise RunGuardError(f"could not take the lock {path}; delete it if no run is writing there")


def release_lock(run_dir: Path) -> None:
    """Drop the lock if this process holds it."""
    path = Path(run_dir) / LOCK
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------- resume and --from-run


def same_setting(a, b) -> bool:
    """Equal, or one repository path written absolute (a run from before the course folder was
    moved, or from an older version) and relative (utils.config writes repository paths so)."""
    if a == b:
        return True
    if not (isinstance(a, str) and isinstance(b, str)) or os.path.isabs(a) == os.path.isabs(b):
        return False
    relative, absolute = (Path(a), Path(b)) if os.path.isabs(b) else (Path(b), Path(a))
    return absolute.parts[-len(relative.parts):] == relative.parts


def setting_changes(old: dict, new: dict, prefix: str = "") -> dict:
    """{dotted key: [old, new]} for every value that differs between two profile dicts."""
    changes = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes.update(setting_changes(a, b, f"{prefix}{key}."))
        elif not same_setting(a, b):
            changes[prefix + key] = [a, b]
    return changes


# Run options that change what a run computes (the profile holds the others: epochs, max_steps,
# learning_rate, data_dir, drop_contaminated). --resume compares them with config.json's.
RESULT_OPTIONS = ("from_run", "packing", "max_rows", "prefer_max_steps", "prefer_learning_rate",
                  "prefer_beta", "reward_max_steps", "reward_learning_rate", "reward_beta")


def option_changes(config: dict, options: dict | None) -> dict:
    """{"options.<name>": [old, new]} for the RESULT_OPTIONS that differ from config.json's
    (a run whose config.json records no options has nothing to compare)."""
    old = config.get("options")
    if not isinstance(old, dict) or options is None:
        return {}
    return {f"options.{name}": [old.get(name), options.get(name)] for name in RESULT_OPTIONS
            if not same_setting(old.get(name), options.get(name))}


def check_resume(run_dir: Path, profile: Profile, allow_changes: bool = False,
                 options: dict | None = None) -> dict:
    """Refuse --resume of a missing run, or with changed settings unless allow_changes.

    The settings are the profile and the run options that change results (`options`, as a
    dict). Returns the changes ({dotted key: [old, new]}); the caller records them in config.json.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if config is None:
        raise RunGuardError(f"--resume: run {run_dir.name!r} does not exist in {run_dir.parent} "
                            "(no config.json); drop --resume to start it")
    changes = setting_changes(config.get("profile") or {}, profile.to_dict())
    changes.update(option_changes(config, options))
    if changes and not allow_changes:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a_b in changes.items() for a, b in [a_b])
        raise RunGuardError(f"--resume with settings that differ from {run_dir / registry.CONFIG}"
                            f" ({listed}); resume without changing them, or pass "
                            "--allow-changed-settings to train on with the new ones (recorded in "
                            "config.json)")
    return changes


def record_resume(run_dir: Path, profile: Profile, changes: dict, options: dict | None = None) -> None:
    """config.json gets the profile (and options) the run now trains with and a list of its resumes."""
    config = read_config(run_dir) or {}
    config.setdefault("resumes", []).append({"at": time.strftime("%Y-%m-%d %H:%M:%S"),
                                             "changed": changes})
    if changes:
        config["profile"] = profile.to_dict()
        if options is not None:
            config["options"] = options
    registry.write_json_atomic(Path(run_dir) / registry.CONFIG, config)


def check_from_run(source: Path, profile: Profile) -> None:
    """Refuse a --from-run source whose architecture or tokenizer differs from the profile's."""
    config = read_config(source) or {}
    theirs = (config.get("profile") or {}).get("model") or {}
    ours = profile.to_dict()["model"]
    differ = [k for k in COMPATIBLE_KEYS if not same_setting(theirs.get(k), ours.get(k))]
    if differ:
        listed = ", ".join(f"{k} {theirs.get(k)!r} vs {ours.get(k)!r}" for k in differ)
        raise RunGuardError(
            f"--from-run {Path(source).name!r} was trained with profile "
            f"{(config.get('profile') or {}).get('name')!r}, whose model differs from profile "
            f"{profile.name!r} ({listed}); its weights and tokenizer do not fit. Pass the same "
            "--profile as that run, or start from a run of this profile")
