"""Library drift: every keyword the code passes to a library API exists in the installed version.

transformers v5 renamed many arguments (evaluation_strategy -> eval_strategy, tokenizer ->
processing_class, torch_dtype -> dtype); a stale keyword either raises late, in a student's
notebook, or is silently ignored. This test reads the calls in utils/ and checks their keywords
against `inspect.signature`, plus the dictionaries the code builds at run time.
"""

import ast
import inspect
from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from transformers import GenerationConfig, GenerationMixin, Trainer, TrainingArguments
from trl import DPOConfig, DPOTrainer

from utils.config import get_profile
from utils.prefer import dpo
from utils.train import trainer as training

ROOT = Path(__file__).resolve().parent.parent


def _params(fn) -> set[str]:
    return set(inspect.signature(fn).parameters)


def _generation_keys() -> set[str]:
    # generate() takes its own parameters, any GenerationConfig field, and the model's inputs.
    model_inputs = {"input_ids", "attention_mask", "position_ids"}
    return _params(GenerationMixin.generate) | set(GenerationConfig().to_dict()) | model_inputs


TARGETS = {
    "TrainingArguments": lambda: _params(TrainingArguments),
    "Trainer": lambda: _params(Trainer.__init__),
    "PoetTrainer": lambda: _params(Trainer.__init__) | {"stats", "loss_fn"},  # our own two
    "LoraConfig": lambda: _params(LoraConfig),
    "GenerationConfig": lambda: set(GenerationConfig().to_dict()),
    "generate": _generation_keys,
    "DPOConfig": lambda: _params(DPOConfig),
    "DPOTrainer": lambda: _params(DPOTrainer.__init__),
}


def _calls():
    """(file, line, target, keyword) for every literal keyword of a watched call in utils/ and bench/."""
    for path in sorted([*(ROOT / "utils").rglob("*.py"), *(ROOT / "bench").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in TARGETS:
                for kw in node.keywords:
                    if kw.arg is not None:  # **kwargs are checked at run time below
                        yield str(path.relative_to(ROOT)), node.lineno, name, kw.arg


def test_the_scan_sees_the_calls():
    seen = {target for _, _, target, _ in _calls()}
    assert {"LoraConfig", "generate", "PoetTrainer", "DPOTrainer"} <= seen


def test_literal_keywords_exist():
    allowed = {name: make() for name, make in TARGETS.items()}
    stale = [f"{f}:{line} {target}({kw}=...)" for f, line, target, kw in _calls()
             if kw not in allowed[target]]
    assert stale == []


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_training_arguments_built_at_run_time(tmp_path, monkeypatch, device):
    # On a GPU the precision flags differ (fp16 on a T4, bf16 on Ampere+): check those keys too.
    seen = {}
    monkeypatch.setattr(training, "TrainingArguments", lambda **kw: seen.update(kw) or kw)
    monkeypatch.setattr(training, "pick_device", lambda: torch.device(device))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 5))  # a T4
    training.training_arguments(get_profile("gpt2").stage2, tmp_path)
    assert set(seen) - _params(TrainingArguments) == set()
    assert seen["fp16"] == (device == "cuda") and seen["bf16"] is False


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_dpo_config_built_at_run_time(tmp_path, monkeypatch, device):
    # trl 1.x: one max_length (no max_prompt_length), loss_type a list, TRL's own bf16 default.
    seen = {}
    monkeypatch.setattr("trl.DPOConfig", lambda **kw: seen.update(kw) or kw)
    monkeypatch.setattr(dpo, "pick_device", lambda: torch.device(device))
    monkeypatch.setattr(training, "pick_device", lambda: torch.device(device))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 5))  # a T4
    dpo.dpo_arguments(dpo.preference_config("gpt2"), tmp_path)
    assert set(seen) - _params(DPOConfig) == set()
    checkpointing = seen.get("activation_checkpointing", seen.get("gradient_checkpointing"))
    assert seen["loss_type"] == ["sigmoid"] and checkpointing is False
    assert seen["bf16"] is False and seen["fp16"] == (device == "cuda")


def test_decoding_settings_are_generation_config_fields():
    keys = set(get_profile("tiny").decode.generate_kwargs())
    assert keys - set(GenerationConfig().to_dict()) == set()
