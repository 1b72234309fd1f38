"""Notebook conventions: the shared setup cell, a builder, and the checks the tests run.

Every course notebook starts with SETUP_CELL (byte for byte), has a code cell tagged
`parameters`, ends with exercises and takeaways (reference answers, if any, in a collapsed cell
tagged `solution`), and is committed without outputs. After a
change to SETUP_CELL, `python -m utils.course.notebook` writes it into every notebook.
"""

from __future__ import annotations

from pathlib import Path

# The one place the course's public repository is named; the README's Colab badges use it too.
COURSE_REPO = "https://github.com/poet-llm/poet-llm-course"

SETUP_CELL = f'''# Setup (the same in every notebook). On Colab: fetch the course and install what Colab
# lacks (torch is never reinstalled; huggingface-hub stays < 2, as Colab's other packages
# need; transformers is upgraded to the course's floor). Locally: make `utils` importable.
import os, subprocess, sys
from pathlib import Path

COURSE_REPO = "{COURSE_REPO}"
root = Path.cwd()
while not (root / "utils" / "config.py").exists() and root != root.parent:
    root = root.parent
if not (root / "utils" / "config.py").exists() and "google.colab" in sys.modules:
    root = Path(os.environ.get("POET_COLAB_DIR", "/content/poet-llm-course"))
    if not root.exists():
        clone = subprocess.run(["git", "clone", "--depth", "1", "--", COURSE_REPO, str(root)],
                               capture_output=True, text=True)
        if clone.returncode != 0:
            raise RuntimeError(
                f"Could not clone {{COURSE_REPO}} into {{root}}:\\n{{clone.stderr.strip()}}\\n"
                "Check that the runtime has internet access, or set COURSE_REPO above to a copy "
                "you can reach (your fork), or upload the course folder and set the environment "
                "variable POET_COLAB_DIR to it; then run this cell again.")
if not (root / "utils" / "config.py").exists():
    raise RuntimeError("Open this notebook from inside the course folder (or on Colab).")
os.chdir(root)
sys.path.insert(0, str(root))

from utils import env
if env.in_colab():
    env.install_colab_requirements()
env.describe()
from utils.models import setup_check
setup_check();  # on a GPU: does the profile fit? Told now, with the options, before any download'''

PARAMETERS_TAG = "parameters"
# Reference answers run through the exercises' checks in a cell with this tag. The notebook test
# runs it; the reader sees it collapsed (JupyterLab: source_hidden; Colab: a titled form).
SOLUTION_TAG = "solution"


def build_notebook(path: str | Path, cells: list[tuple[str, str]], title: str | None = None):
    """Write a notebook from (kind, source) pairs; kind is 'md', 'code' or 'params'.

    The setup cell is inserted after the first markdown cell (the title), so that every
    notebook gets exactly the same one.
    """
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    out = []
    for i, (kind, source) in enumerate(cells):
        source = source.strip("\n")
        if kind == "md":
            out.append(new_markdown_cell(source))
        elif kind == "code":
            out.append(new_code_cell(source))
        elif kind == "params":
            out.append(new_code_cell(source, metadata={"tags": [PARAMETERS_TAG]}))
        else:
            raise ValueError(f"cell kind must be md, code or params, got {kind!r}")
        if i == 0:
            out.append(new_code_cell(SETUP_CELL))
    nb.cells = out
    for n, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{n:02d}"  # stable ids: re-building gives a clean git diff
    nbformat.write(nb, str(path))
    return nb


def convention_problems(nb) -> list[str]:
    """What a notebook gets wrong about the course conventions (empty list: nothing)."""
    problems = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or code[0].source != SETUP_CELL:
        problems.append("the first code cell is not the shared setup cell")
    if not any(PARAMETERS_TAG in c.get("metadata", {}).get("tags", []) for c in code):
        problems.append("no code cell is tagged 'parameters'")
    if any(c.get("outputs") or c.get("execution_count") for c in code):
        problems.append("committed with outputs")
    for cell in code:
        meta = cell.get("metadata", {})
        if SOLUTION_TAG in meta.get("tags", []) and not meta.get("jupyter", {}).get("source_hidden"):
            problems.append("a reference-answer cell (tag 'solution') is shown open: set "
                            "metadata.jupyter.source_hidden, so answers stay hidden until opened")
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").lower()
    for heading in ("exercise", "takeaway"):
        if heading not in text:
            problems.append(f"no {heading}s section")
    prose = sum(c.cell_type == "markdown" for c in nb.cells)
    if prose < len(nb.cells) * 0.4:
        problems.append(f"only {prose} of {len(nb.cells)} cells are prose (aim for about half)")
    return problems


def update_setup_cells(folder: str | Path | None = None) -> list[Path]:
    """Write SETUP_CELL into the first code cell of every notebook in folder; the changed ones."""
    import nbformat

    folder = Path(folder) if folder is not None else Path(__file__).resolve().parents[2] / "notebooks"
    changed = []
    for path in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code")
        if first.source != SETUP_CELL:
            first.source = SETUP_CELL
            nbformat.write(nb, str(path))
            changed.append(path)
    return changed


if __name__ == "__main__":
    for changed in update_setup_cells():
        print(f"setup cell updated: {changed.name}")
