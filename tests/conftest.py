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

# Under pytest-xdist (`-n 2`, pyproject.toml) each worker trains on one core: two workers with
# two threads each would fight over the two cores, and a tiny model gains little from a second
# thread. The variables reach what the tests start (pipelines, notebook kernels); torch in this
# process reads its own setting, set below before any test imports it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    import torch

    torch.set_num_threads(1)


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
    that measure what it learned (test_learning) and what stage 3 moves from it (test_dpo)."""
    from utils.options import RunOptions
    from utils.pipeline import job as pipeline

    root = tmp_path_factory.mktemp("full-run")
    return pipeline.run("tiny", root / "full", RunOptions(num_samples=1))


# Tests that share a costly session fixture run on one xdist worker, in order: the notebooks
# share one class runs/ folder (08 reads what 06 and 07 trained), and one whole tiny run
# serves the learning, DPO and reward tests. Without xdist the marks do nothing.
SHARED_FIXTURE_GROUPS = {"class_runs": "notebooks", "tiny_full_run": "full_run"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, group in SHARED_FIXTURE_GROUPS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))
