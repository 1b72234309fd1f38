"""utils.options: the typed run options, and the command line built from their fields."""

import argparse
import dataclasses

import pytest

from utils.config import get_profile
from utils.options import (
    STAGE_NAMES,
    RunOptions,
    RunSpec,
    add_arguments,
    check_stages,
    from_namespace,
)
from utils.pipeline import job, stages


def test_the_cli_parses_into_run_spec_and_run_options():
    spec, options = job.parse_args(["--profile", "tiny-llama", "--stages", "stage2", "--resume",
                                         "--from-run", "a", "--max-steps", "3", "--learning-rate", "1e-4",
                                         "--packing", "off", "--max-rows", "8"])
    assert spec == RunSpec(profile="tiny-llama", stages="stage2")
    assert options == RunOptions(resume=True, from_run="a", max_steps=3, learning_rate=1e-4,
                                 packing="off", max_rows=8)
    assert job.parse_args([]) == (RunSpec(), RunOptions())


def test_every_field_is_a_flag_whose_help_is_the_fields_help(capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser, RunOptions)
    flags = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(flags) == {f.name for f in dataclasses.fields(RunOptions)}
    for f in dataclasses.fields(RunOptions):
        assert flags[f.name].help == f.metadata["help"]
    with pytest.raises(SystemExit):
        job.parse_args(["--help"])
    assert "--num-samples" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        job.parse_args(["--packing", "sometimes"])  # choices come from the field too
    assert from_namespace(RunOptions, parser.parse_args(["--overwrite"])) == RunOptions(overwrite=True)


def test_overrides_apply_to_both_stages():
    profile = get_profile("tiny")
    assert RunOptions().apply(profile) is profile
    changed = RunOptions(epochs=2, learning_rate=5e-4).apply(profile)
    for stage in (changed.stage1, changed.stage2):
        assert (stage.num_train_epochs, stage.max_steps, stage.learning_rate) == (2, -1, 5e-4)


def test_bad_options_and_stages_are_clear_errors():
    with pytest.raises(ValueError, match="packing must be one of auto, on, off"):
        RunOptions(packing="always")
    with pytest.raises(ValueError, match="unknown stage 'train'; valid stages: data, stage1"):
        check_stages("data,train")
    with pytest.raises(ValueError, match="no stage given"):
        check_stages(" , ")
    assert check_stages(["stage2", "evaluate"]) == check_stages("stage2, evaluate") == ["stage2", "evaluate"]
    assert tuple(stages.STAGES) == STAGE_NAMES


def test_stages_run_in_pipeline_order_with_a_note(capsys):
    assert check_stages("merge,stage1") == ["stage1", "merge"]
    assert "note: stages run in the pipeline's order: stage1,merge (given: merge,stage1)" in capsys.readouterr().out
    assert check_stages("prefer,data,data") == ["data", "prefer"]
    assert check_stages("data,stage1") == ["data", "stage1"] and capsys.readouterr().out.count("note") == 1
