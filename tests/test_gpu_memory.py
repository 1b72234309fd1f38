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


T4_NOMINAL = 16 * GB  # the calculator's table uses the datasheet's 16 GB


def test_sharding_divides_the_states_not_the_activations():
    one = estimate_memory("deepseek-coder-1.3b", "full mixed precision", 2, 512)
    two = estimate_memory("deepseek-coder-1.3b", "full mixed precision", 2, 512, shards=2)
    for part in ("weights", "gradients", "optimizer"):
        assert two[part] == one[part] // 2
    assert two["activations"] == one["activations"]
    assert two["total"] == two["weights"] + two["gradients"] + two["optimizer"] + two["activations"]
    with pytest.raises(ValueError, match="shards must be at least 1"):
        estimate_memory("gpt2", "full fp32", shards=0)


def test_deepseek_on_two_t4s_sharded_stage2_fits_stage1_does_not(monkeypatch):
    """Sharded over 2 T4s, DeepSeek-Coder-1.3B's full fine-tuning (stage 2) needs 13.4 GiB per
    GPU instead of 24.7; stage 1 at the profile's batch of 8 x 512 keeps 8 rows of activations
    on every GPU, which sharding does not divide, so the guard still stops, and says per GPU."""
    monkeypatch.delenv(gpu_memory.IGNORE_ENV, raising=False)
    with pytest.raises(GPUMemoryError) as sharded:
        check_gpu_memory("deepseek", card_bytes=T4_NOMINAL, shards=2)
    assert "stage 2 (full fine-tuning, mixed precision): 13.4 GiB per GPU, sharded over 2 GPUs" in str(sharded.value)
    config = gpu_memory.model_config(gpu_memory.get_profile("deepseek"))
    stage1 = gpu_memory.stage_estimates(gpu_memory.get_profile("deepseek"), config, shards=2)
    assert max(stage1.values()) == stage1["stage 1 (LoRA r=8, fp32 base)"] > 0.9 * T4_NOMINAL
    # Unsharded on a machine with two GPUs, the guard names sharding first among the options.
    with pytest.raises(GPUMemoryError) as info:
        check_gpu_memory("deepseek", card_bytes=T4_NOMINAL, gpus=2)
    options = str(info.value).split("Options:")[1]
    assert options.strip().startswith("- shard the model over this machine's 2 GPUs (FSDP): 13.4 GiB per GPU")
    assert str(gpu_memory.FSDP_CONFIG.relative_to(gpu_memory.REPO_ROOT)) in options
    with pytest.raises(GPUMemoryError) as single:
        check_gpu_memory("deepseek", card_bytes=T4_NOMINAL, gpus=1)
    assert "shard" not in str(single.value)


def test_an_fsdp_launch_is_estimated_per_gpu(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert gpu_memory.fsdp_shards() == 2
    with pytest.raises(GPUMemoryError, match="per GPU, sharded over 2 GPUs"):
        check_gpu_memory("deepseek", card_bytes=T4_NOMINAL)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert gpu_memory.fsdp_shards() == 1


def test_the_fsdp_config_is_what_the_estimate_assumes():
    """The shipped accelerate config shards everything over 2 processes and saves whole models.

    Not run here: torch's FSDP on CPUs with gloo would need two processes each holding a model
    on this 2-core machine, and accelerate's FSDP path expects GPUs; the config and the
    estimate are tested instead.
    """
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(gpu_memory.FSDP_CONFIG))
    assert config.distributed_type == "FSDP" and config.num_processes == 2
    fsdp = config.fsdp_config
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD"  # weights, gradients and states: shards=2
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # save_model writes a normal folder
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert config.mixed_precision == "fp16"  # a T4 has no native bf16


def fake_t4(monkeypatch, count=1):
    class Props:
        total_memory = T4
        name = "Tesla T4"

    monkeypatch.delenv(gpu_memory.IGNORE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())


def test_the_pipeline_stops_on_a_t4_before_any_download(monkeypatch, tmp_path):
    """deepseek on a T4: the guard stops the run before the tokenizer, the data or the weights."""
    import huggingface_hub
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from utils.data import sources
    from utils.models import tokenizers
    from utils.pipeline import job

    fake_t4(monkeypatch)
    calls = []
    record = lambda name: lambda *a, **k: calls.append(name) or 1 / 0  # noqa: E731
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", record("tokenizer"))
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", record("weights"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", record("dataset"))
    monkeypatch.setattr(sources, "hub_snapshot", record("dataset"))
    monkeypatch.setattr(tokenizers, "load_tokenizer", record("tokenizer"))
    with pytest.raises(GPUMemoryError, match="needs more GPU memory") as info:
        job.run("deepseek", tmp_path / "run")
    assert calls == []
    assert not (tmp_path / "run").exists()  # nothing written either
    assert "LoRA for stage 2" in str(info.value)
    # Only the data stage: no model will train, so nothing to guard, and the data stage starts.
    with pytest.raises(ZeroDivisionError):
        job.run("deepseek", tmp_path / "data-only", stages=["data"])
    assert calls and set(calls) <= {"tokenizer", "dataset"}


def test_the_setup_cell_tells_a_t4_with_deepseek_the_options(monkeypatch, capsys):
    from utils.models import setup_check

    fake_t4(monkeypatch, count=2)
    warning = setup_check("deepseek")
    assert warning.startswith("warning: the deepseek profile needs more GPU memory")
    assert "shard the model over this machine's 2 GPUs" in warning
    assert warning in capsys.readouterr().out
    assert setup_check("gpt2") is None  # it fits: the setup cell says "memory check: fits"


def test_notebook_11_prints_the_sharded_estimate_for_deepseek_on_two_t4s(capsys):
    import nbformat

    from utils.config import REPO_ROOT
    from utils.models import memory

    nb = nbformat.read(REPO_ROOT / "notebooks" / "11_efficient_training.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and "shards=2" in c.source]
    exec(cell.source, {"memory": memory})
    out = capsys.readouterr().out
    assert "stage 2 (full fine-tuning, mixed precision): 13.4 GiB per GPU, sharded over 2 GPUs" in out
    assert "14.4 GiB usable of 16.0 GiB" in out  # a T4's datasheet 16 GB, 90% usable
