"""The pipeline's stages, each a function `stage(ctx)`: data, stage1, merge, stage2, evaluate, report.

data prepares and reports both datasets; stage1 trains LoRA on poems (notebook 06); merge
folds the adapter into the weights; stage2 fine-tunes every weight on instructions
(notebook 07); evaluate scores the final model on the test split (notebook 08); report writes
report.md. Each writes its numbers to the run folder (utils/runs/registry.py) and hands its model
to the next through `ctx.models`. utils/pipeline/job.py runs them in order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from utils.config import get_profile
from utils.course.plots import save_loss_curves
from utils.data.collate import SFTCollator, stage2_collator
from utils.data.tokenize import encode_pairs, lm_blocks
from utils.env import pick_device, set_seed
from utils.evaluate.evaluation import EVAL_MAX_EXAMPLES, evaluate_model, split_loss
from utils.evaluate.learning import learning_report
from utils.evaluate.metrics import perplexity_from_loss
from utils.generate.batched import generate_texts
from utils.models.files import building, save_model_folder
from utils.models.loading import load_model
from utils.models.lora import apply_lora, merge_lora, trainable_parameter_line
from utils.models.shapes import count_parameters
from utils.options import STAGE_NAMES
from utils.pipeline.context import Context
from utils.pipeline.reward_stage import stage_reward
from utils.pipeline.models import (
    final_model,
    learning_models,
    load_adapter_model,
    probe_batch,
    stage1_run,
    stage2_source,
    stage2_start,
)
from utils.prefer import scripted_rater
from utils.prefer.dpo import (
    PreferenceConfig,
    build_dpo_trainer,
    check_enough_pairs,
    pairs_from_ratings,
    preference_config,
    split_pairs,
    train_dpo,
)
from utils.runs import registry, report
from utils.train.trainer import build_trainer, train


def stage_data(ctx: Context) -> None:
    """Load, clean, split and tokenize-check both datasets; print and save the data report."""
    prepared = ctx.data()
    print_data_report(prepared.report)
    if ctx.is_main:
        ctx.save_json("data_report.json", prepared.report)


def print_data_report(report: dict) -> None:
    """A short human-readable summary of prepare_data's report."""
    p, ins = report["poems"], report["instructions"]
    for kind, paths in report.get("files_read", {}).items():
        print(f"read {kind}: {', '.join(paths)}")
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
    print(f"  empty Assistant turn dropped: {ins.get('empty_assistant_dropped')}")
    print(f"instructions kept: {ins['rows_kept']}")
    print(f"contamination (stage-2 answers overlapping stage-1 poems): {report['contamination']}")


def stage_stage1(ctx: Context) -> None:
    """LoRA domain adaptation on packed blocks of poems; saves the adapter (notebook 06)."""
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
                            save_steps=ctx.options.save_steps)
    summary = train(trainer, resume=ctx.options.resume)
    ctx.models.stage1 = model
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
    with building(ctx.run_dir / registry.STAGE1_ADAPTER) as folder:  # whole or not at all
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    registry.save_log_history(ctx.run_dir, "stage1", trainer.state.log_history)
    registry.update_metrics(ctx.run_dir, "stage1", metrics)
    prompts = [poem.split("\n")[0] + "\n" for poem in poems["validation"][:ctx.options.num_samples]]
    write_generations(ctx, model, "stage1", [{"prompt": p} for p in prompts])
    print(f"stage 1: train loss {metrics['train_loss']:.4f}, validation loss {metrics['val_loss']:.4f}")


def stage_merge(ctx: Context) -> None:
    """Fold the stage-1 adapter into the base weights and save the merged model (notebook 06)."""
    peft_model = ctx.models.stage1 or load_adapter_model(ctx, stage1_run(ctx))
    ctx.models.stage1 = None
    peft_model.eval()
    probe = probe_batch(ctx, peft_model.device)
    with torch.no_grad():
        before = peft_model(**probe).logits
        merged = merge_lora(peft_model)
        difference = (merged(**probe).logits - before).abs().max().item()
    print(f"merged: largest logit change {difference:.2e} (only float rounding should remain)")
    ctx.models.merged = merged
    if ctx.is_main:
        with building(ctx.run_dir / registry.MERGED) as folder:  # whole or not at all
            merged.save_pretrained(folder)
            ctx.tokenizer().save_pretrained(folder)
        registry.update_metrics(ctx.run_dir, "merge", {"max_abs_logit_difference": difference,
                                                       "path": registry.MERGED})


def stage_stage2(ctx: Context) -> None:
    """Full fine-tuning on poetry instructions, loss on completion tokens only (notebook 07)."""
    tok, profile = ctx.tokenizer(), ctx.profile
    model, source = stage2_start(ctx)
    model.requires_grad_(True)  # every weight trains
    trainable, total = count_parameters(model)
    print(f"stage 2 starts from {source}; trainable params: {trainable:,d} of {total:,d}")
    rows = {split: encode_pairs(pairs, tok, profile.data.max_length)[0]
            for split, pairs in ctx.data().instructions.items()}
    collator = stage2_collator(model, tok, ctx.options.packing)
    packing = type(collator).__name__ != "SFTCollator"
    print(f"batches: {'packed (position_ids restart per example)' if packing else 'dynamic padding'}"
          f" with attn_implementation={model.config._attn_implementation}")
    trainer = build_trainer(model, profile.stage2, ctx.run_dir / registry.CHECKPOINTS["stage2"],
                            rows["train"], rows["validation"], collator, tok,
                            save_steps=ctx.options.save_steps)
    summary = train(trainer, resume=ctx.options.resume)
    with building(ctx.run_dir / registry.STAGE2_MODEL, enabled=ctx.is_main) as folder:
        trainer.save_model(str(folder))  # writes on the main process only
    ctx.models.stage2 = model
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
    model, name = final_model(ctx)
    decode, seed = ctx.profile.decode, ctx.profile.stage2.seed
    scores = evaluate_model(model, ctx.tokenizer(), ctx.data().instructions["test"], decode,
                            max_examples=EVAL_MAX_EXAMPLES, seed=seed,
                            max_length=ctx.profile.data.max_length,
                            training_poems=ctx.data().poems["train"])
    generations = scores.pop("generations")
    result = {"model": name, **split_losses(ctx, model), **scores}
    rows = [{"split": "test", **g, "seed": seed, "decode": decode.generate_kwargs()}
            for g in generations[:ctx.options.num_samples]]
    registry.update_metrics(ctx.run_dir, "eval", result)  # first: samples cannot cost the scores
    registry.write_samples(ctx.run_dir, name, rows)
    print(f"evaluate ({name}) on {scores['n_examples']} test pairs: loss {scores['loss']:.4f}, "
          f"perplexity {scores['perplexity']:.1f}, BLEU {scores['bleu']:.2f}, "
          f"ROUGE-L {scores['rouge_l']:.3f}, distinct-2 {scores['distinct_2']:.3f}, "
          f"rhyme rate {scores['rhyme_rate']:.3f}, rhyme pairs {scores['rhyme_pair_rate']:.3f}, "
          f"meter {scores['meter_score']:.3f}, longest copied run {scores['memorised_words']} words")
    learned = learning_report(learning_models(ctx), ctx.tokenizer(), ctx.data(), ctx.profile)
    registry.update_metrics(ctx.run_dir, "learning", learned)
    print_learning(learned)


def print_learning(learned: dict) -> None:
    """One line per measure of metrics.json["learning"]: did each stage move what it trains?"""
    for key in ("poem_loss", "completion_loss", "eos_rate", "user_turn_rate", "answer_tokens"):
        print(f"learning: {key:16s}", "  ".join(f"{k} {v:.3f}" for k, v in learned.get(key, {}).items()))
    if "pocket_val_loss" in learned:
        print(f"learning: pocket_val_loss  {learned['pocket_val_loss']:.3f} (held-out Shakespeare)")


def split_losses(ctx: Context, model, splits=("validation", "test")) -> dict:
    """Loss and perplexity per completion token of each split (utils.evaluate.metrics), computed once per model."""
    cache, tok, result = ctx.losses, ctx.tokenizer(), {}
    for split in splits:
        if (id(model), split) not in cache:
            rows = encode_pairs(ctx.data().instructions[split], tok, ctx.profile.data.max_length)[0]
            cache[id(model), split] = split_loss(model, rows, tok.pad_token_id)
        loss = cache[id(model), split]
        result.update({f"{split}_loss": loss, f"{split}_perplexity": perplexity_from_loss(loss)})
    return result


def stage_report(ctx: Context) -> None:
    """runs/<run>/report.md with the metrics, the seed-format loss table and a loss-curve PNG."""
    histories = registry.read_json(ctx.run_dir / registry.LOG_HISTORY, {})
    png = save_loss_curves(histories, ctx.run_dir / "loss_curves.png") if histories else None
    text = report.render_report(ctx.run_dir, png.name if png else None)
    registry.write_text_atomic(ctx.run_dir / "report.md", text)
    print(f"wrote {ctx.run_dir / 'report.md'}")


def stage_prefer(ctx: Context) -> None:
    """Stage 3: DPO from this run's stage-2 model on SIMULATED pairs (the scripted rater); the
    tuned model goes to stage3/model, the measurements to metrics.json["preference"]."""
    source = stage2_source(ctx, "prefer", "stage 3")
    cfg = preference_config(ctx.profile, **ctx.options.preference_changes())
    note_pipeline_flags(ctx.options, cfg)
    instructions = ctx.data().instructions
    metrics = prefer_stage(source, ctx.tokenizer(), ctx.profile, ctx.run_dir / registry.STAGE3_MODEL,
                           prompts=[p for p, _ in instructions["train"]],
                           eval_prompts=[p for p, _ in instructions["test"]], cfg=cfg)
    registry.update_metrics(ctx.run_dir, "preference", metrics)


def note_pipeline_flags(options, cfg: PreferenceConfig) -> None:
    """Say that --max-steps, --learning-rate and --epochs do not reach DPO, and what it uses."""
    given = [flag for flag, value in (("--max-steps", options.max_steps), ("--epochs", options.epochs),
                                      ("--learning-rate", options.learning_rate)) if value is not None]
    if given:
        print(f"note: {', '.join(given)} set stages 1 and 2; prefer (DPO) trains with its own "
              f"settings: max_steps {cfg.max_steps}, learning_rate {cfg.learning_rate:g}, beta "
              f"{cfg.beta:g} (--prefer-max-steps, --prefer-learning-rate, --prefer-beta)")


STAGES = {"data": stage_data, "stage1": stage_stage1, "merge": stage_merge,
          "stage2": stage_stage2, "evaluate": stage_evaluate, "report": stage_report,
          "prefer": stage_prefer, "reward": stage_reward}
assert tuple(STAGES) == STAGE_NAMES, "utils/options.py lists the stages the CLI offers"
MAIN_ONLY = ("merge", "evaluate", "report", "prefer", "reward")  # one process does these; the others wait


def check_inputs(ctx: Context, stages) -> None:
    """Before any stage trains: every split the stages need holds something to train or score.

    An empty split would otherwise surface after minutes of training, as a Trainer error
    ("num_samples=0", "batch is empty"). Raises ValueError naming the split and the fix.
    """
    needs = {"stage1": [("poems", "train"), ("poems", "validation")],
             "stage2": [("instructions", s) for s in ("train", "validation", "test")],
             "evaluate": [("instructions", "test")]}
    wanted = dict.fromkeys(need for stage in stages for need in needs.get(stage, ()))
    if not wanted:
        return
    data, rows = ctx.data(), ctx.options.max_rows
    hint = f"raise --max-rows (now {rows})" if rows else "check the data files (data report)"
    for kind, split in wanted:
        texts = getattr(data, kind)[split]
        count = (lm_blocks(texts, ctx.tokenizer(), ctx.profile.data.max_length)[1]["blocks"]
                 if kind == "poems" else len(texts))
        if count == 0:
            unit = f"blocks of {ctx.profile.data.max_length} tokens" if kind == "poems" else "rows"
            raise ValueError(f"the {split} split of the {kind} has no {unit} "
                             f"({len(texts)} text(s)), so {', '.join(stages)} cannot run; {hint}")


def write_generations(ctx: Context, model, name: str, rows: list[dict]) -> None:
    """Generate for each row's prompt with the profile's decoding settings; store in samples.jsonl."""
    seed = ctx.profile.stage2.seed
    texts = generate_texts(model, ctx.tokenizer(), [r["prompt"] for r in rows], ctx.profile.decode, seed)
    decode = ctx.profile.decode.generate_kwargs()
    out = [{**r, "generation": t, "seed": seed, "decode": decode} for r, t in zip(rows, texts)]
    registry.write_samples(ctx.run_dir, name, out)


def prefer_stage(model_dir, tokenizer, profile, output_dir, prompts, eval_prompts,
                 ratings=None, items=None, cfg: PreferenceConfig | None = None,
                 prop: str = scripted_rater.DEFAULT_PROPERTY, verbose: bool = True) -> dict:
    """Stage 3: DPO from the model in model_dir; returns metrics.json's "preference" entry.

    With `ratings` (a preferences.csv) and `items` the pairs are the rater's clicks; without,
    the scripted rater samples answers to `prompts` and makes SIMULATED pairs. The property and
    distinct-2 are measured on answers sampled for `eval_prompts` before and after; the tuned
    model and tokenizer are saved to output_dir.
    """
    from utils.models.loading import load_model

    profile = get_profile(profile)
    cfg = cfg or preference_config(profile)
    say = print if verbose else (lambda *a, **k: None)
    model = load_model(profile, tokenizer=tokenizer, path=model_dir, device=pick_device())
    measure = dict(decode=profile.decode, n_samples=cfg.eval_samples_per_prompt,
                   seed=cfg.seed, prop=prop)
    before = scripted_rater.measure(model, tokenizer, eval_prompts, **measure)
    if ratings is None:
        prompts = list(prompts)[:cfg.max_prompts]
        answers = scripted_rater.sample_answers(model, tokenizer, prompts, profile.decode,
                                                cfg.samples_per_prompt, seed=cfg.seed + 1)
        pairs, dropped = scripted_rater.scripted_pairs(prompts, answers, prop,
                                                       cfg.max_pairs_per_prompt, seed=cfg.seed)
        check_enough_pairs(pairs, scripted_rater.RATER_NAME, cfg.min_pairs, dropped, simulated=True)
    else:
        pairs, dropped = pairs_from_ratings(ratings, items, cfg.min_pairs)
    simulated = any(p["simulated"] for p in pairs)
    say(f"{len(pairs)} {'SIMULATED ' if simulated else ''}pairs; dropped: {dropped}")
    train_pairs, eval_pairs = split_pairs(pairs, cfg.eval_fraction, cfg.seed)
    trainer = build_dpo_trainer(model, tokenizer, train_pairs, eval_pairs, cfg,
                                Path(output_dir) / "checkpoints", profile=profile)
    result = train_dpo(trainer)
    tuned = trainer.model.merge_and_unload() if cfg.lora else trainer.model
    after = scripted_rater.measure(tuned, tokenizer, eval_prompts, **measure)
    save_model_folder(tuned, tokenizer, output_dir)
    metrics = {"config": dataclasses.asdict(cfg), "pairs": len(pairs), "pairs_dropped": sum(dropped.values()), "simulated": simulated,
               "property": scripted_rater.get_property(prop).name,
               "property_before": before["property"], "property_after": after["property"],
               "distinct_2_before": before["distinct_2"], "distinct_2_after": after["distinct_2"],
               "reward_accuracy": result["eval"].get("eval_rewards/accuracies")}
    say("{property}: {property_before:.3f} -> {property_after:.3f}; distinct-2 {distinct_2_before:.3f} "
        "-> {distinct_2_after:.3f}; held-out reward accuracy {reward_accuracy:.3f}".format(**metrics))
    return metrics
