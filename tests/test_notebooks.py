"""Every notebook follows the course conventions and runs top to bottom in the tiny profile.

The measured wall time of each run is printed and written to runs/notebook_times.json;
the README's course map quotes those numbers.
"""

import json
import os
import time
from pathlib import Path

import nbformat
import pytest

from utils.course.notebook import convention_problems

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))  # 04b sits between 04 and 05
TIMES = ROOT / "runs" / "notebook_times.json"


def _ids(paths):
    return [p.stem for p in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_conventions(path):
    nb = nbformat.read(str(path), as_version=4)
    assert convention_problems(nb) == []


def test_setup_cell_is_identical_everywhere():
    code = [[c for c in nbformat.read(str(p), as_version=4).cells if c.cell_type == "code"][0].source
            for p in NOTEBOOKS]
    assert len(set(code)) <= 1


@pytest.fixture(scope="module")
def class_runs(tmp_path_factory):
    """One runs/ folder for the whole course, as a class uses it: 08 evaluates what 06 and 07
    trained, 09 rates it, 12 tunes 07's model. Each notebook also runs alone (it makes what it
    misses), which `pytest -k` exercises."""
    return tmp_path_factory.mktemp("class") / "runs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_runs_in_tiny_profile(path, class_runs):
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    os.environ.update(POET_PROFILE="tiny", MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false",
                      POET_RUNS_DIR=str(class_runs))
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    print(f"{path.name}: {seconds:.0f} s")
    TIMES.parent.mkdir(exist_ok=True)
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    times[path.name] = round(seconds, 1)
    TIMES.write_text(json.dumps(times, indent=2, sort_keys=True))


def test_the_notebook_runner_refuses_an_unknown_number_before_running_any(tmp_path):
    """tools/run_notebooks.py (the course map's runtimes, executed copies for test_prose)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "tools" / "run_notebooks.py"), "05", "99",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and not (tmp_path / "out").exists()  # 05 did not run either
    assert "error: '99' names 0 notebooks; use one of: 01, 02, 03, 04, 04b, 05" in done.stderr
