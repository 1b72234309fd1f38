"""Run options: what a pipeline run takes, as typed dataclasses whose field help is the CLI's help.

`python -m utils.pipeline` parses its flags into a RunSpec (which profile, stages and run
folder) and RunOptions (how the run goes); notebooks and the sweep build the same dataclasses
and call `utils.pipeline.run`, never a command line. Each field's `help` metadata is the text
of its `--flag`, so the two cannot drift apart. Introduced in the README's quickstart.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field

from utils.config import CONTAMINATION_DROPS, PROFILES, Profile

STAGE_NAMES = ("data", "stage1", "merge", "stage2", "evaluate", "report", "prefer", "reward")  # run order
NAMED_ONLY = ("prefer", "reward")  # stage 3 (DPO) and the reward stage run only when asked for
DEFAULT_STAGES = tuple(s for s in STAGE_NAMES if s not in NAMED_ONLY)
PACKING = ("auto", "on", "off")


def _flag(default, help: str, **argparse_kwargs):
    """A dataclass field whose metadata becomes its command-line flag (help, choices, ...)."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass(frozen=True)
class RunSpec:
    """Which profile, which stages and which run folder (the CLI's part; the API takes them apart)."""

    profile: str | None = _flag(None, f"one of {', '.join(PROFILES)} (default: $POET_PROFILE or tiny)")
    stages: str = _flag(",".join(DEFAULT_STAGES), f"comma-separated, from: {', '.join(STAGE_NAMES)} "
                                                  "(prefer: stage 3, DPO; reward: the rhyme reward; "
                                                  "both only when named)")
    run_name: str | None = _flag(None, "folder under runs/ (default: <profile>-<date>-<time>)")
    runs_dir: str | None = _flag(None, "where run folders live (default: $POET_RUNS_DIR or runs/)")


@dataclass(frozen=True)
class RunOptions:
    """How one run goes: resuming, where stage 2 starts, hyperparameter overrides, sizes."""

    overwrite: bool = _flag(False, "delete an existing run folder of the same name first")
    resume: bool = _flag(False, "continue an existing run folder; training stages restart from "
                                "their last checkpoint")
    allow_changed_settings: bool = _flag(False, "with --resume: train on with settings that differ "
                                                "from the run's config.json (recorded there)")
    from_run: str | None = _flag(None, "stage 2 starts from this run's stage 1 (merged) model")
    epochs: float | None = _flag(None, "num_train_epochs of both stages (clears max_steps)")
    max_steps: int | None = _flag(None, "optimizer steps of each training stage")
    learning_rate: float | None = _flag(None, "learning rate of each training stage")
    save_steps: int | None = _flag(None, "checkpoint every N steps (default: eval_steps)")
    packing: str = _flag("auto", "stage 2 batches: pack examples where attention keeps them "
                                 "apart (auto), or pad", choices=PACKING)
    num_samples: int = _flag(4, "sample generations written to samples.jsonl")
    max_rows: int | None = _flag(None, "use at most N rows of every split (smoke runs)")
    data_dir: str | None = _flag(None, "local copies of both datasets (parquet, jsonl or csv)")
    drop_contaminated: str | None = _flag(
        None, "drop stage-1 poems or stage-2 rows that overlap the other dataset (default: none)",
        choices=CONTAMINATION_DROPS)
    # Stage 3 (prefer, DPO) has its own settings (utils/prefer/dpo.py's PreferenceConfig):
    # --max-steps and --learning-rate set stages 1 and 2 only.
    prefer_max_steps: int | None = _flag(None, "prefer (DPO): optimizer steps (default: the "
                                               "profile's PreferenceConfig)")
    prefer_learning_rate: float | None = _flag(None, "prefer (DPO): learning rate (default: the "
                                                     "profile's PreferenceConfig)")
    prefer_beta: float | None = _flag(None, "prefer (DPO): beta, how strongly the tuned model is "
                                            "held near the stage-2 model (default 0.1)")
    # The reward stage's settings (utils/prefer/reward.py's RewardConfig), likewise its own.
    reward_max_steps: int | None = _flag(None, "reward: policy-gradient steps (default: the "
                                               "profile's RewardConfig)")
    reward_learning_rate: float | None = _flag(None, "reward: learning rate (default: the "
                                                     "profile's RewardConfig)")
    reward_beta: float | None = _flag(None, "reward: weight of the KL penalty to the stage-2 "
                                            "model (default 0.04)")
    rehearse: bool = _flag(False, "a real profile's architecture with random weights, a few steps of every "
                                  "stage at batch 1 (--max-steps, default 2; --max-rows, default 8), "
                                  "offline: peak memory per stage against the calculator, tokens/s "
                                  "and the full run's estimated time; nothing is learned")

    def __post_init__(self):
        if self.packing not in PACKING:
            raise ValueError(f"packing must be one of {', '.join(PACKING)}, got {self.packing!r}")
        check_numbers(self)

    def apply(self, profile: Profile) -> Profile:
        """The profile with epochs, max_steps and learning_rate applied to both stages, and the
        data options (local copies, contamination drops) to its data."""
        changes = {}
        if self.epochs is not None:
            changes.update(num_train_epochs=self.epochs, max_steps=-1)
        if self.max_steps is not None:
            changes["max_steps"] = self.max_steps
        if self.learning_rate is not None:
            changes["learning_rate"] = self.learning_rate
        profile = profile.replace(stage1=changes, stage2=changes) if changes else profile
        data = {k: v for k, v in (("data_dir", self.data_dir),
                                  ("drop_contaminated", self.drop_contaminated)) if v is not None}
        return profile.replace(data=data) if data else profile

    def preference_changes(self) -> dict:
        """The PreferenceConfig fields the prefer flags set ({} when none is given)."""
        given = {"max_steps": self.prefer_max_steps, "learning_rate": self.prefer_learning_rate,
                 "beta": self.prefer_beta}
        return {k: v for k, v in given.items() if v is not None}

    def reward_changes(self) -> dict:
        """The RewardConfig fields the reward flags set ({} when none is given)."""
        given = {"max_steps": self.reward_max_steps, "learning_rate": self.reward_learning_rate,
                 "beta": self.reward_beta}
        return {k: v for k, v in given.items() if v is not None}


# The smallest value each number may take; None: not given, the profile's value holds.
MINIMA = {"epochs": 0.0, "learning_rate": 0.0, "max_steps": 1, "save_steps": 1, "max_rows": 1,
          "num_samples": 0, "prefer_max_steps": 1, "prefer_learning_rate": 0.0, "prefer_beta": 0.0,
          "reward_max_steps": 1, "reward_learning_rate": 0.0,
          "reward_beta": 0}  # an int bound: 0 itself is allowed (no KL penalty)


def check_numbers(options: "RunOptions") -> None:
    """Refuse NaN, infinite, zero or negative numbers before any work (ValueError naming the flag)."""
    for name, low in MINIMA.items():
        value = getattr(options, name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value!r}")
        too_small = value <= low if isinstance(low, float) else value < low
        if too_small:
            bound = f"above {low:g}" if isinstance(low, float) else f"at least {low}"
            raise ValueError(f"{flag} must be {bound}, got {value!r}")


def check_stages(names) -> list[str]:
    """Stage names (a list, or a comma-separated string), or a ValueError naming the valid ones."""
    names = [s.strip() for s in (names.split(",") if isinstance(names, str) else names) if s.strip()]
    for name in names:
        if name not in STAGE_NAMES:
            raise ValueError(f"unknown stage {name!r}; valid stages: {', '.join(STAGE_NAMES)}")
    if not names:
        raise ValueError(f"no stage given; valid stages: {', '.join(STAGE_NAMES)}")
    ordered = [name for name in STAGE_NAMES if name in names]  # each once, in the pipeline's order
    if ordered != names:
        print(f"note: stages run in the pipeline's order: {','.join(ordered)} "
              f"(given: {','.join(names)})")
    return ordered


# ---------------------------------------------------------------- dataclass <-> argparse


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One `--field-name` flag per field of a dataclass, typed and helped by the field itself."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag, extra = "--" + f.name.replace("_", "-"), dict(f.metadata)
        if hints[f.name] is bool:
            parser.add_argument(flag, action="store_true", **extra)
            continue
        kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
        parser.add_argument(flag, type=kind, default=f.default, **extra)


def from_namespace(cls, args: argparse.Namespace):
    """An instance of a dataclass from the parsed flags that add_arguments made for it."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
