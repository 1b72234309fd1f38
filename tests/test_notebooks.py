"""Every notebook follows the course conventions and runs top to bottom in the tiny profile.

The measured wall time of each run is printed and written to runs/notebook_times.json; with
POET_KEEP_EXECUTED=<folder> the executed copies are written there (what tests/test_prose.py
reads with POET_EXECUTED_NOTEBOOKS=<folder>), so one suite run also gives the outputs to read. In the
suite each worker has one of the two cores, so these times run longer than a student's; the
README's course map quotes `tools/run_notebooks.py`, which runs notebooks with every core.
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
KEEP_EXECUTED = "POET_KEEP_EXECUTED"  # a folder: each executed notebook is written there too


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
    """One runs/ folder for the whole course, as a class uses it, and out of order (the order is
    tests/conftest.py's CLASS_CHAIN): 08 first makes 06's and 07's runs, which 07 and 06 then
    take over; 12 tunes 07's model, 09 rates 12's answers, 10 repeats stage 2 from 06's model.
    Each notebook also runs alone (it makes what it misses), which `pytest -k` exercises."""
    return tmp_path_factory.mktemp("class") / "runs"


# Parameters the class sets before a notebook runs, as papermill would: a cell after the
# `parameters` cell. In the out-of-order class, 07 retrains after 08 and its run loses 08's
# samples, so 09 rates the samples 12 writes (stage 2 against stage 3), which 09's parameters
# cell offers as the other choice.
PARAMETERS = {"09_human_preference": {"SAMPLES_RUN": "12-dpo-tiny"}}


def with_parameters(nb, values: dict):
    """The notebook with a cell setting `values` right after its `parameters` cell."""
    if values:
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()))
        cell.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(at + 1, cell)
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_runs_in_tiny_profile(path, class_runs):
    from nbclient import NotebookClient

    nb = with_parameters(nbformat.read(str(path), as_version=4), PARAMETERS.get(path.stem, {}))
    os.environ.update(POET_PROFILE="tiny", MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false",
                      POET_RUNS_DIR=str(class_runs))
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    print(f"{path.name}: {seconds:.0f} s")
    record_time(path.name, seconds)
    if os.environ.get(KEEP_EXECUTED):  # the executed copy, for reading and for test_prose
        Path(os.environ[KEEP_EXECUTED]).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(Path(os.environ[KEEP_EXECUTED]) / path.name))
    if path.stem in OUTCOMES:
        OUTCOMES[path.stem](class_runs)


def record_time(name: str, seconds: float) -> None:
    """Add one notebook's time to TIMES; a lock, as both test workers write the file."""
    import fcntl

    TIMES.parent.mkdir(exist_ok=True)
    with open(TIMES.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
        times[name] = round(seconds, 1)
        TIMES.write_text(json.dumps(times, indent=2, sort_keys=True))


# What a notebook's run must have written or moved, read from the metrics it wrote to the
# class's runs/ folder. Stage 3's is its done-when in the tiny profile (stage 4's rise is
# printed: see reward_stage_moved_the_model): the notebooks run the
# same stage functions with the profile's settings as `python -m utils.pipeline --stages prefer`
# (or reward), whose wiring tests/test_dpo.py and tests/test_reward.py check with the stage faked.


def rated_systems(samples_run) -> set[str]:
    """The systems a rater compares in a run folder's samples.jsonl (every item has them all)."""
    from utils.prefer.items import items_from_runs

    items = items_from_runs([samples_run])
    systems = {frozenset(item["outputs"]) for item in items}
    assert len(systems) == 1 and len(items) >= 6, (systems, len(items))
    return set(next(iter(systems)))


def samples_of_the_three_models(runs):
    """Notebook 08: base, stage 1 and stage 2 answer the same test prompts in 07's samples.jsonl."""
    assert rated_systems(runs / "07-stage2-tiny") == {"base", "stage 1", "stage 2"}


def ratings_of_the_trained_models(runs):
    """Notebook 09: the simulated session rated the models of its SAMPLES_RUN (in the class,
    12's stage 2 and stage 3); run alone (no samples yet), the fallback's decoding settings."""
    from utils.prefer.ratings import load_ratings

    ratings = load_ratings(runs / "simulated" / "preferences_simulated.csv")
    samples_run = runs / PARAMETERS["09_human_preference"]["SAMPLES_RUN"]
    found = (samples_run / "samples.jsonl").exists()
    expected = rated_systems(samples_run) if found else {"greedy", "seed-sampling", "hot-sampling"}
    assert set(ratings["system_a"]) | set(ratings["system_b"]) == expected


def dpo_moved_the_property(runs):
    """Notebook 12: stage 3 raises the scripted rater's property without collapsing distinct-2,
    and leaves stage 2's and stage 3's answers to the same test prompts for notebook 09."""
    from utils.prefer import dpo
    from utils.runs import registry

    assert rated_systems(runs / "12-dpo-tiny") == {"stage 2", "stage 3"}

    metrics = registry.read_json(runs / "12-dpo-tiny" / registry.METRICS)["preference"]
    print({k: v for k, v in metrics.items() if k != "config"})
    assert metrics["simulated"] is True and metrics["pairs"] >= dpo.MIN_PAIRS
    assert metrics["property_after"] - metrics["property_before"] >= 0.15
    assert metrics["distinct_2_after"] >= 0.9 * metrics["distinct_2_before"]
    assert metrics["reward_accuracy"] > 0.5


def reward_stage_moved_the_model(runs):
    """Notebook 13: the reward stage took its steps, moved the model away from stage 2 and
    measured the held-out answers before and after.

    The rise of the rhyme-pair rate is printed, not asserted: whether a run of the tiny model
    finds rhymes depends on its random draws (tools/reward_trials.py; the trials counted at
    RewardConfig.form_weight), so a threshold would pass on one CPU and fail on another.
    """
    from utils.prefer.reward import reward_config
    from utils.runs import registry

    metrics = registry.read_json(runs / "13-reward-tiny" / registry.METRICS)["reward"]
    print({k: v for k, v in metrics.items() if k not in ("config", "reward_per_step")})
    assert metrics["steps"] == reward_config("tiny").max_steps == len(metrics["reward_per_step"])
    for key in ("rhyme_pair_rate_before", "rhyme_pair_rate_after", "distinct_2_before", "distinct_2_after"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["distinct_2_after"] > 0.0  # the tuned model still writes text
    assert metrics["kl_last_step"] > 0.1  # the policy moved (every trial run ended above 0.29)
    assert metrics["wall_seconds"] > metrics["train_seconds"] > 0 and metrics["memorised_words"] >= 0


OUTCOMES = {"08_evaluation": samples_of_the_three_models, "09_human_preference": ratings_of_the_trained_models,
            "12_preference_tuning": dpo_moved_the_property, "13_reward_tuning": reward_stage_moved_the_model}


def test_the_notebook_runner_refuses_an_unknown_number_before_running_any(tmp_path):
    """tools/run_notebooks.py (the course map's runtimes, executed copies for test_prose)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "tools" / "run_notebooks.py"), "05", "99",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and not (tmp_path / "out").exists()  # 05 did not run either
    assert "error: '99' names 0 notebooks; use one of: 01, 02, 03, 04, 04b, 05" in done.stderr


def test_the_class_runs_08_07_12_06_first_in_one_runs_folder():
    """Issue #25's out-of-order class: the scheduler hands the class's notebooks to one worker
    in CLASS_CHAIN's order (08, 07, 12, 06, then 09, 10, 13), whatever the files' order."""
    from types import SimpleNamespace

    import conftest

    names = ["06_stage1", "07_stage2", "08_evaluation", "09_human", "10_hyper", "12_pref", "13_reward"]
    items = [SimpleNamespace(nodeid=f"tests/test_notebooks.py::test_runs_in_tiny_profile[{n}]",
                             fixturenames=("class_runs",)) for n in names]
    items.insert(3, SimpleNamespace(nodeid="tests/test_x.py::test_other", fixturenames=()))
    conftest.pytest_collection_modifyitems(None, items)
    order = [i.nodeid.split("[")[1][:2] for i in items[:7]]
    assert order == ["08", "07", "12", "06", "09", "10", "13"] and items[7].nodeid.endswith("test_other")
    assert {conftest.work_unit(i.nodeid) for i in items[:7]} == {"class-notebooks"}
