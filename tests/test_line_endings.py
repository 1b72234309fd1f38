"""A clone made with Git for Windows' default core.autocrlf=true reads the same data.

The corpus check and the data stage run on such a clone of a commit holding the repository's
.gitattributes and data/; the control clone, without .gitattributes, shows that the check can
fail. The last test clones the whole course that way and runs the tiny pipeline through
evaluate from inside the clone.
"""

import shutil
import subprocess

import pytest

from utils.config import REPO_ROOT, get_profile
from utils.data import corpus
from utils.data.prepare import prepare_data
from utils.models.tokenizers import gpt2_tokenizer

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "core.autocrlf=false"]


def autocrlf_clone(tmp_path, with_attributes: bool):
    """A commit of data/ (and .gitattributes), cloned with core.autocrlf=true."""
    source, clone = tmp_path / "source", tmp_path / "clone"
    shutil.copytree(REPO_ROOT / "data", source / "data")
    if with_attributes:
        shutil.copy(REPO_ROOT / ".gitattributes", source / ".gitattributes")
    for step in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "data"]):
        subprocess.run(GIT + step, cwd=source, check=True, capture_output=True)
    subprocess.run(["git", "-c", "core.autocrlf=true", "clone", "-q", "--", str(source), str(clone)],
                   check=True, capture_output=True)
    return clone


@pytest.fixture(scope="module")
def reference():
    tokenizer = gpt2_tokenizer()
    return tokenizer, prepare_data("tiny", tokenizer)


def test_an_autocrlf_clone_passes_the_corpus_check_and_prepares_the_same_data(tmp_path, reference):
    clone = autocrlf_clone(tmp_path, with_attributes=True)
    assert corpus.check_corpus(clone / "data" / "pretrain") == corpus.check_corpus()
    tokenizer, expected = reference
    prepared = prepare_data(get_profile("tiny").replace(data={"data_dir": clone / "data" / "sample"}),
                            tokenizer)
    assert prepared.poems == expected.poems and prepared.instructions == expected.instructions


def test_without_gitattributes_the_clone_is_crlf_and_the_data_still_matches(tmp_path, reference):
    clone = autocrlf_clone(tmp_path, with_attributes=False)
    assert b"\r\n" in (clone / "data" / "pretrain" / "shakespeare_sonnets.txt").read_bytes()
    with pytest.raises(ValueError, match="has sha256"):  # what .gitattributes prevents
        corpus.check_corpus(clone / "data" / "pretrain")
    tokenizer, expected = reference  # CRLF poems and conversations are normalised on reading
    prepared = prepare_data(get_profile("tiny").replace(data={"data_dir": clone / "data" / "sample"}),
                            tokenizer)
    assert prepared.poems == expected.poems and prepared.instructions == expected.instructions
    assert not any("\r" in text for pairs in prepared.instructions.values() for pair in pairs
                   for text in pair)


@pytest.mark.slow
def test_an_autocrlf_clone_of_the_course_runs_the_tiny_pipeline_through_evaluate(tmp_path):
    """The whole course (HEAD: code, data, the pocket model) cloned with core.autocrlf=true, then
    `python -m utils.pipeline` from inside the clone, one step a stage on a few rows."""
    import os
    import sys

    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True).returncode:
        pytest.skip("the course folder is not a git checkout with a commit")
    clone = tmp_path / "clone"
    subprocess.run(["git", "-c", "core.autocrlf=true", "clone", "-q", "--no-hardlinks", "--",
                    str(REPO_ROOT), str(clone)], check=True, capture_output=True)
    assert b"\r\n" in (clone / "utils" / "config.py").read_bytes()  # the clone is CRLF where text
    env = {**os.environ, "POET_PROFILE": "tiny", "POET_RUNS_DIR": str(tmp_path / "runs")}
    done = subprocess.run(
        [sys.executable, "-m", "utils.pipeline", "--run-name", "crlf", "--max-steps", "1",
         "--max-rows", "8", "--num-samples", "1",
         "--stages", "data,stage1,merge,stage2,evaluate"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    metrics = (tmp_path / "runs" / "crlf" / "metrics.json").read_text()
    assert '"eval"' in metrics and '"stage2"' in metrics
