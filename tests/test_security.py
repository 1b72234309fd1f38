"""Safe loading and no secrets: a scan of the code and notebooks."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("utils/**/*.py"), *ROOT.glob("data/*.py"), *ROOT.glob("notebooks/*.ipynb")])


def _code(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return path.read_text(encoding="utf-8")


def _hits(pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [f"{p.relative_to(ROOT)}: {line.strip()}" for p in SOURCES
            for line in _code(p).splitlines() if rx.search(line)]


def test_sources_found():
    assert any(p.suffix == ".ipynb" for p in SOURCES) and any(p.suffix == ".py" for p in SOURCES)


def test_no_remote_code():
    assert _hits(r"trust_remote_code\s*=\s*True") == []


def test_torch_load_only_with_weights_only():
    calls = _hits(r"torch\.load\(")
    assert [c for c in calls if "weights_only=True" not in c] == []


def test_no_pickle_checkpoints_are_written_or_read():
    assert _hits(r"safe_serialization\s*=\s*False|use_safetensors\s*=\s*False|pickle\.load") == []


def test_no_tokens_in_code_or_notebooks():
    # Hugging Face tokens start with hf_ followed by 30+ letters; the login must come from the
    # environment (HF_TOKEN) or an interactive prompt, never from a string in a notebook.
    assert _hits(r"hf_[A-Za-z0-9]{30,}") == []
    assert _hits(r"(?i)\b(token|api_key)\s*=\s*['\"][^'\"]{8,}['\"]") == []
