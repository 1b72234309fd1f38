"""The real profiles end to end, offline: rehearsals through a stand-in hub cache (tests/hub_cache.py).

Each test builds the cache in the hub's own layout, then runs `python -m utils.pipeline` in a
fresh process with HF_HOME pointing at it and HF_HUB_OFFLINE=1, so `from_pretrained` and
`snapshot_download` find the files as they would after a download. Batch 1, a few rows, one
step per training stage: the point is the path, not the numbers.
"""

import json
import os
import subprocess
import sys

import pytest

from hub_cache import add_datasets, add_model
from utils.course.seed_facts import GPT2
from utils.models.shapes import reference_config
from utils.models.tokenizers import gpt2_bpe_files, llama_style_tokenizer
from utils.runs import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The deck's LoRA line for GPT-2 (r=8 on c_attn), printed by peft in stage 1.
DECK_LORA_LINE = "trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364"
# What a user cannot act on, and the course fixed at its cause (utils/data/tokenize.py QUIET,
# utils/models/lora.py save_embedding_layers, utils/models/loading.py pad_token_id).
LIBRARY_NOTICES = ("Could not find a config file", "longer than the specified maximum",
                   "Warning", "warnings.warn", "differ from the model config")


def pipeline(hf_home, runs, *args, timeout=900):
    """`python -m utils.pipeline ARGS` offline against the stand-in cache; (stdout+stderr)."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "POET_RUNS_DIR": str(runs),
           "PYTHONWARNINGS": "default"}  # show every warning once, as a user's shell would
    env.pop("POET_PROFILE", None)
    done = subprocess.run([sys.executable, "-m", "utils.pipeline", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return output


def assert_no_library_notice(output: str):
    found = [line for line in output.splitlines() if any(n in line for n in LIBRARY_NOTICES)]
    assert not found, "library notices a user cannot act on:\n" + "\n".join(found)


def rehearsal_report(runs) -> dict:
    (path,) = (runs / "rehearsals").glob("*.json")
    return json.loads(path.read_text())


def gpt2_cache(hf_home):
    """openai-community/gpt2 as after a download: GPT2Config() (124M), random weights, the real BPE."""
    from transformers import GPT2Config, GPT2Tokenizer

    vocab, merges = gpt2_bpe_files()
    add_model(hf_home, GPT2, GPT2Config(), GPT2Tokenizer(vocab=dict(vocab), merges=list(merges)), 1024)
    add_datasets(hf_home, "gpt2")


@pytest.mark.slow
def test_gpt2_rehearses_at_its_real_shape_offline(tmp_path):
    """The gpt2 profile's every stage at 124M, then its real path (the cached weights by hub id)."""
    hf_home, runs = tmp_path / "hf", tmp_path / "runs"
    gpt2_cache(hf_home)
    output = pipeline(hf_home, runs, "--profile", "gpt2", "--rehearse", "--max-steps", "1")
    assert DECK_LORA_LINE in output
    assert "config from the hub cache" in output and "tokenizer: the hub cache" in output
    assert "data: the hub cache" in output
    assert output.count("REHEARSAL: random weights") >= 2  # before the stages and in the report
    report = rehearsal_report(runs)
    assert [row["stage"] for row in report["stages"]] == [
        "data", "stage1", "merge", "stage2", "evaluate", "report"]
    training = {row["stage"]: row for row in report["stages"] if row["calculator_mb"]}
    assert set(training) == {"stage1", "stage2"} and all(r["peak_mb"] > 0 for r in training.values())
    for stage in ("stage1", "stage2"):
        run = report["full_run"][stage]
        assert run["tokens_per_second"] > 0 and run["seconds"] > 0 and run["optimizer_steps"] >= 1
    assert_no_library_notice(output)
    # The real path itself: from_pretrained("openai-community/gpt2") reads the cached weights,
    # and stage 1 saves its adapter offline without peft's notice.
    real = pipeline(hf_home, runs, "--profile", "gpt2", "--stages", "data,stage1", "--max-steps", "1",
                    "--max-rows", "8", "--run-name", "real")
    assert DECK_LORA_LINE in real
    assert (runs / "real" / registry.STAGE1_ADAPTER / "adapter_config.json").exists()
    assert_no_library_notice(real)


@pytest.mark.slow  # 166 s on the shared 2-core machine (load ~10)
def test_deepseek_rehearses_its_architecture_and_tokenizer_at_reduced_size(tmp_path):
    """DeepSeek-Coder's family (Llama: RoPE with linear scaling, SwiGLU, untied embeddings) and
    tokenizer conventions (BOS added, pad == eos) at 2 layers x 256. The full 1.3B does not fit
    a 24 GB CPU machine for full fine-tuning: 16 bytes per parameter in fp32 is 21.6 GB before
    any activation, so the suite rehearses its shape family, not its size."""
    hf_home, runs = tmp_path / "hf", tmp_path / "runs"
    tok = llama_style_tokenizer()
    config = reference_config("deepseek-coder-1.3b")
    config.update(dict(num_hidden_layers=2, hidden_size=256, intermediate_size=688,
                       num_attention_heads=4, num_key_value_heads=4, vocab_size=len(tok),
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    add_model(hf_home, "deepseek-ai/deepseek-coder-1.3b-base", config, tok, 16384)
    add_datasets(hf_home, "deepseek")
    output = pipeline(hf_home, runs, "--profile", "deepseek", "--rehearse", "--max-steps", "1")
    assert "config from the hub cache" in output and "tokenizer: the hub cache" in output
    assert "target_modules" not in output  # peft found Llama's q_proj/v_proj by itself
    report = rehearsal_report(runs)
    assert report["sources"]["vocabulary_note"] is None  # the cached config fits its tokenizer
    assert report["full_run"]["stage2"]["effective_batch"] == 8  # deepseek: 2 rows x 4 accumulation
    assert_no_library_notice(output)


def test_the_full_run_plan_counts_the_real_profiles_steps(gpt2_tok):
    from utils.config import get_profile
    from utils.data.prepare import prepare_data
    from utils.pipeline.rehearsal import full_run_plan

    gpt2 = get_profile("gpt2")
    prepared = prepare_data(gpt2.replace(data={"source": "sample"}), gpt2_tok)
    plan = full_run_plan(gpt2, prepared, gpt2_tok)
    rows = plan["stage2"]["rows"]
    # 5 epochs of the kept rows in steps of 2 x 16 = 32 rows
    assert plan["stage2"]["optimizer_steps"] == -(-5 * rows // 32) and plan["stage2"]["epochs"] == 5
    assert plan["stage1"]["tokens"] == plan["stage1"]["rows"] * 512  # one epoch of full blocks


def test_a_rehearsal_too_big_for_this_cpu_stops_first(monkeypatch, capsys):
    """deepseek's full size on a CPU with 8 GiB free: one line, before any model is built."""
    from utils.models import memory
    from utils.pipeline import job, rehearsal as rehearse

    monkeypatch.setattr(rehearse, "free_memory_bytes", lambda: 8 * memory.GB)
    monkeypatch.setattr(rehearse, "build_standin", lambda *a: 1 / 0)  # must not be reached
    monkeypatch.setattr(rehearse, "rehearsal_config",
                        lambda p: (reference_config("deepseek-coder-1.3b"), "the offline reference"))
    monkeypatch.setattr(rehearse, "rehearsal_tokenizer", lambda p, c: (llama_style_tokenizer(), "stand-in"))
    with pytest.raises(SystemExit) as stop:
        job.cli(["--profile", "deepseek", "--rehearse"])
    message = str(stop.value.code)
    assert message.startswith("error: --rehearse: the deepseek profile's stage 2 (full fine-tuning, "
                              "fp32, batch 1) needs ")
    assert "more than the 8.0 GiB free here; rehearse it on a GPU" in message
