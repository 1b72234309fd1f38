"""The pocket model: its corpus and split, the hand-written loop, checkpoints and resume."""

import dataclasses
import json
import math
import shutil

import pytest
import torch

from utils.data import corpus as pretrain_data
from utils.evaluate.metrics import block_loss
from utils.models.tokenizers import gpt2_tokenizer
from utils.train import pretrain
from utils.train.pretrain import PretrainConfig

SMALL = PretrainConfig(n_layer=1, n_embd=32, n_head=2, block_size=32, batch_size=4,
                       max_tokens=4 * 32 * 6, warmup_steps=2, eval_every=2, learning_rate=3e-3)


def test_corpus_is_the_published_copy_and_edits_are_named(tmp_path):
    assert set(pretrain_data.check_corpus()) == set(pretrain_data.CORPUS_FILES)
    for name in pretrain_data.CORPUS_FILES:
        shutil.copy(pretrain_data.CORPUS_DIR / name, tmp_path / name)
    with open(tmp_path / "shakespeare_sonnets.txt", "a", encoding="utf-8") as f:
        f.write("\nan added line\n")
    with pytest.raises(ValueError, match="shakespeare_sonnets.txt has sha256"):
        pretrain_data.check_corpus(tmp_path)
    (tmp_path / "tiny_shakespeare.txt").unlink()
    with pytest.raises(FileNotFoundError, match="tiny_shakespeare.txt is missing"):
        pretrain_data.check_corpus(tmp_path)


def test_validation_holds_out_whole_pieces_of_both_texts():
    docs = pretrain_data.corpus_documents()
    train, val = pretrain_data.split_documents(docs, fraction=0.05, seed=0)
    assert len(train) + len(val) == len(docs)
    assert {d.source for d in val} == set(pretrain_data.CORPUS_FILES)
    for source in pretrain_data.CORPUS_FILES:
        own = [d for d in docs if d.source == source]
        held = [d for d in val if d.source == source]
        assert abs(len(held) - 0.05 * len(own)) <= 1
    assert sum(d.source == "shakespeare_sonnets.txt" for d in docs) == 154  # one per sonnet
    assert not {(d.source, d.index) for d in train} & {(d.source, d.index) for d in val}
    again = pretrain_data.split_documents(docs, fraction=0.05, seed=0)[1]
    assert [(d.source, d.index) for d in again] == [(d.source, d.index) for d in val]
    # Held-out pieces are spread over the plays, not the file's tail.
    play_indices = [d.index for d in val if d.source == "tiny_shakespeare.txt"]
    assert min(play_indices) < 0.5 * max(play_indices)


def test_blocks_are_full_rows_with_eos_between_pieces(gpt2_tok):
    docs = pretrain_data.corpus_documents()[:3]
    ids = pretrain_data.token_stream(docs, gpt2_tok)
    assert ids.count(gpt2_tok.eos_token_id) == 3 and ids[-1] == gpt2_tok.eos_token_id
    rows = pretrain_data.stream_blocks(ids, 64)
    assert rows.shape == (len(ids) // 64, 64)
    assert rows.flatten().tolist() == ids[:rows.numel()]
    with pytest.raises(ValueError, match="smaller block_size"):
        pretrain_data.stream_blocks(ids[:10], 64)


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = PretrainConfig(max_tokens=8 * 256 * 100, warmup_steps=10, learning_rate=1e-3)
    rates = [pretrain.learning_rate_at(s, cfg) for s in range(cfg.total_steps)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # monotone after warm-up
    assert rates[-1] == pytest.approx(1e-4, rel=0.01)  # 10% of the peak at the end


def test_each_epoch_visits_every_row_once():
    cfg = PretrainConfig(batch_size=4, seed=3)
    seen = torch.cat([pretrain.batch_rows(step, 10, cfg) for step in range(5)])  # 20 = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) == sorted(seen[10:].tolist())
    assert torch.equal(pretrain.batch_rows(2, 10, cfg), pretrain.batch_rows(2, 10, cfg))


def test_the_fused_gelu_swaps_the_modules_and_keeps_the_saved_config(gpt2_tok):
    from transformers.activations import NewGELUActivation
    train = torch.randint(0, 300, (8, SMALL.block_size))
    for fused in (True, False):
        model, _, _ = pretrain.new_run(dataclasses.replace(SMALL, fused_gelu=fused), gpt2_tok, train)
        kinds = {type(m) for m in model.modules()}
        assert (torch.nn.GELU in kinds) is fused and (NewGELUActivation in kinds) is not fused
        assert model.config.activation_function == "gelu_new"  # what the saved model loads with


def test_a_short_run_learns_and_writes_a_loadable_fp16_model_with_a_card(tmp_path):
    state = pretrain.pretrain(SMALL, tmp_path, progress=False)
    losses = [h["val_loss"] for h in state["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0] < math.log(50257) + 0.5
    assert state["tokens"] == 6 * 4 * 32
    assert not (tmp_path / "checkpoint").exists()  # finished: the resumable state is removed
    model = pretrain.load_pocket(tmp_path)
    assert model.dtype == torch.float32
    from safetensors import safe_open
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    blocks = pretrain_data.pretraining_blocks(gpt2_tokenizer(), 32)
    assert block_loss(model, blocks["validation"][:64]) == pytest.approx(losses[-1], abs=0.5)
    card = (tmp_path / "README.md").read_text()
    for fact in (f"{state['tokens']:,d} tokens seen", f"{losses[-1]:.3f}", "sha256",
                 pretrain_data.CORPUS_FILES["tiny_shakespeare.txt"], "tokens/s", "CPU cores"):
        assert fact in card
    assert json.loads((tmp_path / "history.json").read_text())["config"]["n_embd"] == 32


def test_resume_after_a_crash_matches_an_unbroken_run(tmp_path, monkeypatch):
    unbroken = pretrain.pretrain(SMALL, tmp_path / "a", progress=False)
    real = pretrain.block_loss
    calls = {"n": 0}

    def crash_on_second_validation(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "block_loss", crash_on_second_validation)
    with pytest.raises(KeyboardInterrupt):
        pretrain.pretrain(SMALL, tmp_path / "b", progress=False)
    monkeypatch.setattr(pretrain, "block_loss", real)
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain.pretrain(SMALL, tmp_path / "b", progress=False)
    resumed = pretrain.pretrain(SMALL, tmp_path / "b", resume=True, progress=False)
    assert [h["val_loss"] for h in resumed["history"]] == pytest.approx(
        [h["val_loss"] for h in unbroken["history"]], abs=1e-6)
    a, b = pretrain.load_pocket(tmp_path / "a"), pretrain.load_pocket(tmp_path / "b")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_missing_pocket_model_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m utils.train.pretrain"):
        pretrain.load_pocket(tmp_path)


def test_the_card_lists_the_full_length_runs_the_shape_was_chosen_from(tmp_path):
    from utils.train import pocket_card

    def record(folder, n_layer, weight_decay, losses, drop=(), **changes):
        folder.mkdir(parents=True)
        history = [{"tokens": 1000 * (i + 1), "val_loss": v} for i, v in enumerate(losses)]
        config = {**PretrainConfig().__dict__, "n_layer": n_layer, "weight_decay": weight_decay, **changes}
        config = {k: v for k, v in config.items() if k not in drop}
        (folder / "history.json").write_text(json.dumps({"config": config, "history": history, "wall_s": 600}))

    record(tmp_path / "old", 4, 0.1, [4.9, 4.38, 4.46])
    # a record from before the attention had its own dropout setting: one rate for both
    record(tmp_path / "older", 4, 0.1, [4.9, 4.5], drop=("attn_dropout",), dropout=0.2)
    state = {"history": [{"tokens": 5000, "val_loss": 4.5}, {"tokens": 9000, "val_loss": 4.26}], "wall_s": 1860}
    text = pocket_card.shape_section(PretrainConfig(), state, bench_file=tmp_path / "none.json", candidates=tmp_path)
    assert "Chosen: **8x128 ctx256**" in text
    assert "| `results/pocket-next/old` | 4x128 ctx256 | 0.1 (0) | 0.1 | 3,000 | 10.0 | 4.380 | 4.460 |" in text
    assert "| `results/pocket-next/older` | 4x128 ctx256 | 0.2 (0.2) | 0.1 | 2,000 | 10.0 | 4.500 | 4.500 |" in text
    assert "| this run | 8x128 ctx256 | 0.1 (0) | 1 | 9,000 | 31.0 | 4.260 | 4.260 |" in text
