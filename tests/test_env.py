import sys
import types

import torch

from utils import env


def test_cpu_device_and_dtype():
    assert env.pick_device().type == "cpu"  # CI machines have no GPU
    assert env.pick_dtype("cpu") == torch.float32


def fake_gpu(monkeypatch, capability):
    """A CUDA device of the given compute capability; torch's bf16 check says yes, as it
    does on a T4 (it counts emulation by default)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def test_t4_trains_fp16_with_a_grad_scaler_never_emulated_bf16(monkeypatch):
    from utils.train.trainer import precision_flags

    fake_gpu(monkeypatch, (7, 5))  # T4
    assert env.pick_device().type == "cuda"
    assert env.pick_dtype() == env.pick_dtype("cuda") == torch.float16
    assert env.needs_grad_scaler(env.pick_dtype("cuda"))
    assert precision_flags("cuda") == {"bf16": False, "fp16": True}  # the Trainer then scales
    fake_gpu(monkeypatch, (7, 0))  # V100
    assert env.pick_dtype("cuda") == torch.float16


def test_ampere_and_later_train_bf16_without_a_scaler(monkeypatch):
    for capability in [(8, 0), (8, 9), (9, 0)]:  # A100, L4, H100
        fake_gpu(monkeypatch, capability)
        assert env.pick_dtype("cuda") == torch.bfloat16
        assert not env.needs_grad_scaler(torch.bfloat16)


def test_seed_repeats_random_numbers():
    env.set_seed(3)
    a = torch.rand(3)
    env.set_seed(3)
    assert torch.equal(a, torch.rand(3))


def test_describe_prints_profile_device_versions(capsys):
    info = env.describe("tiny-llama")
    out = capsys.readouterr().out
    assert info["profile"] == "tiny-llama" and "tiny-llama" in out
    assert info["device"] == "cpu" and info["transformers"].startswith("5.")
    assert "torch" in out and "peft" in out


def test_describe_warns_real_profile_on_cpu(capsys):
    env.describe("deepseek")
    assert ">= 24 GB" in capsys.readouterr().out


def test_colab_detection(monkeypatch):
    assert not env.in_colab()
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert env.in_colab()


def test_colab_install_never_touches_torch():
    calls = []
    cmd = env.install_colab_requirements(run=lambda c, check: calls.append(c))
    assert calls == [cmd]
    names = " ".join(cmd[4:])
    assert "transformers>=5.22,<6" in names and "peft" in names
    for skipped in ("torch>", "jupyterlab", "ipywidgets", "pytest", "playwright"):
        assert skipped not in names
    assert cmd[-1] == "huggingface-hub<2"  # Colab's diffusers and gradio reject hub 2.x
