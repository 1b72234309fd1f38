import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from utils.config import get_profile, random_init
from utils.models import hub, loading, lora, shapes, tokenizers
from utils.models.shapes import mfu, training_flops_per_token


def test_real_gpt2_tokenizer_offline(gpt2_tok):
    assert gpt2_tok("Hello world")["input_ids"] == [15496, 995]
    assert gpt2_tok.eos_token_id == 50256 and gpt2_tok.pad_token_id == 50256
    assert len(gpt2_tok) == 50257


def test_llama_style_tokenizer_adds_bos_and_pads_with_eos(llama_tok):
    ids = llama_tok("Hello world")["input_ids"]
    assert ids == [llama_tok.bos_token_id, 15496, 995]
    assert llama_tok("Hello world", add_special_tokens=False)["input_ids"] == [15496, 995]
    assert llama_tok.pad_token_id == llama_tok.eos_token_id != llama_tok.bos_token_id
    assert llama_tok.decode(ids, skip_special_tokens=True) == "Hello world"


def test_random_init_tiny_models_are_seeded_and_small(tiny_profile):
    tiny_profile = random_init(tiny_profile)
    tok = tokenizers.load_tokenizer(tiny_profile)
    a = loading.load_model(tiny_profile, tokenizer=tok)
    b = loading.load_model(tiny_profile, tokenizer=tok)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert a.config.vocab_size == len(tok)
    n_layers = getattr(a.config, "n_layer", getattr(a.config, "num_hidden_layers", None))
    assert n_layers == 2
    out = a(**tok("The sea", return_tensors="pt"))
    assert out.logits.shape[-1] == len(tok)


def test_seed_lora_line_for_gpt2():
    # The seed's printout for LoRA r=8 on GPT-2 124M, reproduced offline on a random init.
    model = lora.apply_lora(GPT2LMHeadModel(GPT2Config()), "gpt2")
    assert lora.trainable_parameter_line(model) == (
        "trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364")


def test_lora_targets_follow_peft_defaults(tiny_profile):
    model, _ = loading.load_model_and_tokenizer(tiny_profile)
    peft_model = lora.apply_lora(model, tiny_profile)
    names = {n.split(".")[-4] for n, p in peft_model.named_parameters() if p.requires_grad}
    expected = {"c_attn"} if tiny_profile.model.architecture == "gpt2" else {"q_proj", "v_proj"}
    assert names == expected
    trainable, total = shapes.count_parameters(peft_model)
    assert 0 < trainable / total < 0.003  # under 0.3% of the weights train


def test_parameter_counts_from_configs_alone():
    assert shapes.count_parameters_from_config("deepseek-coder-1.3b") == 1_346_471_936
    assert shapes.count_parameters_from_config("gpt2") == 124_439_808
    with pytest.raises(ValueError, match="unknown reference model"):
        shapes.reference_config("gpt5")


def test_merge_keeps_the_adapter_models_logits(tiny_profile):
    model, tok = loading.load_model_and_tokenizer(tiny_profile)
    peft_model = lora.apply_lora(model, tiny_profile)
    with torch.no_grad():  # make the adapters non-zero, as after training
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    peft_model.eval()
    batch = tok(["The tide comes in", "Moss on a stone"], return_tensors="pt", padding=True)
    with torch.no_grad():
        before = peft_model(**batch).logits
        merged = lora.merge_lora(peft_model)
        after = merged(**batch).logits
    from peft import PeftModel

    assert not isinstance(merged, PeftModel)  # the wrapper is gone: a plain transformers model
    assert torch.allclose(before, after, atol=1e-5)


def test_local_folder_loads_through_the_hub_path(tmp_path, tiny_profile):
    # A tiny model saved like a hub repo and loaded with the same function the real profiles use.
    model, tok = loading.load_model_and_tokenizer(tiny_profile)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors"))
    model2, tok2 = loading.load_model_and_tokenizer(tiny_profile, path=tmp_path)
    assert tok2("Hello world")["input_ids"] == tok("Hello world")["input_ids"]
    assert tok2.pad_token_id == tok.pad_token_id
    sd1, sd2 = model.state_dict(), model2.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_real_profile_without_hub_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    profile = get_profile("gpt2").replace(model={"model_name_or_path": "poet-course/no-such-model"})
    with pytest.raises(hub.HubUnavailableError, match="POET_PROFILE=tiny"):
        tokenizers.load_tokenizer(profile)
    with pytest.raises(hub.HubUnavailableError, match="local folder"):
        loading.load_model(profile, tokenizer=None)


def test_no_pickle_checkpoints(tmp_path, tiny_profile):
    model, tok = loading.load_model_and_tokenizer(tiny_profile)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    model.config.save_pretrained(tmp_path)
    with pytest.raises(Exception):
        loading.load_model(tiny_profile, path=tmp_path)  # safetensors only: a .bin is refused


def test_tiny_starts_from_the_pocket_model_and_says_so():
    profile = get_profile("tiny")
    model = loading.load_model(profile)
    assert model.dtype == torch.float32 and not model.training
    assert model.config.n_layer == 8 and model.config.vocab_size == 50257
    assert "pocket" in profile.model.base_description
    assert "random-init" in random_init(profile).model.base_description
    tok = tokenizers.load_tokenizer(profile)
    ids = tok("Shall I compare thee to a summer's day?", return_tensors="pt")["input_ids"]
    # A pretrained base predicts English far better than a uniform guess (ln 50257 = 10.8).
    assert model(input_ids=ids, labels=ids).loss.item() < 7.0


def test_missing_pocket_model_names_the_fixes(tmp_path):
    profile = get_profile("tiny").replace(model={"pretrained_dir": tmp_path})
    with pytest.raises(FileNotFoundError, match="git checkout models/.*python -m utils.train.pretrain"):
        loading.load_model(profile)


def test_flops_per_token_counts_parameters_and_attention():
    """One FLOPs formula for every benchmark and the pretraining card (utils.models.shapes)."""
    model = torch.nn.Linear(10, 10)  # 110 parameters
    model.config = type("C", (), {"num_hidden_layers": 2, "hidden_size": 10})()
    assert training_flops_per_token(model, context=5) == 6 * 110 + 12 * 2 * 10 * 5


def test_mfu_arithmetic():
    # GPT-2 on an A100: 6 * 124,439,808 FLOPs a token, 5,000 tokens/s, over 312 TFLOP/s
    assert mfu(6 * 124_439_808, 5_000, 312e12) == pytest.approx(7.46638848e12 / 2 / 312e12, rel=1e-12)
    assert mfu(6 * 124_439_808, 5_000, None) is None

