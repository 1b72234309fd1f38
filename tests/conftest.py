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
    from utils.models.tokenizers import gpt2_tokenizer

    return gpt2_tokenizer()


@pytest.fixture(scope="session")
def llama_tok():
    from utils.models.tokenizers import llama_style_tokenizer

    return llama_style_tokenizer()


@pytest.fixture(params=["tiny", "tiny-llama"])
def tiny_profile(request):
    from utils.config import get_profile

    return get_profile(request.param)


@pytest.fixture(scope="session")
def tiny_full_run(tmp_path_factory):
    """One whole `tiny` pipeline run (pocket base, the profile's own steps), shared by the tests
    of what the stages write (test_pipeline), what it learned (test_learning), and stages 3 and
    4 started from it (test_dpo, test_reward)."""
    from utils.options import RunOptions
    from utils.pipeline import job as pipeline

    root = tmp_path_factory.mktemp("full-run")
    return pipeline.run("tiny", root / "full", RunOptions(num_samples=1))

