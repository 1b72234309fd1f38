"""bench/pretrain.py and pretrain_race.py: the levers' wiring, the verdicts' and
bits-per-character arithmetic, and the race on tiny budgets (timings are never asserted:
they depend on the machine's load)."""

import dataclasses
import math

import pytest

from bench import cli as bench
from bench import pretrain as pb
from bench import pretrain_race as race
from bench import pretrain_sweeps as sweeps
from utils.data import corpus as pretrain_data
from utils.train.pretrain import PretrainConfig
from utils.train.pretrain_guard import check_config

SMALL = PretrainConfig(n_layer=1, n_embd=32, n_head=2, block_size=32, batch_size=4, warmup_steps=2)
SMALL_CHARS = race.CharRecipe(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4)


def test_each_lever_changes_one_thing_from_ours():
    ours = PretrainConfig()
    for name, (changes, threads) in pb.lever_settings(ours).items():
        if name == "today":
            assert changes == pb.TODAY and PretrainConfig(**changes).bf16 is True
            assert PretrainConfig(**changes).head == "full"  # the checkpoint scored every row
        elif name == "today in fp32":
            assert changes == {**pb.TODAY, "bf16": False}
        elif name == "1 thread":
            assert (changes, threads) == ({}, 1)
        elif name != "ours":
            assert len(changes) == 1 and threads is pb.ALL_THREADS, name
    assert {"dropout", "attention dropout", "bf16 autocast", "AdamW foreach", "full head", "torch.compile",
            "chunked loss", "fused GELU", "batch 4", "batch 16"} <= set(pb.lever_settings(ours))
    assert PretrainConfig(**pb.TODAY).chunked_loss is False and PretrainConfig(**pb.TODAY).fused_gelu is False


def test_the_settings_take_turns_and_the_median_turn_counts(monkeypatch):
    turns = []

    class Loop:  # a stand-in loop: records its turns, takes no time
        def __init__(self, cfg, blocks, tokenizer, threads):
            self.cfg = cfg

        def turn(self, steps):
            turns.append((self.cfg.batch_size, steps))
            return 1.0 + len(turns)  # seconds

        def row(self, turns, steps, peak):
            return {"turns": len(turns)}

    monkeypatch.setattr(pb, "LeverLoop", Loop)
    monkeypatch.setattr(pb, "gemm_turn", lambda: (lambda: turns.append("peak") or 0.5, 8.0))
    rows, peak = pb.lever_table(SMALL, None, None, steps=3, only=("ours", "batch 2", "batch 8"), rounds=2)
    first, second = turns[:4], turns[4:]  # the peak and one turn each, then again, in a new order
    assert sorted(map(str, first)) == sorted(map(str, second)) == sorted(map(str, ["peak", (4, 3), (2, 3), (8, 3)]))
    assert peak == 8.0 / 0.5 and rows["ours"]["turns"] == 2  # each row gets its own turns' times
    assert set(rows) == {"ours", "batch 2", "batch 8"} and rows["batch 2"]["changes"] == {"batch_size": 2}


def test_verdicts_compare_ours_with_each_toggle():
    rows = {"today": {"tokens_per_s": 100.0}, "today in fp32": {"tokens_per_s": 150.0},
            "ours": {"tokens_per_s": 300.0}, "bf16 autocast": {"tokens_per_s": 60.0},
            "AdamW foreach": {"tokens_per_s": 400.0}, "batch 16": {"tokens_per_s": 400.0}}
    verdicts = pb.lever_verdicts(rows)
    assert set(verdicts) == {"bf16 autocast", "AdamW foreach", "batch 16"}
    assert verdicts["bf16 autocast"].startswith("ours as is") and "(5.00x)" in verdicts["bf16 autocast"]
    assert pb.LEVER_NOTES["bf16 autocast"] in verdicts["bf16 autocast"]  # the note travels with the number
    assert "no native bf16" in pb.bf16_note(False) and "natively" in pb.bf16_note(True)
    tie = pb.lever_verdicts({**rows, "AdamW foreach": {"tokens_per_s": 306.0}})["AdamW foreach"]
    assert tie.startswith("a tie within 3%") and "(0.98x)" in tie
    assert verdicts["AdamW foreach"].startswith("FASTER than ours") and "(0.75x)" in verdicts["AdamW foreach"]
    # the batch and dropout change what a run learns: faster is not enough to switch
    assert verdicts["batch 16"].startswith("faster, kept for") and "updates" in verdicts["batch 16"]
    # bf16 is fast only on a CPU that has it natively: faster here does not change the default
    bf16 = pb.lever_verdicts({**rows, "bf16 autocast": {"tokens_per_s": 450.0}})["bf16 autocast"]
    assert bf16.startswith("faster on this CPU, kept fp32") and "(0.67x)" in bf16


def test_a_toggle_faster_by_the_median_alone_changes_nothing():
    ours = {"tokens_per_s": 300.0, "turn_tokens_per_s": [300.0, 290.0, 310.0, 300.0, 280.0]}
    lucky = {"tokens_per_s": 340.0, "turn_tokens_per_s": [340.0, 280.0, 350.0, 290.0, 270.0]}  # 2 of 5
    steady = {"tokens_per_s": 340.0, "turn_tokens_per_s": [340.0, 330.0, 350.0, 320.0, 330.0]}  # 5 of 5
    assert pb.rounds_faster(lucky, ours) == (2, 5) and pb.rounds_faster(steady, ours) == (5, 5)
    verdicts = pb.lever_verdicts({"ours": ours, "AdamW foreach": lucky, "torch.compile": steady})
    assert verdicts["AdamW foreach"].startswith("faster by the median but not in most rounds")
    assert "faster in 2 of 5 rounds" in verdicts["AdamW foreach"]
    assert verdicts["torch.compile"].startswith("FASTER than ours") and "5 of 5 rounds" in verdicts["torch.compile"]


def test_time_schedule_warms_up_then_decays_to_the_floor():
    peak, floor = 1e-3, 1e-4
    assert race.time_schedule(race.WARMUP_FRACTION / 2, peak, floor) == pytest.approx(peak / 2)
    assert race.time_schedule(race.WARMUP_FRACTION, peak, floor) == pytest.approx(peak)
    assert race.time_schedule(1.0, peak, floor) == pytest.approx(floor)
    later = [race.time_schedule(f / 10, peak, floor) for f in range(1, 11)]
    assert all(a >= b for a, b in zip(later, later[1:]))


def test_both_recipes_see_the_same_held_out_characters(gpt2_tok):
    train, val = race.char_texts()
    docs = pretrain_data.split_documents(pretrain_data.corpus_documents())[1]
    assert val == "".join(d.text + "\n\n" for d in docs) and not set(val) - set(train + val)
    tokens = len(pretrain_data.token_stream(docs, gpt2_tok))  # one EOS per piece
    assert race.tokens_per_char(gpt2_tok) == pytest.approx(tokens / len(val))
    assert 0.2 < race.tokens_per_char(gpt2_tok) < 0.4  # GPT-2 BPE: ~3 characters per token of English


def test_a_tiny_bench_reports_mfu_and_bits_per_character(gpt2_tok):
    short = {"n_layer": 2, "weight_decay": 0.0}
    out = pb.pretrain_bench(seconds=1, steps=1, ours=SMALL, recipe=SMALL_CHARS, rounds=2,
                            only=("today", "today in fp32", "ours"), tokenizer=gpt2_tok, short_budget=short)
    assert set(out["levers"]) == {"today", "today in fp32", "ours"} and out["verdicts"] == {}
    assert out["speedup_vs_today_fp32"] == pytest.approx(
        out["ours_tokens_per_s"] / out["levers"]["today in fp32"]["tokens_per_s"])
    head = out["levers"]["ours"]["head_rows"]  # ours scores the corpus's rows; today all of them
    assert head < out["levers"]["today"]["head_rows"] == len(gpt2_tok)
    assert out["race"]["pocket"]["head_rows"] == head  # the race trains ours, scores the full head
    peak = out["peak_gemm_gflops"] * 1e9
    for row in out["levers"].values():
        assert row["tokens_per_s"] > 0 and math.isfinite(row["loss"])
        assert row["mfu"] == pytest.approx(row["flops_per_token"] * row["tokens_per_s"] / peak)
    assert out["speedup"] == pytest.approx(out["ours_tokens_per_s"] / out["today_tokens_per_s"])
    race = out["race"]
    char, pocket = race["char"], race["pocket"]
    assert char["iterations"] >= 1 and pocket["steps"] >= 1
    assert char["bits_per_char"] == pytest.approx(char["val_nats_per_char"] / math.log(2))
    assert pocket["bits_per_char"] == pytest.approx(
        pocket["val_nats_per_token"] * pocket["tokens_per_char"] / math.log(2))
    assert race["pocket_better"] == (pocket["bits_per_char"] < char["bits_per_char"])
    # the short-budget recipe is ours with its changes; ours races too, as it is
    assert pocket["config"] == dataclasses.asdict(dataclasses.replace(SMALL, **short)) and race["short_budget"] == short
    ours_run = race["pocket_ours"]
    assert ours_run["config"] == dataclasses.asdict(SMALL) and ours_run["steps"] >= 1
    assert race["ours_better"] == (ours_run["bits_per_char"] < char["bits_per_char"])
    assert char["val_nats_per_char"] < math.log(char["vocab"]) + 1  # near a uniform guess, not garbage


def test_the_cli_entry_passes_its_options(monkeypatch):
    seen = {}
    monkeypatch.setattr(pb, "pretrain_bench", lambda **kw: seen.update(kw) or {"ok": 1})
    assert bench.main(["--only", "pretrain", "--seconds", "7", "--pretrain-steps", "2"]) == {
        "pretrain": {"ok": 1}}
    assert seen == {"seconds": 7.0, "steps": 2, "rounds": 5}
    with pytest.raises(SystemExit):
        bench.parse_args(["--only", "pretrain", "--seconds", "-1"])


def test_the_shape_sweep_trains_each_shape_for_the_same_time_and_names_the_best(gpt2_tok):
    shapes = {"small": {}, "deeper": {"n_layer": 2}}
    out = sweeps.shape_sweep(seconds=0.5, ours=SMALL, shapes=shapes, tokenizer=gpt2_tok)
    assert set(out["shapes"]) == {"small", "deeper"} and out["seconds_each"] == 0.5
    rows = out["shapes"]
    assert rows["deeper"]["parameters"] > rows["small"]["parameters"]
    assert all(r["tokens_seen"] > 0 and 0 < r["mfu"] and math.isfinite(r["val_nats_per_token"])
               for r in rows.values())
    assert out["best"] == min(rows, key=lambda name: rows[name]["val_nats_per_token"])
    for changes in sweeps.SHAPES.values():  # each candidate passes the CLI's checks
        check_config(dataclasses.replace(PretrainConfig(), **changes))


def test_the_shape_sweep_runs_only_when_named(monkeypatch):
    ran = []
    monkeypatch.setitem(bench.BENCHMARKS, "pretrain-shapes", lambda args: ran.append("shapes") or {})
    for name in set(bench.BENCHMARKS) - {"pretrain-shapes"}:
        monkeypatch.setitem(bench.BENCHMARKS, name, lambda args: {})
    bench.main(["--json"])
    assert ran == []
    bench.main(["--only", "pretrain-shapes", "--json"])
    assert ran == ["shapes"]


def test_the_dropout_probe_repeats_a_slice_of_the_split_at_each_rate(gpt2_tok):
    out = sweeps.dropout_probe(seconds=0.5, slice_of=8, ours=SMALL, rates=(0.0, 0.2), tokenizer=gpt2_tok)
    whole = pretrain_data.pretraining_blocks(gpt2_tok, SMALL.block_size)["train"]
    assert out["train_tokens"] == (len(whole) // 8) * SMALL.block_size
    runs = out["runs"]
    assert set(runs) == {"dropout 0", "dropout 0.2"}
    for run in runs.values():
        assert run["passes"] == pytest.approx(run["tokens_seen"] / out["train_tokens"])
        assert math.isfinite(run["val_nats_per_token"])
    assert out["best"] == min(runs, key=lambda name: runs[name]["val_nats_per_token"])
