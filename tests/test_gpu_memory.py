"""The memory check before a real profile downloads weights, on faked cards."""

import pytest
import torch

from utils.models import fit as gpu_memory
from utils.models.fit import GPUMemoryError, check_gpu_memory
from utils.models.memory import GB, estimate_memory

T4 = int(15.0 * GB)  # what torch reports for a 16 GB T4
L4 = int(22.0 * GB)
A100_80 = int(79.2 * GB)


def test_deepseek_on_a_t4_or_l4_stops_with_the_options(monkeypatch):
    monkeypatch.delenv(gpu_memory.IGNORE_ENV, raising=False)
    need = estimate_memory("deepseek-coder-1.3b", "full mixed precision", 2, 512)["total"]
    for card in (T4, L4):
        with pytest.raises(GPUMemoryError) as info:
            check_gpu_memory("deepseek", card_bytes=card)
        text = str(info.value)
        assert f"{need / GB:.1f} GiB" in text  # the calculator's own number for stage 2
        for option in ("LoRA for stage 2", "gradient checkpointing", "8-bit optimizer",
                       "a bigger card: A100-40GB, A100-80GB", gpu_memory.IGNORE_ENV):
            assert option in text


def test_fitting_runs_and_asked_for_runs_go_on(monkeypatch, capsys):
    monkeypatch.delenv(gpu_memory.IGNORE_ENV, raising=False)
    assert set(check_gpu_memory("gpt2", card_bytes=T4)) == {
        "stage 1 (LoRA r=8, fp32 base)", "stage 2 (full fine-tuning, mixed precision)"}
    assert check_gpu_memory("deepseek", card_bytes=A100_80) is not None
    assert "memory check: fits" in capsys.readouterr().out
    assert check_gpu_memory("deepseek", card_bytes=T4, ignore=True) is not None
    monkeypatch.setenv(gpu_memory.IGNORE_ENV, "1")
    assert check_gpu_memory("deepseek", card_bytes=T4) is not None
    assert "going on" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path: a GPU here has a card to check")
def test_nothing_to_check_on_a_cpu_or_a_tiny_profile():
    assert check_gpu_memory("deepseek") is None
    assert check_gpu_memory("tiny", card_bytes=T4) is None


def test_load_model_checks_before_downloading(monkeypatch):
    """On a faked T4 the deepseek profile stops before from_pretrained is ever called."""
    from transformers import AutoModelForCausalLM

    from utils.models import loading as modeling

    class Props:
        total_memory = T4

    monkeypatch.delenv(gpu_memory.IGNORE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    downloads = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: downloads.append(a) or 1 / 0)
    with pytest.raises(GPUMemoryError, match="needs more GPU memory"):
        modeling.load_model("deepseek")
    assert downloads == []


@pytest.mark.parametrize("value, expected", [("1", True), ("TRUE", True), ("true", True),
                                             ("0", False), ("False", False), ("", False)])
def test_the_memory_switch_takes_only_documented_values(monkeypatch, value, expected):
    from utils.env import env_flag

    monkeypatch.setenv(gpu_memory.IGNORE_ENV, value)
    assert env_flag(gpu_memory.IGNORE_ENV) is expected


@pytest.mark.parametrize("value", ["no", "off", "yes", "2"])
def test_an_undocumented_switch_value_is_refused_not_read_as_on(monkeypatch, value):
    monkeypatch.setenv(gpu_memory.IGNORE_ENV, value)
    with pytest.raises(ValueError, match=rf"{gpu_memory.IGNORE_ENV}='{value}' is not a switch "
                                         r"value; set it to 1 or true \(on\), 0 or false \(off\)"):
        check_gpu_memory("deepseek", card_bytes=T4)
