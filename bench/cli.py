"""Performance measurements: `python -m bench [--profile tiny] [--only NAME ...] [--json]`.

Each benchmark is a function registered with `@benchmark("name")`: it takes the parsed
arguments and returns a flat dict of results. `--json` prints one JSON object
{name: result, ...}; otherwise a small table per benchmark. Timings are medians over
`--repeats` runs, measured side by side in one process, and are never asserted by tests.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import torch

from bench.timing import side_by_side

BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict]] = {}
ONLY_WHEN_NAMED: set[str] = set()  # long sweeps: `--only NAME` runs them, a plain run does not


def benchmark(name: str, by_default: bool = True):
    """Register a benchmark under `name` (the key of its section in the JSON output)."""
    def register(fn):
        BENCHMARKS[name] = fn
        if not by_default:
            ONLY_WHEN_NAMED.add(name)
        return fn
    return register


# ---------------------------------------------------------------- beam search (notebook 03)

BEAM_PROMPTS = ("The moon above the harbour", "My grandmother kept", "Rain on the slate roof,",
                "User: Write a short poem about bread.\nAssistant:")


@benchmark("beam")
def beam_vs_generate(args) -> dict:
    """Our beam search against `model.generate` on the same model, prompts and settings."""
    from utils.env import pick_device
    from utils.generate.decoding import (
        as_generate_output,
        beam_search,
        context_length,
        encode_prompt,
    )
    from utils.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.profile, device=pick_device())
    model.eval()
    settings = dict(num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, length_penalty=1.0)
    prompts = [encode_prompt(tokenizer, p, args.max_new_tokens, context_length(model)).to(model.device)
               for p in BEAM_PROMPTS]

    def ours():
        return [as_generate_output(ids, beam_search(model, ids, **settings), tokenizer.pad_token_id)
                for ids in prompts]

    @torch.no_grad()
    def theirs():
        return [model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **settings).cpu()
                for ids in prompts]

    # The first run of each is a warm-up, and its outputs are the ones compared.
    identical = all(torch.equal(a, b) for a, b in zip(ours(), theirs()))
    seconds = side_by_side({"ours": ours, "hf": theirs}, args.repeats)
    return {"identical": identical, "ours_s": round(seconds["ours"], 4), "hf_s": round(seconds["hf"], 4),
            "ratio": round(seconds["ours"] / seconds["hf"], 3), "prompts": len(prompts),
            "num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
            "repeats": args.repeats, "profile": args.profile, "device": str(model.device)}


# ---------------------------------------------------------------- top-p sampling (utils/generate/nucleus.py)


@benchmark("sampling")
def sampling_top_p(args) -> dict:
    """generate_batched with our top-p against generate's own, one batch of the profile's
    decoding: the same seed, so the same texts; the sample questions of a DPO or reward stage."""
    from utils.config import get_profile
    from utils.env import pick_device
    from utils.generate import batched
    from utils.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.profile, device=pick_device())
    prompts = [p for p in BEAM_PROMPTS for _ in range(args.sampling_rows // len(BEAM_PROMPTS))]
    decode = get_profile(args.profile).decode

    def run(fast_top_p):
        return lambda: batched.generate_batched(model, tokenizer, prompts, decode, seed=0,
                                                batch_size=len(prompts), fast_top_p=fast_top_p)

    fns = {"ours": run(True), "hf": run(False)}
    identical = fns["ours"]() == fns["hf"]()  # also the warm-up
    seconds = side_by_side(fns, args.repeats)
    return {"identical": identical, "ours_s": round(seconds["ours"], 4), "hf_s": round(seconds["hf"], 4),
            "speedup": round(seconds["hf"] / seconds["ours"], 3), "rows": len(prompts),
            "max_new_tokens": decode.max_new_tokens, "top_p": decode.top_p, "repeats": args.repeats,
            "threads": torch.get_num_threads(), "profile": args.profile, "device": str(model.device)}


# ---------------------------------------------------------------- efficient training (notebook 11)


def _efficiency_section(name: str):
    def run(args) -> dict:
        from bench.pipeline import bench_sections

        return bench_sections()[name]()
    run.__doc__ = f"The `{name}` measurement of bench.pipeline (CPU)."
    return run


for _name in ("padding", "throughput", "memory"):
    BENCHMARKS[_name] = _efficiency_section(_name)


# ---------------------------------------------------------------- pretraining (notebook 04b)


@benchmark("pretrain")
def pretraining(args) -> dict:
    """The pocket loop's tokens/s and MFU by lever; nanoGPT's CPU recipe at equal wall time."""
    from bench.pretrain import pretrain_bench

    return pretrain_bench(seconds=args.seconds, steps=args.pretrain_steps, rounds=args.repeats)


@benchmark("pretrain-shapes", by_default=False)  # 5 shapes x --seconds each
def pretraining_shapes(args) -> dict:
    """Candidate shapes for the pocket checkpoint, each trained for --seconds: held-out loss."""
    from bench.pretrain_sweeps import shape_sweep

    return shape_sweep(seconds=args.seconds)


@benchmark("pretrain-dropout", by_default=False)  # 2 rates x --seconds each
def pretraining_dropout(args) -> dict:
    """Dropout 0 against 0.1 when the data repeats as in the full run: held-out loss."""
    from bench.pretrain_sweeps import dropout_probe

    return dropout_probe(seconds=args.seconds)


# ---------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default=None, help="profile name (default: $POET_PROFILE or tiny)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME",
                        help=f"run only these benchmarks: {', '.join(sorted(BENCHMARKS))}")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--output", default=None,
                        help="also write the results, with the machine and date, to this JSON file")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=30)
    parser.add_argument("--sampling-rows", type=int, default=32,
                        help="sampling: rows in the batch (32: a DPO or reward stage's batch)")
    parser.add_argument("--seconds", type=float, default=180.0,
                        help="pretrain: wall time of each recipe in the race (0: skip the race); "
                             "pretrain-shapes, pretrain-dropout: of each run")
    parser.add_argument("--pretrain-steps", type=int, default=2,
                        help="pretrain: optimizer steps of a setting's turn; the settings take "
                             "--repeats turns each (after one warm-up step)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.seconds < 0 or args.pretrain_steps < 1:
        parser.error(f"--seconds must be >= 0 and --pretrain-steps >= 1, "
                     f"got {args.seconds} and {args.pretrain_steps}")
    from utils.config import get_profile

    args.profile = get_profile(args.profile).name
    return args


def print_table(results: dict) -> None:
    """One block per benchmark: its keys and values, aligned."""
    for name, result in results.items():
        for part in result if isinstance(result, list) else [result]:  # throughput: one per model
            print(f"== {name}")
            width = max(map(len, part))
            for key, value in part.items():
                print(f"  {key:<{width}}  {value}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    names = args.only or [name for name in BENCHMARKS if name not in ONLY_WHEN_NAMED]
    results = {name: BENCHMARKS[name](args) for name in names}
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)
    if args.output:
        write_results(args.output, results)
    return results


def write_results(path, results: dict) -> None:
    """Save results with what they were measured on: machine, CPU count, GPU, versions, date."""
    import os
    import platform

    from utils.env import gpu_summary, library_versions

    record = {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
              "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "gpu": gpu_summary(), "versions": library_versions(), "results": results}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2)
