"""The headless main job: `python -m utils.pipeline [--profile tiny] [--stages data,stage1,...]`.

Stages, in order: data, stage1 (LoRA on poems), merge (fold the adapter into the weights),
stage2 (full fine-tuning on instructions), evaluate (loss, perplexity, samples) and report.
Each stage is a function `stage(ctx)` in STAGES; a run's files go to runs/<run_name>/ (see
utils/registry.py). The same command runs on several processes:
`torchrun --nproc_per_node 2 -m utils.pipeline ...` or `accelerate launch --multi_gpu
--num_processes 2 -m utils.pipeline ...` (gloo on CPUs, nccl on GPUs). Introduced in the
README's quickstart.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import registry
from .config import PROFILES, Profile, get_profile, runs_dir


@dataclass
class Context:
    """What the stages share: the profile, the run folder, the parsed flags and loaded objects."""

    profile: Profile
    run_dir: Path
    args: argparse.Namespace
    state: dict = field(default_factory=dict)
    is_main: bool = True  # the process that writes the registry (rank 0 under torchrun)

    def save_json(self, name: str, obj) -> Path:
        """Write obj as pretty JSON into the run folder (atomically: no half-written file)."""
        return registry.write_json_atomic(self.run_dir / name, obj)

    def tokenizer(self):
        """The profile's tokenizer, loaded once."""
        from .modeling import load_tokenizer

        if "tokenizer" not in self.state:
            self.state["tokenizer"] = load_tokenizer(self.profile)
        return self.state["tokenizer"]

    def data(self):
        """The prepared data, from the data stage or prepared now without printing."""
        from .data import prepare_data

        if "data" not in self.state:
            self.state["data"] = limit_rows(prepare_data(self.profile, self.tokenizer()),
                                            self.args.max_rows)
        return self.state["data"]


def limit_rows(prepared, max_rows: int | None):
    """The prepared data with at most max_rows rows per split (--max-rows: quick smoke runs)."""
    if max_rows:
        prepared.poems = {k: v[:max_rows] for k, v in prepared.poems.items()}
        prepared.instructions = {k: v[:max_rows] for k, v in prepared.instructions.items()}
    return prepared


# ---------------------------------------------------------------- stages


def stage_data(ctx: Context) -> None:
    """Load, clean, split and tokenize-check both datasets; print and save the data report."""
    prepared = ctx.data()
    print_data_report(prepared.report)
    if ctx.is_main:
        ctx.save_json("data_report.json", prepared.report)


def print_data_report(report: dict) -> None:
    """A short human-readable summary of prepare_data's report."""
    p, ins = report["poems"], report["instructions"]
    print(f"poems: {p['rows_read']} read, {p['blank_rows_dropped']} blank rows, "
          f"{p['empty_poems_dropped']} empty and "
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
    print(f"contamination (stage-2 answers overlapping stage-1 poems): {report['contamination']}")


def stage_stage1(ctx: Context) -> None:
    """LoRA domain adaptation on packed blocks of poems; saves the adapter (notebook 06)."""
    from .data import SFTCollator
    from .env import set_seed
    from .modeling import apply_lora, count_parameters, load_model, trainable_parameter_line
    from .training import build_trainer, lm_blocks, split_loss, train

    tok, poems, profile = ctx.tokenizer(), ctx.data().poems, ctx.profile
    block = profile.data.max_length
    train_rows, info = lm_blocks(poems["train"], tok, block)
    val_rows, val_info = lm_blocks(poems["validation"], tok, block)
    print(f"{info['tokens']:,} training tokens -> {info['blocks']} blocks of {block}; "
          f"the last {info['dropped_tokens']} tokens do not fill a block and are dropped")
    model = load_model(profile, tokenizer=tok)
    set_seed(profile.stage1.seed)  # LoRA's A matrices start random: the same seed, the same start
    model = apply_lora(model, profile)
    print(trainable_parameter_line(model))
    trainer = build_trainer(model, profile.stage1, ctx.run_dir / registry.CHECKPOINTS["stage1"],
                            train_rows, val_rows, SFTCollator(tok.pad_token_id), tok,
                            save_steps=ctx.args.save_steps)
    summary = train(trainer, resume=ctx.args.resume)
    ctx.state["stage1_model"] = model
    if not ctx.is_main:
        return
    trainable, total = count_parameters(model)
    # The Trainer evaluates at the last step (PoetTrainer.evaluate: loss per token); only a run
    # resumed after its end has no such entry and computes it here.
    val_loss = summary.pop("last_eval_loss") or split_loss(model, val_rows, tok.pad_token_id)
    metrics = {"trainable_params": trainable, "all_params": total,
               "train_loss": summary.pop("train_loss"), "val_loss": val_loss,
               "train_blocks": info["blocks"], "validation_blocks": val_info["blocks"],
               "block_size": block, "dropped_tokens": info["dropped_tokens"], **summary}
    model.save_pretrained(ctx.run_dir / registry.STAGE1_ADAPTER)
    tok.save_pretrained(ctx.run_dir / registry.STAGE1_ADAPTER)
    registry.save_log_history(ctx.run_dir, "stage1", trainer.state.log_history)
    registry.update_metrics(ctx.run_dir, "stage1", metrics)
    prompts = [poem.split("\n")[0] + "\n" for poem in poems["validation"][:ctx.args.num_samples]]
    write_generations(ctx, model, "stage1", [{"prompt": p} for p in prompts])
    print(f"stage 1: train loss {metrics['train_loss']:.4f}, validation loss {metrics['val_loss']:.4f}")


def stage_merge(ctx: Context) -> None:
    """Fold the stage-1 adapter into the base weights and save the merged model (notebook 06)."""
    import torch

    from .modeling import merge_lora

    peft_model = ctx.state.pop("stage1_model", None) or load_adapter_model(ctx, stage1_run(ctx))
    peft_model.eval()
    probe = probe_batch(ctx, peft_model.device)
    with torch.no_grad():
        before = peft_model(**probe).logits
        merged = merge_lora(peft_model)
        difference = (merged(**probe).logits - before).abs().max().item()
    print(f"merged: largest logit change {difference:.2e} (only float rounding should remain)")
    ctx.state["merged_model"] = merged
    if ctx.is_main:
        merged.save_pretrained(ctx.run_dir / registry.MERGED)
        ctx.tokenizer().save_pretrained(ctx.run_dir / registry.MERGED)
        registry.update_metrics(ctx.run_dir, "merge", {"max_abs_logit_difference": difference,
                                                       "path": registry.MERGED})


def stage_stage2(ctx: Context) -> None:
    """Full fine-tuning on poetry instructions, loss on completion tokens only (notebook 07)."""
    from .data import encode_pairs
    from .modeling import count_parameters
    from .training import build_trainer, stage2_collator, train

    tok, profile = ctx.tokenizer(), ctx.profile
    model, source = stage2_start(ctx)
    model.requires_grad_(True)  # every weight trains
    trainable, total = count_parameters(model)
    print(f"stage 2 starts from {source}; trainable params: {trainable:,d} of {total:,d}")
    rows = {split: encode_pairs(pairs, tok, profile.data.max_length)[0]
            for split, pairs in ctx.data().instructions.items()}
    collator = stage2_collator(model, tok, ctx.args.packing)
    packing = type(collator).__name__ != "SFTCollator"
    print(f"batches: {'packed (position_ids restart per example)' if packing else 'dynamic padding'}"
          f" with attn_implementation={model.config._attn_implementation}")
    trainer = build_trainer(model, profile.stage2, ctx.run_dir / registry.CHECKPOINTS["stage2"],
                            rows["train"], rows["validation"], collator, tok,
                            save_steps=ctx.args.save_steps)
    summary = train(trainer, resume=ctx.args.resume)
    trainer.save_model(str(ctx.run_dir / registry.STAGE2_MODEL))  # writes on the main process only
    ctx.state["stage2_model"] = model
    if not ctx.is_main:
        return
    losses = split_losses(ctx, model, ("test",))
    val_loss = summary.pop("last_eval_loss") or split_losses(ctx, model, ("validation",))["validation_loss"]
    cfg = profile.stage2
    metrics = {"train_loss": summary.pop("train_loss"), "val_loss": val_loss,
               "test_loss": losses["test_loss"], "test_perplexity": losses["test_perplexity"],
               **summary, "packing": packing, "start_model": source,
               "trainable_params": trainable, "all_params": total,
               "per_device_train_batch_size": cfg.per_device_train_batch_size,
               "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
               "world_size": trainer.args.world_size, "epochs": round(trainer.state.epoch, 3),
               "learning_rate": cfg.learning_rate}
    registry.save_log_history(ctx.run_dir, "stage2", trainer.state.log_history)
    registry.update_metrics(ctx.run_dir, "stage2", metrics)
    print(f"stage 2: train {metrics['train_loss']:.4f}, validation {metrics['val_loss']:.4f}, "
          f"test {metrics['test_loss']:.4f} (perplexity {metrics['test_perplexity']:.1f})")


def stage_evaluate(ctx: Context) -> None:
    """Loss, perplexity and text metrics of the final model on the test split (notebook 08)."""
    from .evaluation import EVAL_MAX_EXAMPLES, evaluate_model

    model, name = final_model(ctx)
    decode, seed = ctx.profile.decode, ctx.profile.stage2.seed
    scores = evaluate_model(model, ctx.tokenizer(), ctx.data().instructions["test"], decode,
                            max_examples=EVAL_MAX_EXAMPLES, seed=seed,
                            max_length=ctx.profile.data.max_length)
    generations = scores.pop("generations")
    result = {"model": name, **split_losses(ctx, model), **scores}
    rows = [{"split": "test", **g, "seed": seed, "decode": decode.generate_kwargs()}
            for g in generations[:ctx.args.num_samples]]
    registry.write_samples(ctx.run_dir, name, rows)
    registry.update_metrics(ctx.run_dir, "eval", result)
    print(f"evaluate ({name}) on {scores['n_examples']} test pairs: loss {scores['loss']:.4f}, "
          f"perplexity {scores['perplexity']:.1f}, BLEU {scores['bleu']:.2f}, "
          f"ROUGE-L {scores['rouge_l']:.3f}, distinct-2 {scores['distinct_2']:.3f}, "
          f"rhyme rate {scores['rhyme_rate']:.3f}")


def split_losses(ctx: Context, model, splits=("validation", "test")) -> dict:
    """Loss and perplexity per completion token of each split (utils.metrics), computed once per model."""
    from .data import encode_pairs
    from .metrics import perplexity_from_loss
    from .training import split_loss

    cache, tok, result = ctx.state.setdefault("split_losses", {}), ctx.tokenizer(), {}
    for split in splits:
        if (id(model), split) not in cache:
            rows = encode_pairs(ctx.data().instructions[split], tok, ctx.profile.data.max_length)[0]
            cache[id(model), split] = split_loss(model, rows, tok.pad_token_id)
        loss = cache[id(model), split]
        result.update({f"{split}_loss": loss, f"{split}_perplexity": perplexity_from_loss(loss)})
    return result


def stage_report(ctx: Context) -> None:
    """runs/<run>/report.md with the metrics, the seed-format loss table and a loss-curve PNG."""
    from .plots import save_loss_curves

    histories = registry.read_json(ctx.run_dir / registry.LOG_HISTORY, {})
    png = save_loss_curves(histories, ctx.run_dir / "loss_curves.png") if histories else None
    text = registry.render_report(ctx.run_dir, png.name if png else None)
    registry.write_text_atomic(ctx.run_dir / "report.md", text)
    print(f"wrote {ctx.run_dir / 'report.md'}")


STAGES = {"data": stage_data, "stage1": stage_stage1, "merge": stage_merge,
          "stage2": stage_stage2, "evaluate": stage_evaluate, "report": stage_report}
DEFAULT_STAGES = tuple(STAGES)
MAIN_ONLY = ("merge", "evaluate", "report")  # one process does these; the others wait


# ---------------------------------------------------------------- models between stages


def stage1_run(ctx: Context) -> Path:
    """The run whose stage 1 feeds this one: --from-run, else this run."""
    return registry.find_run(ctx.args.from_run, ctx.run_dir.parent) if ctx.args.from_run else ctx.run_dir


def load_adapter_model(ctx: Context, run_dir: Path):
    """Base model + the LoRA adapter saved by stage 1 of `run_dir`."""
    from peft import PeftModel

    from .modeling import load_model

    adapter = run_dir / registry.STAGE1_ADAPTER
    if not (adapter / "adapter_config.json").exists():
        raise registry.RunNotFoundError(
            f"run {run_dir.name!r} has no stage 1 adapter ({adapter} is missing); run "
            f"`python -m utils.pipeline --run-name {run_dir.name} --stages data,stage1` first")
    return PeftModel.from_pretrained(load_model(ctx.profile, tokenizer=ctx.tokenizer()), str(adapter))


def stage1_model_source(run_dir: Path) -> Path | None:
    """The merged model folder of a run, else its adapter folder, else None."""
    for sub in (registry.MERGED, registry.STAGE1_ADAPTER):
        if (run_dir / sub).exists():
            return run_dir / sub
    return None


def stage2_start(ctx: Context):
    """(model, description) stage 2 starts from: merged in memory, on disk, --from-run, or base."""
    from .modeling import load_model, merge_lora

    if "merged_model" in ctx.state:
        return ctx.state.pop("merged_model"), "the merged stage-1 model"
    run = stage1_run(ctx)
    source = stage1_model_source(run)
    if source is None and ctx.args.from_run:
        raise registry.RunNotFoundError(
            f"run {run.name!r} has no stage 1 model (neither {registry.MERGED}/ nor "
            f"{registry.STAGE1_ADAPTER}/); run `python -m utils.pipeline --run-name {run.name} "
            "--stages data,stage1,merge` first")
    if source is None:
        print("note: no stage 1 in this run and no --from-run: stage 2 starts from the base model")
        return load_model(ctx.profile, tokenizer=ctx.tokenizer()), "the base model"
    if source.name == registry.MERGED:
        return load_model(ctx.profile, tokenizer=ctx.tokenizer(), path=source), str(source)
    return merge_lora(load_adapter_model(ctx, run)), f"{source} (merged now)"


def final_model(ctx: Context):
    """(model, name) of the latest model of this run: stage 2, else merged, else the base model."""
    from .modeling import load_model

    if "stage2_model" in ctx.state:
        return ctx.state["stage2_model"], "stage2"
    for sub, name in ((registry.STAGE2_MODEL, "stage2"), (registry.MERGED, "merged")):
        if (ctx.run_dir / sub / "config.json").exists():
            return load_model(ctx.profile, tokenizer=ctx.tokenizer(), path=ctx.run_dir / sub), name
    return load_model(ctx.profile, tokenizer=ctx.tokenizer()), "base"


def probe_batch(ctx: Context, device) -> dict:
    """Two validation poems' first 32 tokens: a fixed batch to compare logits on."""
    import torch

    tok = ctx.tokenizer()
    ids = [tok(text)["input_ids"][:32] for text in ctx.data().poems["validation"][:2]]
    width = min(len(i) for i in ids)
    return {"input_ids": torch.tensor([i[:width] for i in ids], device=device)}


def write_generations(ctx: Context, model, name: str, rows: list[dict]) -> None:
    """Generate for each row's prompt with the profile's decoding settings; store in samples.jsonl."""
    from .training import generate_texts

    seed = ctx.profile.stage2.seed
    texts = generate_texts(model, ctx.tokenizer(), [r["prompt"] for r in rows], ctx.profile.decode, seed)
    decode = ctx.profile.decode.generate_kwargs()
    out = [{**r, "generation": t, "seed": seed, "decode": decode} for r, t in zip(rows, texts)]
    registry.write_samples(ctx.run_dir, name, out)


# ---------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m utils.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--profile", default=None, help=f"one of {', '.join(PROFILES)} (default: $POET_PROFILE or tiny)")
    add("--stages", default=",".join(DEFAULT_STAGES), help=f"comma-separated, from: {', '.join(STAGES)}")
    add("--run-name", default=None, help="folder under runs/ (default: <profile>-<date>-<time>)")
    add("--runs-dir", default=None, help="where run folders live (default: $POET_RUNS_DIR or runs/)")
    add("--overwrite", action="store_true", help="delete an existing run folder of the same name first")
    add("--resume", action="store_true",
        help="continue an existing run folder; training stages restart from their last checkpoint")
    add("--from-run", default=None, help="stage 2 starts from this run's stage 1 (merged) model")
    add("--epochs", type=float, default=None, help="num_train_epochs of both stages (clears max_steps)")
    add("--max-steps", type=int, default=None, help="optimizer steps of each training stage")
    add("--learning-rate", type=float, default=None, help="learning rate of each training stage")
    add("--save-steps", type=int, default=None, help="checkpoint every N steps (default: eval_steps)")
    add("--packing", choices=("auto", "on", "off"), default="auto",
        help="stage 2 batches: pack examples where attention keeps them apart (auto), or pad")
    add("--num-samples", type=int, default=4, help="sample generations written to samples.jsonl")
    add("--max-rows", type=int, default=None, help="use at most N rows of every split (smoke runs)")
    add("--data-dir", default=None, help="local copies of both datasets (parquet, jsonl or csv)")
    add("--drop-contaminated", choices=("none", "poems", "instructions"), default=None,
        help="drop stage-1 poems or stage-2 rows that overlap the other dataset (default: none)")
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


def apply_overrides(profile: Profile, args: argparse.Namespace) -> Profile:
    """The profile with --epochs, --max-steps and --learning-rate applied to both stages."""
    changes = {}
    if args.epochs is not None:
        changes.update(num_train_epochs=args.epochs, max_steps=-1)
    if args.max_steps is not None:
        changes["max_steps"] = args.max_steps
    if args.learning_rate is not None:
        changes["learning_rate"] = args.learning_rate
    profile = profile.replace(stage1=changes, stage2=changes) if changes else profile
    data = {k: v for k, v in (("data_dir", args.data_dir),
                              ("drop_contaminated", args.drop_contaminated)) if v is not None}
    return profile.replace(data=data) if data else profile


def init_distributed() -> tuple[int, int]:
    """(rank, world size); under torchrun / accelerate launch, join the process group now.

    Joining before any stage lets the processes wait for each other (`barrier`) from the
    start, e.g. for the merged model that only process 0 writes. gloo on CPUs, nccl on GPUs.
    """
    import os

    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def main(argv=None) -> Context:
    args = parse_args(argv)
    profile = apply_overrides(get_profile(args.profile), args)
    stages = check_stages(args.stages)
    if args.from_run and {"stage1", "merge"} & set(stages):
        raise ValueError("--from-run takes stage 1 from another run; drop stage1 and merge from --stages")
    root = Path(args.runs_dir or runs_dir())
    run_dir = registry.run_path(args.run_name or f"{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}", root)
    if args.from_run:
        stage1_model_source(registry.find_run(args.from_run, root))  # fail now, not after stage 1
    registry.check_new_run(run_dir, args.overwrite, args.resume)  # every process, before any writes
    rank, world = init_distributed()
    if rank == 0:
        registry.prepare_run_dir(run_dir, args.overwrite, args.resume)
        if not (run_dir / registry.CONFIG).exists() or not args.resume:
            command = "python -m utils.pipeline " + " ".join(sys.argv[1:] if argv is None else argv)
            registry.write_config(run_dir, profile, stages=stages, world_size=world, command=command)
    barrier()
    ctx = Context(profile, run_dir, args, is_main=rank == 0)
    print(f"profile {profile.name}: {profile.description}\nrun folder: {run_dir}")
    for name in stages:
        start = time.perf_counter()
        if ctx.is_main or name not in MAIN_ONLY:
            print(f"\n== stage {name} ==")
            STAGES[name](ctx)
            print(f"stage {name} done in {time.perf_counter() - start:.1f} s")
        barrier()
    return ctx


def cli(argv=None) -> None:
    """Run main; bad input ends with a one-line message instead of a traceback."""
    from .modeling import HubUnavailableError
    from .training import NonFiniteLossError

    try:
        main(argv)
    except (ValueError, NonFiniteLossError, FileExistsError, FileNotFoundError,
            HubUnavailableError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    cli()
