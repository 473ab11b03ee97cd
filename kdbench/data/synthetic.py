"""Deterministic synthetic instruction-following suite with a ground-truth difficulty level.

Every example is a natural-language instruction (one of several paraphrases per task family,
chosen by the seeded RNG) over a short input built from a small closed vocabulary of common
lowercase English words (animals, colors, fruits, objects) and numbers written as digits.
The answer is a deterministic function of instruction and input, and lists of words are
separated by single spaces so a partly correct answer earns partial Rouge-L credit.

Difficulty levels 1-5 are in-distribution; the out-of-distribution split uses levels 6 and 7,
built by the same rules (only longer).  Per family, the level sets the input length / number
of operations (``L`` = level):

==========  ==========================================  =============  ===============
family      task                                        input words    output words
==========  ==========================================  =============  ===============
copy        repeat the words                            3L             3L
reverse     words in reverse order                      2L+1           2L+1
sort        distinct words in alphabetical order        2L+1           2L+1
sum         add numbers 1..20                           L+1            1
count       occurrences of a quoted word (1..L+1)       3L+1           1
lookup      value of a quoted key in a key: value table 2L pairs       1
filter      words of one category, in input order       3L+1           L+1
max         largest of distinct numbers 1..99           2L+1           1
==========  ==========================================  =============  ===============

Determinism: each split has its own RNG streams derived (SHA-256) from ``(seed, split)``, so the
same seed gives byte-identical records and adding a split never changes another one.  Slots are
assigned to (family, level) cells round-robin (families and levels each balanced to within one
example), generated, then shuffled with the split's seed.  Prompts are unique within a split, and
no dev/test/ood example shares its content (family, input and query, hence also its prompt) with
a train example: a colliding example is regenerated.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from typing import Callable, Collection, Iterable, Mapping, Sequence

from kdbench.data import build_prompt
from kdbench.errors import ConfigError

__all__ = [
    "FAMILIES", "ID_LEVELS", "OOD_LEVELS", "CATEGORIES", "VOCAB", "PARAPHRASES",
    "generate_examples", "generate_suite",
]

ID_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
OOD_LEVELS: tuple[int, ...] = (6, 7)

CATEGORIES: dict[str, tuple[str, ...]] = {
    "animals": ("cat", "dog", "cow", "pig", "fox", "owl", "hen", "bee", "ant", "bat", "duck", "frog"),
    "colors": ("red", "blue", "green", "pink", "black", "white", "brown", "gray", "gold", "purple",
               "yellow", "silver"),
    "fruits": ("apple", "pear", "plum", "peach", "grape", "lemon", "mango", "melon", "kiwi", "cherry",
               "banana", "berry"),
    "objects": ("cup", "pen", "box", "hat", "key", "book", "lamp", "door", "ball", "bell", "chair",
                "table"),
}
VOCAB: tuple[str, ...] = tuple(w for words in CATEGORIES.values() for w in words)
_CATEGORY_OF = {w: c for c, words in CATEGORIES.items() for w in words}

SUM_MAX = 20      # sum: addends are 1..SUM_MAX
MAX_MAX = 99      # max: distinct numbers 1..MAX_MAX
LOOKUP_MAX = 99   # lookup: values 1..LOOKUP_MAX

PARAPHRASES: dict[str, tuple[str, ...]] = {
    "copy": (
        "Repeat the following words exactly.",
        "Copy the list of words below.",
        "Write the same words again, in the same order.",
        "Echo the words in the input.",
    ),
    "reverse": (
        "Reverse the order of the following words.",
        "Write the words below in reverse order.",
        "List these words backwards, from last to first.",
    ),
    "sort": (
        "Sort the following words in alphabetical order.",
        "Arrange the words below alphabetically.",
        "Put these words in alphabetical order.",
    ),
    "sum": (
        "Add the following numbers.",
        "What is the sum of the numbers below?",
        "Compute the total of these numbers.",
    ),
    "count": (
        'How many times does the word "{query}" appear in the list?',
        'Count how often "{query}" occurs in the words below.',
        'Count the occurrences of "{query}" in the input.',
    ),
    "lookup": (
        'What is the value of "{query}" in the table?',
        'Look up "{query}" in the table below and give its value.',
        'Find the number paired with "{query}".',
    ),
    "filter": (
        "List the {query} in the following words, in order.",
        "Which of the words below are {query}? Keep their order.",
        "Write only the {query} from the list, in the order they appear.",
    ),
    "max": (
        "What is the largest number in the list?",
        "Find the biggest of the following numbers.",
        "Which number below is the greatest?",
    ),
}

# A generator returns (query, input, output); query fills the instruction's {query} slot ("" if none).
_Gen = Callable[[random.Random, int], tuple[str, str, str]]


def _gen_copy(rng: random.Random, level: int) -> tuple[str, str, str]:
    words = [rng.choice(VOCAB) for _ in range(3 * level)]
    return "", " ".join(words), " ".join(words)


def _gen_reverse(rng: random.Random, level: int) -> tuple[str, str, str]:
    words = [rng.choice(VOCAB) for _ in range(2 * level + 1)]
    return "", " ".join(words), " ".join(reversed(words))


def _gen_sort(rng: random.Random, level: int) -> tuple[str, str, str]:
    words = rng.sample(VOCAB, 2 * level + 1)
    return "", " ".join(words), " ".join(sorted(words))


def _gen_sum(rng: random.Random, level: int) -> tuple[str, str, str]:
    nums = [rng.randint(1, SUM_MAX) for _ in range(level + 1)]
    return "", " ".join(map(str, nums)), str(sum(nums))


def _gen_count(rng: random.Random, level: int) -> tuple[str, str, str]:
    length = 3 * level + 1
    target = rng.choice(VOCAB)
    hits = rng.randint(1, level + 1)
    others = [w for w in VOCAB if w != target]
    words = [target] * hits + [rng.choice(others) for _ in range(length - hits)]
    rng.shuffle(words)
    return target, " ".join(words), str(hits)


def _gen_lookup(rng: random.Random, level: int) -> tuple[str, str, str]:
    keys = rng.sample(VOCAB, 2 * level)
    values = [rng.randint(1, LOOKUP_MAX) for _ in keys]
    i = rng.randrange(len(keys))
    table = ", ".join(f"{k}: {v}" for k, v in zip(keys, values))
    return keys[i], table, str(values[i])


def _gen_filter(rng: random.Random, level: int) -> tuple[str, str, str]:
    category = rng.choice(tuple(CATEGORIES))
    members = CATEGORIES[category]
    others = [w for w in VOCAB if _CATEGORY_OF[w] != category]
    tagged = [(True, rng.choice(members)) for _ in range(level + 1)]
    tagged += [(False, rng.choice(others)) for _ in range(2 * level)]
    rng.shuffle(tagged)
    return category, " ".join(w for _, w in tagged), " ".join(w for hit, w in tagged if hit)


def _gen_max(rng: random.Random, level: int) -> tuple[str, str, str]:
    nums = rng.sample(range(1, MAX_MAX + 1), 2 * level + 1)
    return "", " ".join(map(str, nums)), str(max(nums))


_GENERATORS: dict[str, _Gen] = {
    "copy": _gen_copy,
    "reverse": _gen_reverse,
    "sort": _gen_sort,
    "sum": _gen_sum,
    "count": _gen_count,
    "lookup": _gen_lookup,
    "filter": _gen_filter,
    "max": _gen_max,
}
FAMILIES: tuple[str, ...] = tuple(_GENERATORS)

# Regeneration attempts per example before giving up on a unique prompt.
_MAX_ATTEMPTS = 200
_SPLIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------- validation helpers

def _check_families(families: Iterable[str] | None) -> tuple[str, ...]:
    if families is None:
        return FAMILIES
    if isinstance(families, str):
        families = [families]
    out: list[str] = []
    for name in families:
        if name not in _GENERATORS:
            raise ConfigError(f"unknown synthetic task family {name!r}; allowed families: {', '.join(FAMILIES)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"synthetic families must not be empty; allowed families: {', '.join(FAMILIES)}")
    return tuple(out)


def _check_levels(levels: Iterable[int] | None, what: str = "levels") -> tuple[int, ...]:
    if levels is None:
        raise ConfigError(f"synthetic {what} must be a non-empty list of positive integers")
    if isinstance(levels, int):
        levels = [levels]
    out: set[int] = set()
    for lv in levels:
        if isinstance(lv, bool) or not isinstance(lv, int) or lv < 1:
            raise ConfigError(f"synthetic {what}: difficulty level {lv!r} is not a positive integer")
        out.add(lv)
    if not out:
        raise ConfigError(f"synthetic {what} must not be empty (e.g. {list(ID_LEVELS)})")
    return tuple(sorted(out))


def _check_int(value, what: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"synthetic {what} must be an integer, got {type(value).__name__} ({value!r})")
    if minimum is not None and value < minimum:
        raise ConfigError(f"synthetic {what} must be >= {minimum}, got {value}")
    return value


def _check_split(split) -> str:
    if not isinstance(split, str) or not _SPLIT_RE.match(split):
        raise ConfigError(f"synthetic split name {split!r} must be a non-empty name of letters, digits, '_', '-', '.'")
    return split


# ---------------------------------------------------------------- generation

def _derive_seed(seed: int, split: str, *tags: object) -> int:
    text = "\x1f".join(["kdbench.synthetic.v1", str(seed), split, *map(str, tags)])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _cells(n: int, families: Sequence[str], levels: Sequence[int]) -> list[tuple[str, int]]:
    """(family, level) per slot: family = i mod F; level cycles with a shift every lcm(F, L) slots,
    so every F*L consecutive slots cover each cell once and any prefix is balanced to within one
    example in both families and levels."""
    nf, nl = len(families), len(levels)
    period = math.lcm(nf, nl)
    return [(families[i % nf], levels[(i + i // period) % nl]) for i in range(n)]


def _content_key(family: str, query: str, inp: str) -> str:
    return f"{family}\x1f{query}\x1f{inp}"


def _make(rng: random.Random, family: str, level: int) -> tuple[str, dict]:
    query, inp, out = _GENERATORS[family](rng, level)
    template = rng.choice(PARAPHRASES[family])
    instruction = template.format(query=query) if "{query}" in template else template
    row = {"instruction": instruction, "input": inp, "output": out,
           "prompt": build_prompt(instruction, inp), "family": family, "difficulty": level}
    return _content_key(family, query, inp), row


def _generate(split: str, n: int, seed: int, levels: tuple[int, ...], families: tuple[str, ...],
              exclude_keys: Collection[str], exclude_prompts: Collection[str],
              allow_duplicates: bool) -> tuple[list[dict], set[str]]:
    seen: set[str] = set()
    rows: list[dict] = []
    for i, (family, level) in enumerate(_cells(n, families, levels)):
        rng = random.Random(_derive_seed(seed, split, "item", i))
        for _ in range(_MAX_ATTEMPTS):
            key, row = _make(rng, family, level)
            clash = key in exclude_keys or row["prompt"] in exclude_prompts
            if not clash and key not in seen:
                break
        else:
            if clash or not allow_duplicates:
                raise ConfigError(
                    f"synthetic split {split!r}: cannot find a new {family!r} example at level {level} "
                    f"after {_MAX_ATTEMPTS} tries (the space of distinct examples is nearly used up); "
                    f"use fewer examples or other levels")
        seen.add(key)
        rows.append(row)
    random.Random(_derive_seed(seed, split, "order")).shuffle(rows)
    out = []
    for i, row in enumerate(rows):
        rec = {"id": f"syn-{split}-{i:06d}"}
        rec.update(row)
        rec["split"] = split
        out.append(rec)
    return out, seen


def generate_examples(split: str, n: int, seed: int, levels: Iterable[int] = ID_LEVELS,
                      families: Iterable[str] | None = None, *,
                      exclude_prompts: Collection[str] = ()) -> list[dict]:
    """``n`` records for ``split``, balanced over ``families`` x ``levels`` and shuffled.

    Prompts are unique within the split; an example whose prompt is in ``exclude_prompts`` is
    regenerated.  ``levels`` is used as given, also for a split named "ood"
    (:func:`generate_suite` picks ``ood_levels`` for it).  Same records as the split inside
    :func:`generate_suite` unless that one had to dodge train examples; here a nearly exhausted
    example space is a ConfigError even for train (the suite then tolerates train duplicates).
    """
    split = _check_split(split)
    n = _check_int(n, f"size of split {split!r}", minimum=0)
    seed = _check_int(seed, "seed")
    fams = _check_families(families)
    lvls = _check_levels(levels, f"levels for split {split!r}")
    rows, _ = _generate(split, n, seed, lvls, fams, (), frozenset(exclude_prompts), allow_duplicates=False)
    return rows


def generate_suite(seed: int, sizes: Mapping[str, int], id_levels: Iterable[int] = ID_LEVELS,
                   ood_levels: Iterable[int] = OOD_LEVELS,
                   families: Iterable[str] | None = None) -> dict[str, list[dict]]:
    """Every split in ``sizes`` (e.g. ``{"train": 3000, "dev": 200, "test": 300, "ood": 300}``).

    The split named "ood" uses ``ood_levels``, every other split ``id_levels``.  Train is
    generated first; no other split shares an example (hence a prompt) with it.  Ids
    ("syn-<split>-<index>") are unique across the suite.  Returned in the order of ``sizes``.
    """
    if not isinstance(sizes, Mapping) or not sizes:
        raise ConfigError("synthetic sizes must be a non-empty mapping of split name -> number of examples")
    seed = _check_int(seed, "seed")
    fams = _check_families(families)
    id_lv = _check_levels(id_levels, "id_levels")
    ood_lv = _check_levels(ood_levels, "ood_levels")
    for split, n in sizes.items():
        _check_split(split)
        _check_int(n, f"size of split {split!r}", minimum=0)
    order = sorted(sizes, key=lambda s: s != "train")
    suite: dict[str, list[dict]] = {}
    train_keys: set[str] = set()
    for split in order:
        lv = ood_lv if split == "ood" else id_lv
        if split == "train":
            # duplicates inside train are tolerated only once the example space is nearly exhausted
            rows, train_keys = _generate("train", sizes[split], seed, lv, fams, (), (), allow_duplicates=True)
        else:
            rows, _ = _generate(split, sizes[split], seed, lv, fams, train_keys, (), allow_duplicates=False)
        suite[split] = rows
    return {split: suite[split] for split in sizes}
