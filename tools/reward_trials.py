"""The reward stage from one stage-2 model at several seeds: how often does rhyme take off?

    python tools/reward_trials.py runs/07-stage2-tiny/stage2/model --seeds 1 2 3 \
        [--set form_weight=1.0 max_steps=60] [--threads 1]

Each seed runs `reward_stage` (what notebook 13 and `--stages reward` run) with the tiny
profile's RewardConfig and the `--set` changes, and prints one JSON line: the held-out
rhyme-pair rate and distinct-2 before and after, the last step's KL and the seconds. The
comment on `form_weight` in utils/prefer/reward.py counts such runs. Two processes with one
thread each use a 2-core machine fully: run two of these side by side.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_changes(pairs: list[str]) -> dict:
    """["form_weight=0.5", "max_steps=60"] -> {"form_weight": 0.5, "max_steps": 60}."""
    changes = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if not value:
            raise SystemExit(f"error: --set takes name=value, got {pair!r}")
        changes[name] = ast.literal_eval(value)
    return changes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a stage-2 model folder (runs/<run>/stage2/model)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], help="RewardConfig changes, name=value")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if not (Path(args.model_dir) / "config.json").is_file():
        raise SystemExit(f"error: {args.model_dir} holds no model (config.json); pass a stage-2 model folder")
    changes = parse_changes(args.set)

    import torch

    from utils.config import get_profile
    from utils.data import prepare_data
    from utils.models import load_tokenizer
    from utils.pipeline.reward_stage import reward_stage
    from utils.prefer import reward

    if args.threads:
        torch.set_num_threads(args.threads)
    profile = get_profile("tiny")
    tok = load_tokenizer(profile)
    data = prepare_data(profile, tok)
    prompts, held_out = ([p for p, _ in data.instructions[split]] for split in ("train", "test"))
    for seed in args.seeds:
        cfg = reward.reward_config(profile, seed=seed, **changes)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            m = reward_stage(args.model_dir, tok, profile, Path(out) / "model", prompts, held_out,
                             cfg=cfg, verbose=False)
        print(json.dumps({"seed": seed, "changes": changes,
                          "rhyme": [round(m["rhyme_pair_rate_before"], 3), round(m["rhyme_pair_rate_after"], 3)],
                          "distinct_2": [round(m["distinct_2_before"], 3), round(m["distinct_2_after"], 3)],
                          "kl_last_step": round(m["kl_last_step"], 2),
                          "seconds": round(time.perf_counter() - start)}), flush=True)


if __name__ == "__main__":
    main()
