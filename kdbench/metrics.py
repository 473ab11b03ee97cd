"""Rouge-L and exact match as the MiniLLM -> DistiLLM -> POCL lineage computes them, only faster.

The lineage (MiniLLM ``minillm/rouge_metric.py``) scores each generation with
``rouge_score.rouge_scorer.RougeScorer(['rougeL'], use_stemmer=True)``, takes the F-measure, keeps
the best one over an example's references and reports ``100 * mean``. Exact match is logged next
to it. Every number here is bit-for-bit what rouge_score 0.1.2 gives; only the work is organised
differently:

* Porter stemming is most of rouge_score's time and the same words recur across thousands of
  generations, so each distinct token is stemmed once and each distinct text tokenised once.
* rouge_score's LCS is a pure-Python O(n*m) table; here each text becomes a string with one
  code point per distinct stem and rapidfuzz's compiled, bit-parallel ``LCSseq`` returns the
  same length.
"""

from __future__ import annotations

import functools
import re
import string
import threading
from collections.abc import Sequence

from nltk.stem import porter
from rapidfuzz.distance import LCSseq

from kdbench.errors import ResultError

__all__ = [
    "rouge_l",
    "exact_match",
    "tokenize_for_rouge",
    "lineage_metrics",
    "clear_caches",
]

# rouge_score.tokenize: lowercase, turn every run of non-[a-z0-9] into one space, split on
# whitespace. What survives is exactly the maximal [a-z0-9] runs, so findall gives the same
# tokens without building the intermediate string.
_ALNUM_RUN_RE = re.compile(r"[a-z0-9]+")
# rouge_score re-checks every token after stemming and drops what no longer matches.
_VALID_TOKEN_RE = re.compile(r"^[a-z0-9]+$")
# Same class and default mode (NLTK_EXTENSIONS) that rouge_score's DefaultTokenizer builds.
_STEMMER = porter.PorterStemmer()

# Bounded so a long run over degenerate generations (random numbers, gibberish) cannot grow the
# process without limit; real vocabularies stay far below this, so hits stay near 100%.
_TOKEN_CACHE_SIZE = 1 << 18
# Large enough for a whole benchmark table's references plus one method's generations.
_TEXT_CACHE_SIZE = 1 << 15

# Each distinct stem gets one code point, so a text becomes a plain str that rapidfuzz compares
# natively. Surrogates are skipped so every encoded string is well-formed. The mapping is
# process-wide (warm calls then skip all per-token Python work) and is rebuilt from scratch
# when it fills up, which bounds its memory.
_SURROGATE_START, _SURROGATE_COUNT = 0xD800, 0x800
_MAX_STEMS = 1 << 19
_stem_chars: dict[str, str] = {}
# Encoding must never mix code points from before and after a rebuild: a batch encodes under
# this lock, and rebuilds only happen under it.
_encode_lock = threading.RLock()


class _VocabFull(Exception):
    pass


@functools.lru_cache(maxsize=_TOKEN_CACHE_SIZE)
def _stem_token(token: str) -> str | None:
    # rouge_score stems only tokens longer than 3 characters.
    stem = _STEMMER.stem(token) if len(token) > 3 else token
    return stem if _VALID_TOKEN_RE.match(stem) else None


@functools.lru_cache(maxsize=_TOKEN_CACHE_SIZE)
def _token_char(token: str) -> str:
    stem = _stem_token(token)
    if stem is None:
        return ""
    ch = _stem_chars.get(stem)
    if ch is None:
        idx = len(_stem_chars)
        if idx >= _MAX_STEMS:
            raise _VocabFull
        ch = chr(idx + _SURROGATE_COUNT if idx >= _SURROGATE_START else idx)
        _stem_chars[stem] = ch
    return ch


@functools.lru_cache(maxsize=_TEXT_CACHE_SIZE)
def _encode(text: str) -> str:
    return "".join(map(_token_char, _ALNUM_RUN_RE.findall(text.lower())))


@functools.lru_cache(maxsize=_TEXT_CACHE_SIZE)
def tokenize_for_rouge(text: str) -> tuple[str, ...]:
    """The tokens rouge_score's ``RougeScorer(['rougeL'], use_stemmer=True)`` scores ``text`` on.

    Lowercased, split on non-alphanumerics (ASCII ``a-z0-9`` only; everything else separates
    tokens), Porter-stemmed when longer than 3 characters. Cached per text and per token.
    """
    stems = [_stem_token(raw) for raw in _ALNUM_RUN_RE.findall(text.lower())]
    return tuple(s for s in stems if s is not None)


def _reset_encoding() -> None:
    with _encode_lock:
        _token_char.cache_clear()
        _encode.cache_clear()
        _stem_chars.clear()


def clear_caches() -> None:
    """Forget all cached stems, tokenisations and encodings (for cold timings, or to free memory)."""
    with _encode_lock:
        _reset_encoding()
        _stem_token.cache_clear()
        tokenize_for_rouge.cache_clear()


def _reference_lists(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]]
) -> list[list[str]]:
    """Validate the inputs and give every example a non-empty list of reference strings."""
    if isinstance(predictions, str) or isinstance(references, str):
        # A bare string would be scored character by character: always a caller's mistake.
        raise ResultError("predictions and references must be sequences of examples, not one string")
    n_pred, n_ref = len(predictions), len(references)
    if n_pred != n_ref:
        # The lineage silently truncates to the shorter list, which hides lost generations.
        raise ResultError(
            f"got {n_pred} predictions but {n_ref} references; every prediction needs its references"
        )
    ref_lists: list[list[str]] = []
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        if not isinstance(pred, str):
            raise ResultError(f"prediction {i} is {type(pred).__name__}, expected str")
        if isinstance(refs, str):
            ref_lists.append([refs])
            continue
        refs = list(refs)
        if not refs:
            # max() over no references has no value; the lineage would crash here too.
            raise ResultError(f"example {i} has an empty list of references")
        for j, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise ResultError(f"reference {j} of example {i} is {type(ref).__name__}, expected str")
        ref_lists.append(refs)
    return ref_lists


def _rouge_l_fmeasures(predictions: Sequence[str], ref_lists: list[list[str]]) -> list[float]:
    """Best Rouge-L F-measure (0-1) per example, float-for-float equal to rouge_score's."""
    with _encode_lock:
        try:
            enc_preds, enc_refs = _encode_batch(predictions, ref_lists)
        except _VocabFull:
            _reset_encoding()
            try:
                enc_preds, enc_refs = _encode_batch(predictions, ref_lists)
            except _VocabFull:
                enc_preds = enc_refs = None
    if enc_preds is None:
        # One call with over half a million distinct stems: compare per-call integer ids instead
        # (rapidfuzz hashes non-str items, and hash(i) == i keeps this exact).
        ids: dict[str, int] = {}

        def as_ids(text: str) -> list[int]:
            return [ids.setdefault(s, len(ids)) for s in tokenize_for_rouge(text)]

        enc_preds = [as_ids(p) for p in predictions]
        enc_refs = [[as_ids(r) for r in refs] for refs in ref_lists]
    lcs = LCSseq.similarity
    return [_best_fmeasure(p, refs, lcs) for p, refs in zip(enc_preds, enc_refs)]


def _encode_batch(predictions: Sequence[str], ref_lists: list[list[str]]):
    return [_encode(p) for p in predictions], [[_encode(r) for r in refs] for refs in ref_lists]


def _best_fmeasure(pred, refs, lcs_length) -> float:
    best = 0.0
    n_pred = len(pred)
    for ref in refs:
        n_ref = len(ref)
        if not n_ref or not n_pred:
            # rouge_score returns Score(0, 0, 0) without computing anything.
            continue
        lcs = lcs_length(ref, pred)
        # Written exactly as rouge_score's _score_lcs and scoring.fmeasure so the float
        # operations, and hence the rounding, are identical.
        precision = lcs / n_pred
        recall = lcs / n_ref
        if precision + recall > 0:
            f = 2 * precision * recall / (precision + recall)
        else:
            f = 0.0
        if f > best:
            best = f
    return best


def rouge_l(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> list[float]:
    """Per-example Rouge-L F-measure x100, best over that example's references.

    ``references[i]`` is one reference string or a sequence of them. Each value equals
    ``RougeScorer(['rougeL'], use_stemmer=True).score_multi(refs, pred)['rougeL'].fmeasure * 100``
    exactly (``==``). Raises ResultError when the two lengths differ (nothing is truncated).
    """
    ref_lists = _reference_lists(predictions, references)
    return [f * 100 for f in _rouge_l_fmeasures(predictions, ref_lists)]


# SQuAD v1.1's normalisation without its article removal, as the lineage adapted it:
# lowercase, delete ASCII punctuation, collapse whitespace.
_DELETE_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _normalize_answer(text: str) -> str:
    return " ".join(text.lower().translate(_DELETE_PUNCTUATION).split())


def exact_match(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> list[float]:
    """Per-example exact match, 100.0 or 0.0, best over that example's references.

    Strings match after the lineage's normalisation: lowercase, ASCII punctuation removed,
    whitespace collapsed; articles are kept. Raises ResultError when the lengths differ.
    """
    ref_lists = _reference_lists(predictions, references)
    out = []
    for pred, refs in zip(predictions, ref_lists):
        norm = _normalize_answer(pred)
        out.append(100.0 if any(_normalize_answer(r) == norm for r in refs) else 0.0)
    return out


def lineage_metrics(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    ndigits: int | None = 4,
) -> dict[str, float]:
    """``{"exact_match", "rougeL"}`` with the lineage's own arithmetic and rounding.

    MiniLLM's ``compute_metrics`` sums the 0-1 scores, then takes ``100.0 * sum / n`` and rounds
    to 4 decimals; the mean of :func:`rouge_l`'s x100 values can differ from that in the last
    bits, so this reproduces the logged numbers exactly. ``ndigits=None`` skips the rounding.
    Unlike the lineage, unequal lengths raise ResultError instead of truncating.
    """
    ref_lists = _reference_lists(predictions, references)
    if not ref_lists:
        raise ResultError("no examples to score: the mean of zero scores is undefined")
    fmeasures = _rouge_l_fmeasures(predictions, ref_lists)
    em_hits = sum(v == 100.0 for v in exact_match(predictions, ref_lists))
    rouge_sum = 0
    for f in fmeasures:  # sequential, in example order, like the lineage's `+=`
        rouge_sum += f
    n = len(ref_lists)
    metrics = {"exact_match": 100.0 * em_hits / n, "rougeL": 100.0 * rouge_sum / n}
    if ndigits is not None:
        metrics = {k: round(v, ndigits) for k, v in metrics.items()}
    return metrics
