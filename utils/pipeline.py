"""The headless main job: `python -m utils.pipeline [--profile tiny] [--stages data,...]`.

Each stage is a function `stage(ctx)` registered in STAGES, run in the order given; a run's
files go to runs/<run_name>/. Introduced in the README's quickstart.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import PROFILES, Profile, get_profile, runs_dir


@dataclass
class Context:
    """What the stages share: the profile, the run folder, the tokenizer and the data."""

    profile: Profile
    run_dir: Path
    args: argparse.Namespace
    state: dict = field(default_factory=dict)

    def save_json(self, name: str, obj) -> Path:
        """Write obj as pretty JSON into the run folder (atomically: no half-written file)."""
        path = self.run_dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
        tmp.replace(path)
        return path


def stage_data(ctx: Context) -> None:
    """Load, clean, split and tokenize-check both datasets; print and save the data report."""
    from .data import prepare_data
    from .modeling import load_tokenizer

    tokenizer = ctx.state.setdefault("tokenizer", load_tokenizer(ctx.profile))
    prepared = prepare_data(ctx.profile, tokenizer)
    ctx.state["data"] = prepared
    print_data_report(prepared.report)
    ctx.save_json("data_report.json", prepared.report)


def print_data_report(report: dict) -> None:
    """A short human-readable summary of prepare_data's report."""
    p, ins = report["poems"], report["instructions"]
    print(f"poems: {p['rows_read']} read, {p['empty_poems_dropped']} empty and "
          f"{p['duplicates_dropped']} duplicates dropped, {p['rows_kept']} kept "
          f"-> train {p['train']} / validation {p['validation']}")
    print(f"instructions read: {ins['rows_read']}")
    for row in ins["leakage"]:
        print(f"  leakage {row['split_a']}/{row['split_b']}: {row['shared_exact']} exact, "
              f"{row['shared_normalised']} after normalising")
    print(f"  duplicates removed: {ins['duplicates_removed']}")
    print(f"  over max_length={ins['max_length']} dropped: {ins['over_max_length_dropped']}")
    print(f"  no Assistant turn dropped: {ins['no_assistant_dropped']}")
    print(f"instructions kept: {ins['rows_kept']}")


STAGES = {"data": stage_data}
DEFAULT_STAGES = ("data",)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m utils.pipeline", description=__doc__)
    parser.add_argument("--profile", default=None,
                        help=f"one of {', '.join(PROFILES)} (default: $POET_PROFILE or tiny)")
    parser.add_argument("--stages", default=",".join(DEFAULT_STAGES),
                        help=f"comma-separated, from: {', '.join(STAGES)}")
    parser.add_argument("--run-name", default=None, help="folder under runs/ (default: profile-time)")
    parser.add_argument("--runs-dir", default=None,
                        help="where run folders live (default: $POET_RUNS_DIR or runs/)")
    return parser.parse_args(argv)


def check_stages(text: str) -> list[str]:
    """The stage names asked for, or a ValueError naming the unknown one and the valid ones."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    for name in names:
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; valid stages: {', '.join(STAGES)}")
    if not names:
        raise ValueError(f"no stage given; valid stages: {', '.join(STAGES)}")
    return names


def main(argv=None) -> Context:
    args = parse_args(argv)
    profile = get_profile(args.profile)
    stages = check_stages(args.stages)
    run_name = args.run_name or f"{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.runs_dir or runs_dir()) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(profile, run_dir, args)
    print(f"profile {profile.name}: {profile.description}\nrun folder: {run_dir}")
    for name in stages:
        start = time.perf_counter()
        print(f"\n== stage {name} ==")
        STAGES[name](ctx)
        print(f"stage {name} done in {time.perf_counter() - start:.1f} s")
    return ctx


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:  # bad input: a clear one-line message, not a traceback
        sys.exit(f"error: {error}")
