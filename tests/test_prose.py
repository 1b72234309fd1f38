"""The notebooks' prose says what the notebooks show (issue #25). Fast: reads markdown, runs nothing.

Two conventions, explained in tests/README.md ("Prose conventions"):
1. The tiny profile's base is the pocket model the course pretrained (notebook 04b), so no
   markdown cell calls it random, untrained or noise. A cell about a model that the lesson
   itself builds untrained (04b's loss from ln V, 01's skip-gram, 11's shape-only benchmarks)
   carries the marker UNTRAINED_MARKER.
2. Numbers about our own runs are printed by code cells, never typed in markdown. A precise
   number (3 or more significant digits: 0.2364, 1,764, 22.6) in markdown must be a quoted
   figure: one of the deck's in utils.course.seed_facts, a literature figure in LITERATURE
   (with its source), or a worked figure in DERIVED (with the arithmetic, which the test
   redoes). A cell marked MEASURED_MARKER may quote its own run's numbers; with
   POET_EXECUTED_NOTEBOOKS pointing at a folder of executed copies (NN.ipynb or the
   notebook's own file name), each such number must appear in that copy's outputs.
"""

import math
import os
import re
from pathlib import Path

import nbformat
import pytest

from utils.course import seed_facts
from utils.models.shapes import REFERENCE_CONFIGS

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
UNTRAINED_MARKER = "<!-- untrained-model -->"
MEASURED_MARKER = "<!-- measured -->"

# Phrases that describe a model as never trained. "noise" alone is fine (skip-gram's noise
# words, noisy statistics); "X are noise" about a model's output is not.
RANDOM_BASE = re.compile(
    r"random(ly)?[- ]init\w*|random (model|network|weights|base)|untrained|never seen text"
    r"|random \d-layer|(model|network|mixing) is random\b"
    r"|word salad from|(neighbours|losses|outputs?|text|samples) (are|is) (pure )?noise",
    re.IGNORECASE)

# 1,764 / 124,734,720 (thousands separators) or 0.2364 / 22.6 (decimals); not years, not 1e-4.
NUMBER = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+)(?![\w]|\.\d)")

DEEPSEEK = REFERENCE_CONFIGS["deepseek-coder-1.3b"]
LITERATURE = {
    "50,257": "GPT-2's vocabulary size (its hub config; utils.models.shapes.REFERENCE_CONFIGS)",
    "32,256": "DeepSeek-Coder's vocabulary size (its hub config)",
    "1,024": "GPT-2's context length (its hub config)",
    "3,072": "GPT-2's MLP width, 4 x 768 (Radford et al. 2019)",
    "124,439,808": "GPT-2's parameters from its config (tests/test_modeling.py)",
    "1,346,471,936": "DeepSeek-Coder-1.3B's parameters from its config (tests/test_modeling.py)",
    "1.88": "nanoGPT README: Shakespeare-char baby GPT validation loss",
    "2,000": "nanoGPT README: the baby GPT's iterations",
    "40,000": "tiny Shakespeare: about 40,000 lines (Karpathy's char-rnn corpus)",
    "1,000": "a round size the lesson chose (BPE vocabulary, rows)",
    "4.46": "the transformers release that fixed loss normalisation under accumulation",
    "1.35": "DeepSeek-Coder-1.3B's parameters in billions (its config)",
    "21.6": "an L4's usable memory in GiB (notebook 11's GPU table)",
}
# Worked figures: the text as written, and the arithmetic that must reproduce it.
DERIVED = {
    "4,128,768": lambda: f"{DEEPSEEK['vocab_size'] * 128:,}",  # 04b: a 128-wide table, DeepSeek's vocabulary
    "30,720": lambda: f"{8 * (768 + 3072):,}",  # 06: LoRA r=8 on c_fc, 768 -> 3072 (and c_proj back)
    "12,288": lambda: f"{8 * (768 + 768):,}",  # 06: r=8 on attention's c_proj, 768 -> 768
    "73,728": lambda: f"{2 * 8 * (768 + 3072) + 8 * (768 + 768):,}",  # 06: the three per layer
    "884,736": lambda: f"{12 * (2 * 8 * (768 + 3072) + 8 * (768 + 768)):,}",  # 06: x 12 layers
    "1.016": lambda: f"{math.exp(0.0157):.3f}",  # the deck's DeepSeek validation perplexity
    "2.16": lambda: f"{2.1564:.2f}",  # the deck's GPT-2 validation loss, two decimals
    "1.04": lambda: f"{math.exp(0.0157 * 512 / 200):.2f}",  # 07's padding exercise
    "0.040": lambda: f"{0.0157 * 512 / 200:.3f}",
    "0.693": lambda: f"{math.log(2):.3f}",  # ln 2
    "22.6": lambda: f"{18 * 1_346_471_936 / 2**30:.1f}",  # 11: 18 bytes x DeepSeek's parameters
}


def _seed_figures() -> set[str]:
    """The deck's numbers as prose would write them."""
    figures = {f"{n:,}" for n in seed_facts.SPLIT_SIZES.values()}
    figures |= {f"{seed_facts.LORA_GPT2['trainable']:,}", f"{seed_facts.LORA_GPT2['total']:,}",
                f"{seed_facts.LORA_GPT2['percent']}"}
    for table in (seed_facts.SEED_RESULTS, seed_facts.SEED_BEST):
        for column in ("training loss", "val loss", "test loss", "val perplexity", "test perplexity"):
            if column in table:
                figures |= {f"{v:g}" for v in table[column]}
    return figures


QUOTED = _seed_figures() | set(LITERATURE) | set(DERIVED)


def _markdown(path: Path):
    nb = nbformat.read(str(path), as_version=4)
    return [(i, c.source) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"]


def _ids(paths):
    return [p.stem for p in paths]


def random_base_phrases(cells) -> list[str]:
    """'cell N: phrase' for each unmarked markdown cell that calls the base model untrained."""
    return [f"cell {i}: {m.group(0)!r}" for i, text in cells if UNTRAINED_MARKER not in text
            for m in RANDOM_BASE.finditer(text)]


def unquoted_numbers(cells) -> list[str]:
    """'cell N: number' for each precise number in unmarked markdown that no source backs."""
    return [f"cell {i}: {n}" for i, text in cells if MEASURED_MARKER not in text
            for n in NUMBER.findall(text) if _significant(n) >= 3 and n not in QUOTED]


def _significant(number: str) -> int:
    return len(re.sub(r"\D", "", number).lstrip("0"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_no_cell_calls_the_pocket_model_random(path):
    assert random_base_phrases(_markdown(path)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_precise_numbers_in_prose_are_quoted_figures(path):
    assert unquoted_numbers(_markdown(path)) == []


def test_the_checks_catch_what_they_are_for():
    stale = [(3, "Its model is *randomly initialised*: its neighbours are noise.")]
    assert random_base_phrases(stale) == ["cell 3: 'randomly initialised'", "cell 3: 'neighbours are noise'"]
    assert random_base_phrases([(4, UNTRAINED_MARKER + "\nThe untrained model sits at ln V.")]) == []
    typed = [(5, "20 steps: loss 7.36 -> 7.58; the deck has 1,764 rows and 0.2364% trains.")]
    assert unquoted_numbers(typed) == ["cell 5: 7.36", "cell 5: 7.58"]
    assert unquoted_numbers([(6, "1e-4, 2019, 12 of 18, 5% and 0.5")]) == []


@pytest.mark.parametrize("text", sorted(DERIVED))
def test_worked_figures_follow_from_their_arithmetic(text):
    assert DERIVED[text]() == text


def _executed_copy(path: Path) -> Path | None:
    folder = os.environ.get("POET_EXECUTED_NOTEBOOKS")
    if not folder:
        return None
    for name in (path.name, path.name.split("_")[0] + ".ipynb"):
        if (Path(folder) / name).exists():
            return Path(folder) / name
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_measured_numbers_are_in_the_executed_output(path):
    measured = [(i, text) for i, text in _markdown(path) if MEASURED_MARKER in text]
    if not measured:
        return
    copy = _executed_copy(path)
    if copy is None:
        pytest.skip("set POET_EXECUTED_NOTEBOOKS to a folder of executed copies to check measured cells")
    outputs = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                        for c in nbformat.read(str(copy), as_version=4).cells for o in c.get("outputs", []))
    missing = [f"cell {i}: {n}" for i, text in measured for n in NUMBER.findall(text)
               if _significant(n) >= 3 and n not in outputs]
    assert missing == []
