"""A clone made with Git for Windows' default core.autocrlf=true reads the same data.

The corpus check and the data stage run on such a clone of a commit holding the repository's
.gitattributes and data/ (a full pipeline run would add minutes and nothing line endings change:
from the data stage on, the stages see the prepared texts). The control clone, without
.gitattributes, shows that the check can fail.
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
