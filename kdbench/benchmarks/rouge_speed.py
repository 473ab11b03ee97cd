"""Time kdbench's Rouge-L against rouge_score on the same pairs, and prove the numbers are equal.

    python -m kdbench.benchmarks.rouge_speed --out rouge.json [--n-pairs 10000] [--data-dir DIR]

Without ``--data-dir`` the pairs come from a seeded synthetic generator of instruction-answer
style text (so the benchmark runs anywhere); with it, references are the real eval sets' answers
and predictions are edited copies of them or other records' answers, like real generations.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kdbench import metrics

Pair = tuple[str, list[str]]

# Frequent English words head the Zipf ranking, as in real answers; the invented words behind
# them give the long tail of rare tokens that makes cold stemming expensive.
_COMMON = (
    "the of and to a in is that for it as with was on be by this are or an from at which "
    "can you your they their there have has more also use used using one two three first "
    "time people make made many most other some these such when what how why should would "
    "could will may important help helps example examples different however because while "
    "including provide provides process system data information water energy company "
    "computer language model models learning students history country city world year years"
).split()
_SYLLABLES = (
    "ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo ga ge gi go la le li lo lu ma me "
    "mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve "
    "vi vo za ze zi zo str tran pro con ex in un ment tion ble ter"
).split()
# Inflections give the stemmer real work: "runs"/"running"/"runner" share a stem.
_SUFFIXES = ("s", "ed", "ing", "ly", "er", "ness", "ation", "ment", "al", "ize")


class _TextGenerator:
    def __init__(self, seed: int, lexicon_size: int = 6000, zipf_exponent: float = 1.05,
                 suffix_rate: float = 0.3) -> None:
        self.suffix_rate = suffix_rate
        self.rng = random.Random(seed)
        invented = set()
        while len(invented) < lexicon_size:
            invented.add("".join(self.rng.choice(_SYLLABLES) for _ in range(self.rng.randint(1, 4))))
        self.words = list(_COMMON) + sorted(invented)
        self.cum_weights = list(itertools.accumulate(
            1.0 / (rank + 1) ** zipf_exponent for rank in range(len(self.words))))

    def _word(self) -> str:
        rng = self.rng
        if rng.random() < 0.03:
            return rng.choice((str(rng.randint(0, 100)), str(rng.randint(1800, 2030)),
                               f"{rng.randint(0, 99)}.{rng.randint(0, 9)}", f"{rng.randint(1, 50)}%"))
        word = rng.choices(self.words, cum_weights=self.cum_weights)[0]
        if len(word) > 3 and rng.random() < self.suffix_rate:
            word += rng.choice(_SUFFIXES)
        return word

    def text(self, n_words: int) -> str:
        rng = self.rng
        parts, sentence_start = [], True
        for _ in range(n_words):
            word = self._word()
            if sentence_start:
                word = word.capitalize()
                if rng.random() < 0.08:
                    word = f"\n{rng.randint(1, 9)}. {word}"
            sentence_start = False
            roll = rng.random()
            if roll < 0.07:
                word += "."
                sentence_start = True
            elif roll < 0.12:
                word += ","
            elif roll < 0.13:
                word = f"({word})"
            elif roll < 0.14:
                word += ":"
            parts.append(word)
        return " ".join(parts)

    def length(self) -> int:
        # Instruction answers: mostly a sentence or a paragraph, with a long tail.
        return max(1, min(400, int(self.rng.lognormvariate(3.8, 0.9))))


def _edit(text: str, rng: random.Random, filler: Callable[[], str]) -> str:
    """A generation-like variant of ``text``: some words dropped, replaced, inserted."""
    out = []
    for word in text.split(" "):
        roll = rng.random()
        if roll < 0.12:
            continue
        if roll < 0.24:
            out.append(filler())
            continue
        out.append(word)
        if roll > 0.94:
            out.append(filler())
    return " ".join(out)


def synthetic_pairs(n_pairs: int, seed: int = 0) -> list[Pair]:
    gen = _TextGenerator(seed)
    rng = gen.rng
    pairs: list[Pair] = []
    for _ in range(n_pairs):
        ref = gen.text(gen.length())
        roll = rng.random()
        if roll < 0.65:
            pred = _edit(ref, rng, gen._word)
        elif roll < 0.95:
            pred = gen.text(gen.length())
        else:
            pred = rng.choice(("", "Yes", "No.", "I don't know.", "..."))
        refs = [ref]
        if rng.random() < 0.1:
            refs.append(gen.text(gen.length()))
        pairs.append((pred, refs))
    return pairs


def data_pairs(data_dir: str | Path, n_pairs: int, seed: int = 0) -> list[Pair]:
    files = sorted(Path(data_dir).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no *.jsonl files in {data_dir}")
    records = []
    for path in files:
        with path.open(encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    rng = random.Random(seed)
    answers = [r["output"] for r in records]
    pairs: list[Pair] = []
    for i in range(n_pairs):
        record = records[rng.randrange(len(records))]
        refs = list(record.get("outputs") or [record["output"]])
        if rng.random() < 0.6:
            donor = rng.choice(answers).split() or ["the"]
            pred = _edit(refs[0], rng, lambda: rng.choice(donor))
        else:
            pred = rng.choice(answers)
        pairs.append((pred, refs))
    return pairs


def rouge_score_baseline(pairs: Sequence[Pair]) -> list[float]:
    """The lineage's computation, as rouge_score does it."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score_multi(refs, pred)["rougeL"].fmeasure * 100 for pred, refs in pairs]


def _best_time(fn: Callable[[], list[float]], repeats: int,
               before: Callable[[], None] | None = None) -> tuple[float, list[float]]:
    best, result = float("inf"), []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure(n_pairs: int = 10_000, seed: int = 0, data_dir: str | Path | None = None,
            repeats: int = 3) -> dict:
    """Best-of-``repeats`` wall time of rouge_score and of kdbench (cold and warm caches)."""
    pairs = data_pairs(data_dir, n_pairs, seed) if data_dir else synthetic_pairs(n_pairs, seed)
    preds = [p for p, _ in pairs]
    refs = [r for _, r in pairs]
    import rouge_score.rouge_scorer  # noqa: F401  -- keep nltk's slow import out of the timing

    base_s, expected = _best_time(lambda: rouge_score_baseline(pairs), repeats)
    # Cold: every stem and tokenisation recomputed, the fair comparison with rouge_score.
    cold_s, cold = _best_time(lambda: metrics.rouge_l(preds, refs), repeats, before=metrics.clear_caches)
    # Warm: the same texts again (e.g. the references across seeds and methods).
    warm_s, warm = _best_time(lambda: metrics.rouge_l(preds, refs), repeats)
    for name, got in (("cold", cold), ("warm", warm)):
        if got != expected:
            i = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
            raise AssertionError(
                f"kdbench ({name}) differs from rouge_score at pair {i}: {got[i]!r} != {expected[i]!r}"
            )
    return {
        "n_pairs": n_pairs,
        "rouge_score_s": base_s,
        "kdbench_cold_s": cold_s,
        "kdbench_warm_s": warm_s,
        "speedup_cold": base_s / cold_s,
        "speedup_warm": base_s / warm_s,
        "identical": True,
        "source": str(data_dir) if data_dir else f"synthetic(seed={seed})",
        "repeats": repeats,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    parser.add_argument("--n-pairs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="build pairs from the *.jsonl eval sets in this folder")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = measure(args.n_pairs, args.seed, args.data_dir, args.repeats)
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.out:
        from kdbench.io import write_text_atomic

        write_text_atomic(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
