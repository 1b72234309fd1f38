"""The shared setup cell, run outside a notebook: locally, and on a stubbed Colab."""

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from utils.course.notebook import (
    COURSE_REPO,
    SETUP_CELL,
    build_notebook,
    convention_problems,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def restore_cwd():
    cwd, path = os.getcwd(), list(sys.path)
    yield
    os.chdir(cwd)
    sys.path[:] = path


def test_setup_cell_locally_finds_the_repo_from_a_subfolder(restore_cwd, capsys):
    os.chdir(ROOT / "notebooks")
    exec(SETUP_CELL, {})
    assert Path.cwd() == ROOT
    assert "profile" in capsys.readouterr().out


def test_setup_cell_outside_the_repo_says_where_to_open(restore_cwd, tmp_path):
    os.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="inside the course folder"):
        exec(SETUP_CELL, {})


def _on_colab(monkeypatch, tmp_path, clone_ok=True):
    calls = []

    def fake_run(cmd, check=False, **kwargs):
        calls.append(cmd)
        if cmd[:2] == ["git", "clone"]:
            if clone_ok:
                Path(cmd[-1]).symlink_to(ROOT)  # stands in for the clone
                return subprocess.CompletedProcess(cmd, 0, "", "")
            return subprocess.CompletedProcess(
                cmd, 128, "", "fatal: unable to access 'https://github.com/...': Could not resolve host")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setenv("POET_COLAB_DIR", str(tmp_path / "poet-llm-course"))
    os.chdir(tmp_path)
    return calls


def _test_only_requirements() -> list[str]:
    """The package names in requirements.txt's '# Tests.' section, read independently."""
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    section = lines[lines.index("# Tests."):]
    return [l.split(">")[0].split("=")[0].strip() for l in section if l and not l.startswith("#")]


def test_setup_cell_on_colab_clones_and_installs_without_torch(restore_cwd, tmp_path, monkeypatch):
    calls = _on_colab(monkeypatch, tmp_path)
    exec(SETUP_CELL, {})
    clone, pip = calls
    # "--": a COURSE_REPO that begins with "--" (e.g. --upload-pack=...) stays a repository
    assert clone == ["git", "clone", "--depth", "1", "--", COURSE_REPO, str(tmp_path / "poet-llm-course")]
    assert pip[1:5] == ["-m", "pip", "install", "-q"]
    installed = " ".join(pip[5:])
    assert "transformers>=5.22,<6" in installed and "peft" in installed
    assert not any(arg.startswith(("torch", "ipywidgets", "jupyterlab")) for arg in pip[5:])
    # Colab's diffusers and gradio need huggingface-hub < 2: never let pip upgrade it to 2.x.
    assert "huggingface-hub<2" in pip[5:]
    names = [arg.split(">")[0].split("<")[0].split("=")[0] for arg in pip[5:]]
    test_only = _test_only_requirements()
    assert {"pytest", "playwright"} <= set(test_only)
    assert not set(test_only) & set(names)


def test_a_failed_clone_says_what_to_do(restore_cwd, tmp_path, monkeypatch):
    calls = _on_colab(monkeypatch, tmp_path, clone_ok=False)
    with pytest.raises(RuntimeError) as info:
        exec(SETUP_CELL, {})
    text = str(info.value)
    assert COURSE_REPO in text and "Could not resolve host" in text
    assert "internet" in text and "POET_COLAB_DIR" in text and "run this cell again" in text
    assert len(calls) == 1  # nothing installed after a failed clone


def test_every_notebook_has_the_current_setup_cell():
    import nbformat

    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert first.source == SETUP_CELL, path.name


def test_conventions_checker_catches_problems(tmp_path):
    import nbformat

    good = build_notebook(tmp_path / "g.ipynb", [
        ("md", "# T"), ("params", "PROFILE = 'tiny'"), ("md", "## Exercises"), ("md", "## Takeaways")])
    assert convention_problems(good) == []
    bad = nbformat.read(str(tmp_path / "g.ipynb"), as_version=4)
    bad.cells[1].source = "import os"
    bad.cells[2].metadata = {}
    bad.cells[2].outputs = [nbformat.v4.new_output("stream", text="x")]
    problems = convention_problems(bad)
    assert "the first code cell is not the shared setup cell" in problems
    assert "no code cell is tagged 'parameters'" in problems
    assert "committed with outputs" in problems
    solution = nbformat.v4.new_code_cell("answers = {1: 2}", metadata={"tags": ["solution"]})
    good.cells.append(solution)
    assert any("reference-answer cell" in p for p in convention_problems(good))
    solution.metadata["jupyter"] = {"source_hidden": True}
    assert convention_problems(good) == []


def test_readme_colab_links_use_the_course_repo():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    slug = COURSE_REPO.removeprefix("https://github.com/")
    links = [part.split(")")[0] for part in readme.split("colab.research.google.com/github/")[1:]]
    assert links, "the README should link notebooks on Colab"
    for link in links:
        assert link.startswith(slug + "/blob/main/notebooks/")
        assert (ROOT / link.split("/blob/main/")[1]).exists()
