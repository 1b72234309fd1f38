"""The pocket model's corpus: public-domain Shakespeare, cut into documents, split, packed.

The plays are cut into passages of whole speeches and the sonnets into single sonnets, so the
held-out 5% is drawn from both texts as whole pieces (not the file's tail, which is all
sonnets). Used by `utils.train.pretrain` and notebook 04b (pretraining).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from utils.config import REPO_ROOT

CORPUS_DIR = REPO_ROOT / "data" / "pretrain"
# file -> sha256 of the copy in ../shared/corpus (provenance in data/pretrain/README.md)
CORPUS_FILES = {
    "tiny_shakespeare.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    "shakespeare_sonnets.txt": "4e5e5812959a59e06ebd719641be487c64b7496ace51a9e2594b8c0dca485562",
}
SPEECHES_PER_PASSAGE = 20  # ~1,000 characters of dialogue: long enough to keep a scene together


@dataclass(frozen=True)
class Document:
    source: str  # the file it came from
    index: int  # its position in that file
    text: str


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_corpus(corpus_dir: Path = CORPUS_DIR) -> dict[str, str]:
    """The corpus files and their sha256, after checking they are the published copies."""
    found = {}
    for name, expected in CORPUS_FILES.items():
        path = Path(corpus_dir) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the pocket model's corpus lives in "
                                    f"data/pretrain/ (see its README.md); restore it with git checkout")
        digest = sha256_of(path)
        if digest != expected:
            raise ValueError(f"{path} has sha256 {digest[:12]}..., expected {expected[:12]}...: "
                             "the file was edited or its line endings converted; restore it "
                             "with `git checkout -- data/pretrain/` (the repository's "
                             ".gitattributes keeps it byte-exact, whatever core.autocrlf says)")
        found[name] = digest
    return found


def _blocks_between_blank_lines(text: str) -> list[str]:
    return [block.strip("\n") for block in text.replace("\r\n", "\n").split("\n\n") if block.strip()]


def corpus_documents(corpus_dir: Path = CORPUS_DIR) -> list[Document]:
    """Plays as passages of whole speeches, sonnets one by one, in file order."""
    check_corpus(corpus_dir)
    docs = []
    speeches = _blocks_between_blank_lines((Path(corpus_dir) / "tiny_shakespeare.txt").read_text("utf-8"))
    for i in range(0, len(speeches), SPEECHES_PER_PASSAGE):
        passage = "\n\n".join(speeches[i:i + SPEECHES_PER_PASSAGE])
        docs.append(Document("tiny_shakespeare.txt", i // SPEECHES_PER_PASSAGE, passage))
    sonnets = _blocks_between_blank_lines((Path(corpus_dir) / "shakespeare_sonnets.txt").read_text("utf-8"))
    docs += [Document("shakespeare_sonnets.txt", i, s) for i, s in enumerate(sonnets)]
    return docs


def split_documents(docs: list[Document], fraction: float = 0.05, seed: int = 0):
    """(train, validation): a fixed random `fraction` of each source's documents held out."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = random.Random(seed)
    train, validation = [], []
    for source in dict.fromkeys(d.source for d in docs):  # sources in file order
        own = [d for d in docs if d.source == source]
        held = set(rng.sample(range(len(own)), max(1, round(fraction * len(own)))))
        for i, doc in enumerate(own):
            (validation if i in held else train).append(doc)
    return train, validation


def token_stream(docs: list[Document], tokenizer) -> list[int]:
    """All documents' tokens, each followed by EOS so the model learns where a piece ends."""
    ids: list[int] = []
    for doc in docs:
        ids += tokenizer(doc.text)["input_ids"] + [tokenizer.eos_token_id]
    return ids


def stream_blocks(ids: list[int], block_size: int) -> torch.Tensor:
    """Cut a token stream into full rows of `block_size` (the ragged tail is dropped)."""
    rows = len(ids) // block_size
    if rows == 0:
        raise ValueError(f"{len(ids)} tokens make no block of {block_size}; use a smaller block_size")
    return torch.tensor(ids[:rows * block_size], dtype=torch.long).view(rows, block_size)


def pretraining_blocks(tokenizer, block_size: int, corpus_dir: Path = CORPUS_DIR,
                       fraction: float = 0.05, seed: int = 0) -> dict[str, torch.Tensor]:
    """{'train': [n, block_size], 'validation': [m, block_size]} token blocks of the corpus."""
    train, validation = split_documents(corpus_documents(corpus_dir), fraction, seed)
    return {"train": stream_blocks(token_stream(train, tokenizer), block_size),
            "validation": stream_blocks(token_stream(validation, tokenizer), block_size)}
