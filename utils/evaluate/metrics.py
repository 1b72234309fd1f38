"""Automatic evaluation metrics: loss/perplexity, n-gram overlap, diversity, poetic form.

Scales: `bleu`, `self_bleu` are sacrebleu's 0-100, the rest 0-1. Text lists are non-empty lists
or tuples of str; hypotheses and references pair by index. An empty string is valid (no n-grams,
no lines: diversity and form score it 0.0); two empty strings match exactly, "🙂" and "!!" don't.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from statistics import fmean

import pronouncing
import sacrebleu
import torch
import torch.nn.functional as F
from rouge_score import rouge_scorer

from utils.config import IGNORE_INDEX
from utils.models.loading import eval_mode

_PUNCT = re.compile(r"[^\w\s]")
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")  # a word: letters; keeps "o'er", not quotes around it
_ALNUM = re.compile(r"[^\W_]+")  # runs of letters and digits in any script


class UnicodeTokenizer:
    """rouge-score's tokens for any script (its default keeps only [a-z0-9]: "été" vanishes).
    Same tokens as the default on ASCII text. Introduced in notebook 08_evaluation."""

    def __init__(self, use_stemmer: bool = True):
        from nltk.stem import porter  # what rouge-score itself uses
        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens = _ALNUM.findall(text.lower())
        if self._stemmer:
            tokens = [self._stemmer.stem(t) if len(t) > 3 else t for t in tokens]
        return tokens


def _check_texts(texts, name: str) -> list[str]:
    # A bare str is iterable too; treating it as a list of characters would give silent nonsense.
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"{name} must be a list of str, got {type(texts).__name__}")
    if not texts:
        raise ValueError(f"{name} is empty; pass at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] is {type(text).__name__}, expected str")
    return list(texts)


def _check_pairs(hypotheses, references) -> tuple[list[str], list[str]]:
    hyps, refs = _check_texts(hypotheses, "hypotheses"), _check_texts(references, "references")
    if len(hyps) != len(refs):
        raise ValueError(f"hypotheses has {len(hyps)} texts but references has {len(refs)}")
    return hyps, refs


def _check_str(text, name: str = "text") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be str, got {type(text).__name__}")
    return text


def _device(model) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def token_nll(model, input_ids, labels, attention_mask=None) -> tuple[float, int]:
    """Summed next-token NLL over label tokens != -100, and their count.
    Introduced in notebook 08_evaluation."""
    device = _device(model)
    input_ids, labels = input_ids.to(device), labels.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    with eval_mode(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    # Position t predicts token t+1, so drop the last logit and the first label (as HF does).
    logits, targets = logits[:, :-1].float(), labels[:, 1:]
    total = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    return total.item(), int((targets != IGNORE_INDEX).sum())


def block_loss(model, blocks, batch_size: int = 8) -> float:
    """Mean next-token loss (nats per predicted token) of packed, unpadded blocks.

    `blocks` is a 2-D tensor of token ids or rows {"input_ids": [...]} of one length. The
    all-ones mask says nothing is padding: an EOS inside a block is text. The one block-loss
    loop: pretraining's validation (notebook 04b) and the learning report (notebook 08).
    """
    if not isinstance(blocks, torch.Tensor):
        blocks = torch.tensor([row["input_ids"] for row in blocks], dtype=torch.long)
    if blocks.ndim != 2 or not len(blocks):
        raise ValueError("no blocks to score: the held-out texts are shorter than one block")
    total, count = 0.0, 0
    with eval_mode(model):
        blocks = blocks.to(_device(model))
        for start in range(0, len(blocks), batch_size):
            ids = blocks[start:start + batch_size]
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
            n = ids.numel() - len(ids)  # predicted positions: every token but each row's first
            total, count = total + loss.item() * n, count + n
    return total / count


def completion_loss(model, batch) -> float:
    """Mean cross-entropy per label token (labels != -100) of a batch dict or an iterable of them.
    Introduced in notebook 08_evaluation."""
    batches = [batch] if isinstance(batch, Mapping) else list(batch)
    if not batches:
        raise ValueError("batch is empty; pass a batch dict or a non-empty list of them")
    # Sum then divide once: a mean of batch means would overweight short batches.
    total, count = 0.0, 0
    for b in batches:
        nll, n = token_nll(model, b["input_ids"], b["labels"], b.get("attention_mask"))
        total, count = total + nll, count + n
    if count == 0:
        raise ValueError("batch has no label tokens (all labels are -100)")
    return total / count


def perplexity_from_loss(loss: float) -> float:
    """Perplexity exp(loss) from a mean per-token cross-entropy in nats; math.inf past
    exp's range (loss > 709, a diverged run) and NaN for NaN. Notebook 08_evaluation."""
    return math.exp(loss) if loss <= 709 or math.isnan(loss) else math.inf


def perplexity(model, batch) -> float:
    """Perplexity exp(mean NLL per label token) of `completion_loss`'s batches.
    Introduced in notebook 08_evaluation."""
    return perplexity_from_loss(completion_loss(model, batch))


def sliding_window_nll(model, input_ids, max_length: int, stride: int) -> tuple[float, int]:
    """(total NLL, scored tokens) of a text longer than the context, scored in overlapping windows.
    Introduced in notebook 08_evaluation.

    Each window of up to `max_length` tokens starts `stride` after the last; only tokens not
    scored before are scored, and the overlap gives them up to max_length - stride tokens of
    context. Every token but the first is scored exactly once: n_tokens == seq_len - 1.
    """
    if not 0 < stride <= max_length:
        raise ValueError(f"need 0 < stride <= max_length, got {stride=}, {max_length=}")
    ids = input_ids if input_ids.dim() == 2 else input_ids.unsqueeze(0)
    seq_len, total, count, prev_end = ids.size(1), 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        window = ids[:, begin:end]
        labels = window.clone()
        labels[:, : window.size(1) - (end - prev_end)] = IGNORE_INDEX  # already scored
        nll, n = token_nll(model, window, labels)
        total, count, prev_end = total + nll, count + n, end
        if end == seq_len:
            break
    return total, count


def normalize_text(text: str) -> str:
    """Lowercase, strip punctuation, collapse whitespace (for exact match).
    Introduced in notebook 08_evaluation."""
    return " ".join(_PUNCT.sub(" ", _check_str(text).lower()).split())


def _reference_streams(references, n_hyps: int) -> list[list[str | None]]:
    if not isinstance(references, (list, tuple)):
        raise TypeError(f"references must be a list of str, got {type(references).__name__}")
    if not references:
        raise ValueError("references is empty; pass at least one text")
    if len(references) != n_hyps:
        raise ValueError(f"hypotheses has {n_hyps} texts but references has {len(references)}")
    per_hyp = []
    for i, refs in enumerate(references):
        if not isinstance(refs, (str, list, tuple)):
            raise TypeError(f"references[{i}] is {type(refs).__name__}, expected str or list of str")
        per_hyp.append(_check_texts([refs] if isinstance(refs, str) else refs, f"references[{i}]"))
    # sacrebleu takes one stream per reference slot; None marks "no k-th reference here".
    return [[refs[k] if k < len(refs) else None for refs in per_hyp]
            for k in range(max(map(len, per_hyp)))]


def bleu(hypotheses, references) -> float:
    """Corpus BLEU (0-100) via sacrebleu.corpus_bleu; each reference is a str or a list of str.
    Introduced in notebook 08_evaluation."""
    hyps = _check_texts(hypotheses, "hypotheses")
    return sacrebleu.corpus_bleu(hyps, _reference_streams(references, len(hyps))).score


def rouge(hypotheses, references) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (0-1, Porter stemmer, any script) via rouge_score, keyed rouge_1 ...
    Introduced in notebook 08_evaluation."""
    hyps, refs = _check_pairs(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=UnicodeTokenizer())
    scores = [scorer.score(ref, hyp) for hyp, ref in zip(hyps, refs)]  # score(target, prediction)
    return {f"rouge_{k[5:].lower()}": fmean(s[k].fmeasure for s in scores)
            for k in ("rouge1", "rouge2", "rougeL")}


def _same_answer(hyp: str, ref: str) -> bool:
    if (h := normalize_text(hyp)) or normalize_text(ref):
        return h == normalize_text(ref)
    # Both normalise to nothing: "🙂" and "!!" are different answers, only "" == "" matches.
    return not hyp.strip() and not ref.strip()


def exact_match(hypotheses, references) -> float:
    """Share of hypotheses equal to their reference after `normalize_text`.
    Introduced in notebook 08_evaluation."""
    hyps, refs = _check_pairs(hypotheses, references)
    return fmean(_same_answer(h, r) for h, r in zip(hyps, refs))


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    tokens = text.lower().split()
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts, n: int) -> float:
    """Unique / total n-grams (lowercased whitespace tokens) over the whole set; 0.0 if none.
    Introduced in notebook 08_evaluation."""
    grams = [g for text in _check_texts(texts, "texts") for g in _ngrams(text, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts) -> float:
    """Mean sentence BLEU (0-100) of each text against all the others; 0.0 for a single text.
    Introduced in notebook 08_evaluation."""
    texts = _check_texts(texts, "texts")
    if len(texts) == 1:
        return 0.0  # nothing to copy from
    return fmean(sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:]).score
                 for i, t in enumerate(texts))


def repetition_rate(texts, n: int = 2) -> float:
    """Mean over texts of the share of n-grams repeating an earlier one in that text (0.0 if none).
    Introduced in notebook 08_evaluation."""
    grams = [_ngrams(text, n) for text in _check_texts(texts, "texts")]
    return fmean((len(g) - len(set(g))) / len(g) if g else 0.0 for g in grams)


def _lines(text: str) -> list[str]:
    return [line for line in _check_str(text).splitlines() if line.strip()]


def line_stats(text: str) -> tuple[int, float]:
    """(non-empty line count, mean words per line); (0, 0.0) for a text without lines.
    Introduced in notebook 08_evaluation."""
    lines = _lines(text)
    return len(lines), (sum(len(l.split()) for l in lines) / len(lines) if lines else 0.0)


def _clean_word(word, name: str = "word") -> str:
    found = WORD.findall(_check_str(word, name).lower())  # "Door," -> "door"
    return found[-1] if found else ""


def syllables(word: str) -> int:
    """Syllables of a word by the CMU dict; unknown words: vowel groups minus a silent final e.
    Introduced in notebook 08_evaluation."""
    word = _clean_word(word)
    phones = pronouncing.phones_for_word(word)
    if phones:
        return pronouncing.syllable_count(phones[0])
    if not word:
        return 0
    count = len(re.findall(r"[aeiouy]+", word))
    if word.endswith("e") and not word.endswith("le") and count > 1:
        count -= 1  # "glome" -> 1, but "gurgle" keeps its -le syllable
    return max(count, 1)


def syllables_per_line(text: str) -> list[int]:
    """Syllable count of each non-empty line (words as `syllables` counts them).
    Introduced in notebook 08_evaluation."""
    return [sum(syllables(w) for w in WORD.findall(line)) for line in _lines(text)]


def _rhyming_parts(word: str) -> set[str]:
    phones = pronouncing.phones_for_word(word)
    if phones:  # the same test pronouncing.rhymes uses: a shared stressed vowel onward
        return {pronouncing.rhyming_part(p) for p in phones}
    tail = re.search(r"[aeiouy]+[^aeiouy]*$", word)  # unknown word: spelling from last vowels on
    return {"spelling:" + (tail.group(0) if tail else word)}


def words_rhyme(a: str, b: str) -> bool:
    """True if two different words share a rhyming part (CMU dict; spelling for unknown words).
    Introduced in notebook 08_evaluation."""
    a, b = _clean_word(a, "a"), _clean_word(b, "b")
    if not a or not b or a == b:  # repeating the end word is not a rhyme, as in pronouncing.rhymes
        return False
    return bool(_rhyming_parts(a) & _rhyming_parts(b))


def rhyme_rate(text: str) -> float:
    """Share of lines whose end word rhymes with a line 1 or 2 lines away in its stanza.
    Introduced in notebook 08_evaluation.

    Stanzas are separated by blank lines; end words are the last word, punctuation stripped.
    Distance 1 catches couplets (AABB), distance 2 alternate rhyme (ABAB); both give 1.0 for a
    fully rhymed quatrain, ABCB gives 0.5. A text without lines gives 0.0.
    """
    rhymed = total = 0
    for stanza in re.split(r"\n\s*\n", _check_str(text)):
        ends = [_clean_word(line) for line in _lines(stanza)]  # last word of each line
        for i, end in enumerate(ends):
            near = ends[max(0, i - 2):i] + ends[i + 1:i + 3]
            rhymed += any(words_rhyme(end, other) for other in near)
            total += 1
    return rhymed / total if total else 0.0


def evaluate_generations(hypotheses, references) -> dict[str, float]:
    """All text metrics of generated poems vs references in one dict (the caller adds perplexity).
    Introduced in notebook 08_evaluation."""
    hyps, refs = _check_pairs(hypotheses, references)
    scores = rouge(hyps, refs)
    per_line = [syllables_per_line(h) for h in hyps]
    return {
        "bleu": bleu(hyps, refs),
        "rouge_l": scores["rouge_l"],
        "exact_match": exact_match(hyps, refs),
        "distinct_1": distinct_n(hyps, 1),
        "distinct_2": distinct_n(hyps, 2),
        "self_bleu": self_bleu(hyps),
        "rhyme_rate": fmean([rhyme_rate(h) for h in hyps]),
        "rouge_1": scores["rouge_1"],
        "rouge_2": scores["rouge_2"],
        "distinct_3": distinct_n(hyps, 3),
        "repetition_rate": repetition_rate(hyps),
        "mean_lines": fmean([line_stats(h)[0] for h in hyps]),
        # mean over poems of each poem's mean, so one long poem doesn't dominate
        "mean_syllables_per_line": fmean([fmean(s) if s else 0.0 for s in per_line]),
    }
