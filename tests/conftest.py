"""Shared fixtures: the tiny profile everywhere, fast tokenizers, sample-shaped data files."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("POET_PROFILE", "tiny")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def gpt2_tok():
    from utils.modeling import gpt2_tokenizer

    return gpt2_tokenizer()


@pytest.fixture(scope="session")
def llama_tok():
    from utils.modeling import llama_style_tokenizer

    return llama_style_tokenizer()


@pytest.fixture(params=["tiny", "tiny-llama"])
def tiny_profile(request):
    from utils.config import get_profile

    return get_profile(request.param)
