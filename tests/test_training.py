"""utils.train.trainer: arguments, callbacks, exact packing, masking, the loss on a split."""

import dataclasses
import math
import re

import pytest
import torch

from utils.config import IGNORE_INDEX, get_profile
from utils.data import collate, tokenize
from utils.data.collate import SFTCollator
from utils.data.tokenize import encode_example
from utils.models.loading import load_model_and_tokenizer
from utils.train import loss_guards, trainer

PAIRS = [("User: Write a poem about the sea.\nAssistant:", " Grey water, grey sky,\nthe gulls cry."),
         ("User: A haiku on moss, please.\nAssistant:", " Moss on the old stone"),
         ("User: Continue: the lamp burned\nAssistant:", " all night by the harbour wall,\nand no ship came.")]


def _rows(tok):
    return [encode_example(p, c, tok, 64) for p, c in PAIRS]


# ---------------------------------------------------------------- arguments


def test_training_arguments_use_v5_names_and_cpu_settings(tmp_path):
    cfg = get_profile("tiny").stage2
    args = trainer.training_arguments(cfg, tmp_path, save_steps=3)
    assert args.eval_strategy == "steps" and args.eval_steps == cfg.eval_steps
    assert args.save_steps == 3 and args.save_total_limit == 2
    assert args.report_to in ([], "none", ["none"])
    assert args.logging_nan_inf_filter is False  # a NaN must reach NonFiniteLossCallback
    assert (args.bf16, args.fp16) == (False, False) and loss_guards.dtype_name(args) == "float32"
    assert args.full_determinism and args.use_cpu
    assert args.learning_rate == cfg.learning_rate and args.max_steps == cfg.max_steps


# ---------------------------------------------------------------- rows and batches


def test_lm_blocks_drop_the_remainder_and_count_it(gpt2_tok):
    texts = ["one two three four five", "six seven"]  # 5 and 2 tokens, + 1 EOS each = 9
    rows, info = tokenize.lm_blocks(texts, gpt2_tok, block_size=4)
    assert info == {"texts": 2, "tokens": 9, "block_size": 4, "blocks": 2, "dropped_tokens": 1}
    assert [len(r["input_ids"]) for r in rows] == [4, 4]
    assert rows[0]["input_ids"][1:3] == gpt2_tok(" two three")["input_ids"]


def test_lm_blocks_start_every_text_with_bos_for_llama(llama_tok):
    rows, info = tokenize.lm_blocks(["a b", "c d"], llama_tok, block_size=3)
    assert rows[0]["input_ids"][0] == llama_tok.bos_token_id
    assert info["tokens"] == 8 and info["blocks"] == 2 and info["dropped_tokens"] == 2


def test_packed_labels_mask_prompts_and_keep_every_eos(gpt2_tok):
    rows = _rows(gpt2_tok)
    batch = collate.packing_collator()(rows)
    assert "attention_mask" not in batch and batch["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in rows))
    starts = [i for i, p in enumerate(batch["position_ids"][0].tolist()) if p == 0]
    assert starts == [0, len(rows[0]["input_ids"]), len(rows[0]["input_ids"]) + len(rows[1]["input_ids"])]
    labels = batch["labels"][0].tolist()
    eos = gpt2_tok.eos_token_id
    ends = [s - 1 for s in starts[1:]] + [len(labels) - 1]
    assert [labels[e] for e in ends] == [eos, eos, eos]  # pad == eos, yet every real EOS counts
    assert sum(label != IGNORE_INDEX for label in labels) == sum(
        sum(label != IGNORE_INDEX for label in r["labels"]) for r in rows)


def test_padded_batch_masks_padding_but_not_eos(gpt2_tok):
    rows = _rows(gpt2_tok)
    batch = SFTCollator(gpt2_tok.pad_token_id)(rows)
    short = min(range(3), key=lambda i: len(rows[i]["input_ids"]))
    n = len(rows[short]["input_ids"])
    assert batch["labels"][short, n - 1] == gpt2_tok.eos_token_id
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][short, n:] == gpt2_tok.eos_token_id).all()


def _separate_loss(model, rows):
    total, count = 0.0, 0
    for r in rows:
        ids, labels = torch.tensor([r["input_ids"]]), torch.tensor([r["labels"]])
        n = int((labels[:, 1:] != IGNORE_INDEX).sum())
        total, count = total + model(input_ids=ids, labels=labels).loss.item() * n, count + n
    return total / count


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_batch_loss_equals_the_examples_run_separately(tiny_profile, attn):
    model, tok = load_model_and_tokenizer(tiny_profile)
    model.set_attn_implementation(attn)
    model.config.use_cache = False  # as the Trainer sets it; a KV cache hides the boundaries
    model.eval()
    rows = _rows(tok)
    assert collate.packing_is_exact(model)
    with torch.no_grad():
        packed = model(**collate.packing_collator()(rows))
        separate = _separate_loss(model, rows)
        first = model(input_ids=torch.tensor([rows[0]["input_ids"]])).logits[0]
        second = model(input_ids=torch.tensor([rows[1]["input_ids"]])).logits[0]
    assert packed.loss.item() == pytest.approx(separate, abs=1e-5)
    n0, n1 = len(rows[0]["input_ids"]), len(rows[1]["input_ids"])
    assert torch.allclose(packed.logits[0, n0:n0 + n1], second, atol=1e-4)  # nothing leaks from row 0
    assert torch.allclose(packed.logits[0, :n0], first, atol=1e-4)


def test_packing_refused_where_attention_would_mix_examples(gpt2_tok):
    class Config:
        _attn_implementation = "flex_attention"

    class Model:
        config = Config()

    assert isinstance(collate.stage2_collator(Model(), gpt2_tok, "auto"), SFTCollator)
    with pytest.raises(ValueError, match="packing is not exact"):
        collate.stage2_collator(Model(), gpt2_tok, "on")


# ---------------------------------------------------------------- callbacks


def test_stats_callback_counts_padding_share():
    stats = trainer.TrainingStatsCallback()
    stats.count({"input_ids": torch.zeros(2, 5), "attention_mask": torch.tensor([[1] * 5, [1, 1, 0, 0, 0]])})
    stats.count({"input_ids": torch.zeros(1, 10)})  # a packed row: no padding
    stats.total["seconds"] = 2.0
    summary = trainer.TrainingStatsCallback.summarise(stats.total)
    assert summary["padding_share"] == pytest.approx(3 / 20)
    assert summary["tokens_per_second"] == pytest.approx(17 / 2)
    assert summary["peak_memory_mb"] > 0


def _logging_every_step(model, tok, tmp_path, max_steps: int):
    """A stage-2 trainer that logs every step, so the loss guards see each loss."""
    cfg = dataclasses.replace(get_profile("tiny").stage2, max_steps=max_steps, logging_steps=1,
                              eval_steps=10, per_device_train_batch_size=3)
    return trainer.build_trainer(model, cfg, tmp_path, _rows(tok), _rows(tok),
                                  SFTCollator(tok.pad_token_id), disable_tqdm=True)


def test_nan_loss_stops_training_naming_learning_rate_and_dtype(tmp_path):
    model, tok = load_model_and_tokenizer("tiny")
    # on the final hidden states: the loss projects them through the head itself (chunked_loss)
    model.transformer.ln_f.register_forward_hook(lambda module, inputs, out: out * float("nan"))
    trainer = _logging_every_step(model, tok, tmp_path, max_steps=2)
    rate = re.escape(f"learning_rate={get_profile('tiny').stage2.learning_rate:g}")  # its first step's rate
    with pytest.raises(loss_guards.NonFiniteLossError, match=r"loss became nan at step 1 "
                       rf"\({rate}, dtype=float32\)"):
        trainer.train()


def test_exploding_finite_loss_stops_training_naming_learning_rate(tmp_path):  # catalogue: C1
    model, tok = load_model_and_tokenizer("tiny")
    calls = []
    # From the second forward pass on, the final hidden states x 1000, so the logits x 1000 (the
    # head has no bias): a finite loss thousands of times the first.
    model.transformer.ln_f.register_forward_hook(
        lambda m, i, out: calls.append(1) or out * (1 if len(calls) < 2 else 1e3))
    trainer = _logging_every_step(model, tok, tmp_path, max_steps=3)
    rate = re.escape(f"learning_rate={get_profile('tiny').stage2.learning_rate:g}")
    with pytest.raises(loss_guards.DivergedLossError, match=r"training loss diverged: .* at step 2.*"
                       rf"{rate}\). Lower the learning rate"):
        trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and losses[0] < 2 * math.log(model.config.vocab_size) < losses[1]
    assert all(math.isfinite(loss) for loss in losses)  # the NaN guard alone would not stop it


# ---------------------------------------------------------------- the registry


