"""Models for a profile: the hub's, the pocket base, tiny random-init models, and the two
context managers every measurement uses (eval mode, EOS that is not padding).

Real profiles load from the Hugging Face hub (safetensors only, never remote code). Offline,
`tiny` starts from the pocket model the course pretrained (models/pocket-gpt2, notebook 04b);
`tiny-llama`, and tests that need only shapes, build small random-init models around the
profile's tokenizer (utils.models.tokenizers). Introduced in notebooks 04 (architecture) and
06 (stage 1).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from utils.config import Profile, get_profile
from utils.models.hub import HUB_HELP, HubUnavailableError
from utils.models.tokenizers import load_tokenizer

# ---------------------------------------------------------------- tokenizers


# ---------------------------------------------------------------- models


def tiny_config(profile: Profile, tokenizer):
    """The config of a tiny profile's model (its depth and width), sized to the tokenizer."""
    m = profile.model
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if m.architecture == "gpt2":
        return GPT2Config(vocab_size=len(tokenizer), n_positions=m.n_positions, n_embd=m.n_embd,
                          n_layer=m.n_layer, n_head=m.n_head, **ids)
    # SwiGLU width ~ 8/3 * hidden, as in Llama; untied embeddings, as in DeepSeek-Coder.
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=m.n_embd,
                       intermediate_size=(8 * m.n_embd) // 3, num_hidden_layers=m.n_layer,
                       num_attention_heads=m.n_head, num_key_value_heads=m.n_head,
                       max_position_embeddings=m.n_positions, tie_word_embeddings=False, **ids)


def build_tiny_model(profile: Profile | str | None, tokenizer, seed: int = 0):
    """A random-init tiny model with a fixed seed: the same weights on every machine."""
    profile = get_profile(profile)
    config = tiny_config(profile, tokenizer)
    with _seeded(seed):
        cls = GPT2LMHeadModel if profile.model.architecture == "gpt2" else LlamaForCausalLM
        model = cls(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.loss_type = "ForCausalLM"  # GPT2LMHeadModel's name is not in the loss table: it would warn
    return model.eval()  # like from_pretrained: no dropout until a Trainer switches it on


@contextlib.contextmanager
def _seeded(seed: int):
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def load_model(profile: Profile | str | None = None, tokenizer=None, path=None,
               dtype: torch.dtype | None = None, device: torch.device | str | None = None):
    """The profile's model: the pocket base or a tiny random-init model offline, else
    `from_pretrained` (hub id or a local folder)."""
    profile = get_profile(profile)
    if path is None and profile.model.is_tiny and profile.model.pretrained_dir:
        model = load_local_base(profile.model.pretrained_dir, dtype)
    elif path is None and profile.model.is_tiny:
        model = build_tiny_model(profile, tokenizer or load_tokenizer(profile))
    else:
        source = str(path or profile.model.model_name_or_path)
        if path is None:  # about to download the weights: stop first if the run cannot fit
            from utils.models.fit import check_gpu_memory
            check_gpu_memory(profile)
        try:
            # safetensors only: a pickled .bin checkpoint could run arbitrary code on load.
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32,
                                                         use_safetensors=True)
        except OSError as error:
            raise HubUnavailableError(HUB_HELP.format(what=source, error=error)) from error
    # GPT2LMHeadModel's class name matches no key of transformers' loss table, so its first loss
    # would warn "loss_type=None ... unrecognized"; it is a causal LM and says so.
    model.loss_type = "ForCausalLM"
    if tokenizer is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if tokenizer is not None and model.config.pad_token_id is None:
        # GPT-2's config names no pad token; the Trainer would set it itself and warn "The
        # tokenizer has new PAD/BOS/EOS tokens that differ from the model config".
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device) if device is not None else model


@contextlib.contextmanager
def eval_mode(model):
    """Dropout off and no gradients while measuring; the model's old mode comes back after.

    Dropout would make a loss or a generation noisy, and a measurement inside a training loop
    (validation, samples) must leave the loop's mode as it was. The one switch every
    measurement uses: losses, generation, validation.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def eos_is_not_padding(model):
    """Inside the block the model's config names no pad token when its pad id is EOS.

    Packed training rows carry no attention mask (position_ids keep the examples apart), and a
    finished answer's row is filled with EOS while the others generate. GPT-2 sees an EOS at a
    row's end, takes it for the pad id its config names (pad == EOS here, as the Trainer sets
    it) and warns "We strongly recommend passing in an attention_mask". Nothing is padded
    there, so for the forward pass the config stops naming a pad token; nothing else reads it.
    """
    config = getattr(model, "config", None)
    pad = getattr(config, "pad_token_id", None)
    same = pad is not None and pad == getattr(config, "eos_token_id", None)
    if same:
        config.pad_token_id = None
    try:
        yield model
    finally:
        if same:
            config.pad_token_id = pad


def load_local_base(folder, dtype: torch.dtype | None = None):
    """A tiny profile's pretrained base from its folder (fp16 on disk, fp32 by default)."""
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the tiny profile's pretrained base is missing: no model.safetensors in {folder}. "
            "Restore it with `git checkout models/`, retrain it with `python -m utils.train.pretrain --rebuild-pocket` "
            "(about 35 minutes on 2 CPU cores), or use random init: config.random_init(profile)")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32,
                                                 use_safetensors=True)
    model.loss_type = "ForCausalLM"  # see load_model
    return model.eval()


def load_model_and_tokenizer(profile: Profile | str | None = None, path=None, **kwargs):
    """Tokenizer and model of a profile, the pair every notebook starts from."""
    tokenizer = load_tokenizer(profile, path=path)
    return load_model(profile, tokenizer=tokenizer, path=path, **kwargs), tokenizer


# ---------------------------------------------------------------- LoRA


