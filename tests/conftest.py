"""Shared fixtures: the tiny profile everywhere, fast tokenizers, sample-shaped data files.

The suite runs on two worker processes (pytest-xdist, `-n 2` in pyproject.toml; `-n 0` runs it
in one process). Each worker gets its share of the CPU cores as torch threads, and the tests
that share work run on one worker, longest chain first (see pytest_collection_modifyitems).
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("POET_PROFILE", "tiny")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _worker_threads() -> int | None:
    """CPU cores / workers under xdist (None in one process: torch's own count). Two workers
    with torch's two threads each would put four busy threads on two cores, and a torch thread
    that waits for a descheduled partner only spins."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    return max(1, (os.cpu_count() or 1) // workers) if workers else None


WORKER_THREADS = _worker_threads()
if WORKER_THREADS:
    # The environment reaches what the tests start too: notebook kernels, CLI subprocesses.
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_name] = str(WORKER_THREADS)
    if "torch" in sys.modules:  # imported before this file by a plugin: set it there too
        sys.modules["torch"].set_num_threads(WORKER_THREADS)


# Work units, first to last. A unit runs on one worker, in order: the notebooks that read each
# other's runs (08 evaluates what 06 and 07 trained, 09 rates samples, 10 repeats stage 2 from
# 06's model, 12 and 13 tune 07's model: the longest chain, so it starts first); the modules
# that share the session's whole tiny run (`tiny_full_run`, built once); the browser tests,
# which share one JupyterLab server.
# Every other test is a unit of its own. The units are named from node ids, which is all the
# scheduler sees (xdist's own `loadgroup` marks do not reach it under pytest 9.2).
# The class runs out of order, as a class that starts at 08 would (issue #25): 08 makes 06's
# and 07's runs as those notebooks would, 07 and then 06 take their runs over, 12 tunes 07's
# model; then 09 rates 12's stage 2 against stage 3 (tests/test_notebooks.py's PARAMETERS),
# 10 repeats stage 2 from 06's model and 13 tunes 07's.
CLASS_CHAIN = ("08_", "07_", "12_", "06_", "09_", "10_", "13_")
FULL_RUN_MODULES = ("test_dpo.py", "test_learning.py", "test_pipeline.py", "test_reward.py")
BROWSER_MODULES = ("test_e2e_jupyterlab.py",)
UNIT_ORDER = ("class-notebooks", "tiny-full-run")


def work_unit(nodeid: str) -> str:
    """The unit a test belongs to: a shared one's name, else the test's own node id."""
    module = nodeid.split("::")[0].rsplit("/", 1)[-1]
    if "::test_runs_in_tiny_profile[" in nodeid and nodeid.split("[", 1)[1].startswith(CLASS_CHAIN):
        return "class-notebooks"
    if module in FULL_RUN_MODULES:
        return "tiny-full-run"
    if module in BROWSER_MODULES:
        return "jupyterlab"
    return nodeid


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class SharedWorkScheduling(LoadScopeScheduling):
        """xdist's loadscope, with work_unit's units in collection order."""

        def _split_scope(self, nodeid):
            return work_unit(nodeid)

    return SharedWorkScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """The shared units first, longest first (xdist hands out units in this order); a test
    outside FULL_RUN_MODULES that asks for the whole run is refused: it would build a second."""
    strays = [i.nodeid for i in items if "tiny_full_run" in getattr(i, "fixturenames", ())
              and work_unit(i.nodeid) != "tiny-full-run"]
    if strays:
        raise pytest.UsageError(f"{strays[0]} uses tiny_full_run: add its module to FULL_RUN_MODULES "
                                "in tests/conftest.py")

    def rank(item):
        unit = work_unit(item.nodeid)
        if unit == "class-notebooks":  # in CLASS_CHAIN's order, not the files'
            return (0, CLASS_CHAIN.index(item.nodeid.split("[", 1)[1][:3]))
        return (UNIT_ORDER.index(unit) if unit in UNIT_ORDER else len(UNIT_ORDER), 0)
    items.sort(key=rank)  # stable: the tests keep their order within a rank


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

