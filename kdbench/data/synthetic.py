"""Deterministic synthetic instruction-following suite with a ground-truth difficulty level.

Every example is a natural-language instruction (one of several paraphrases per task family) over a
short input built from a closed vocabulary of common lowercase English words (animals, colors, fruits,
objects) and numbers written as digits, in the MiniLLM prompt template. The answer is a deterministic
function of instruction and input: a short list of words or numbers separated by single spaces.

**The level makes a task harder, not its answer longer.** Within a family every answer has the same
number of items at every level; the level L adds distractors (or packs them closer to the answer):

==========  ===================================================  =======================  ========
family      task                                                 level L adds             answer
==========  ===================================================  =======================  ========
select      the 3 words of a category, in input order            2(L-1) distractors       3 words
backward    the 3 words of a category, in reverse input order    2(L-1) distractors       3 words
count       how often 2 quoted words occur (1..3 times each)     2(L-1) distractor words  2 numbers
repeat      the 2 words that occur twice, in first-seen order    2(L-1) distinct words    2 words
sort        the 3 alphabetically first words                     2L words, packed closer  3 words
max         the 2 largest numbers, largest first                 2L numbers, packed       2 numbers
                                                                 closer; gap narrows
==========  ===================================================  =======================  ========

Levels 1-5 are in distribution; the out-of-distribution split uses levels 6 and 7 (same rules).

**Why distillation can matter here** (``docs/testbed.md`` has the measurements). In LLM distillation the
teacher knows more than the labels of the distillation set carry. Two mechanisms model that, each a
knob of the data source:

- *Pools*: splits named ``*_pool`` (``teacher_pool``, ``student_pool``) are clean examples of the same
  tasks, disjoint from every other split, on which the teacher (much data) and the student's warm-up
  (little data) are trained before distillation: their "pretraining".
- *Reference noise* (``noise``): in the splits it names (the distillation set ``train`` by default), a
  share ``rate`` of the references is replaced by a plausible wrong answer (``kind: swap``: the answer
  of another example of the same family and level; ``perturb``: some items replaced by other items of
  the same type). A noisy record keeps its correct answer in ``clean_output`` and ``noisy: true``.

Determinism: each (split, slot) has its own RNG stream derived (SHA-256) from ``(seed, split, slot)``, so
the same seed gives byte-identical records and adding a split never changes another one. Slots are
assigned to (family, level) cells round-robin (families and levels balanced to within one example), then
shuffled with the split's seed. Prompts are unique within a split, and no evaluation split shares an
example (family, input and query, hence its prompt) with any training-side split (``train``, ``*_pool``);
pools share none with ``train`` (they may share some with each other, as two pretraining corpora can).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass
from typing import Callable, Collection, Iterable, Mapping, Sequence

from kdbench.data import build_prompt
from kdbench.errors import ConfigError

__all__ = [
    "FAMILIES", "ID_LEVELS", "OOD_LEVELS", "CATEGORIES", "VOCAB", "PARAPHRASES", "NOISE_KINDS",
    "NoiseConfig", "generate_examples", "generate_suite", "is_training_split",
]

ID_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
OOD_LEVELS: tuple[int, ...] = (6, 7)
NOISE_KINDS = ("swap", "perturb")

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
NUMBER_RANGE = (10, 99)      # two-digit numbers: one token each for Rouge-L
MAX_LEVEL = 12               # level L adds about 2L distractors; keeps every input well inside 128 tokens

PARAPHRASES: dict[str, tuple[str, ...]] = {
    "select": (
        "List the {query} in the following words, in order.",
        "Which of the words below are {query}? Keep their order.",
        "Write only the {query} from the list, in the order they appear.",
    ),
    "sort": (
        "Write the three words that come first in alphabetical order.",
        "Which three of these words come first alphabetically? List them in order.",
        "Give the first three words of the list in alphabetical order.",
    ),
    "backward": (
        "List the {query} in the following words, last one first.",
        "Which of the words below are {query}? Write them in reverse order.",
        "Write only the {query} from the list, from the last to the first.",
    ),
    "max": (
        "Write the two largest numbers, largest first.",
        "Which two numbers below are the greatest? Start with the largest.",
        "Give the biggest and the second biggest of these numbers.",
    ),
    "count": (
        "How many times does each of {query} appear in the list?",
        "Count how often {query} occur in the words below.",
        "Give the number of occurrences of {query} in the input.",
    ),
    "repeat": (
        "Which two words appear twice? Write them in the order they first appear.",
        "Two words occur twice in the list below. Name them in order of first appearance.",
        "Find the two repeated words, in the order they first occur.",
    ),
}

# A generator returns (query, input, answer items); query fills the instruction's {query} slot.
_Gen = Callable[[random.Random, int], tuple[str, str, list[str]]]


def _quoted(words: Sequence[str]) -> str:
    quoted = [f'"{w}"' for w in words]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _distractors(level: int) -> int:
    """Distractors at a level: none at level 1 (the task on its bare input), two more per level."""
    return 2 * (level - 1)


def _gen_select(rng: random.Random, level: int) -> tuple[str, str, list[str]]:
    category = rng.choice(tuple(CATEGORIES))
    others = [w for w in VOCAB if _CATEGORY_OF[w] != category]
    tagged = [(True, w) for w in rng.sample(CATEGORIES[category], 3)]
    tagged += [(False, rng.choice(others)) for _ in range(_distractors(level))]
    rng.shuffle(tagged)
    return category, " ".join(w for _, w in tagged), [w for hit, w in tagged if hit]


_ALPHABETICAL = tuple(sorted(VOCAB))
_SORT_ANSWER_RANKS = 24          # the three answers come from the first half of the alphabetical order


def _near_window(level: int, width: int) -> int:
    """How far beyond the answer the 2L distractors of ``sort`` and ``max`` may lie: wide at level 1,
    narrow (crowding the answer) at high levels, never narrower than the 2L values needed."""
    return max(2 * level, width // level)


def _gen_sort(rng: random.Random, level: int) -> tuple[str, str, list[str]]:
    # The answer is drawn first, from the same distribution at every level; the level adds distractors
    # and packs them alphabetically closer behind the answer, so it makes the task harder without
    # making its answer easier to guess.
    ranks = sorted(rng.sample(range(_SORT_ANSWER_RANKS), 3))
    window = _ALPHABETICAL[ranks[-1] + 1:ranks[-1] + 1 + _near_window(level, len(VOCAB) - _SORT_ANSWER_RANKS)]
    words = [_ALPHABETICAL[r] for r in ranks] + rng.sample(window, 2 * level)
    rng.shuffle(words)
    return "", " ".join(words), [_ALPHABETICAL[r] for r in ranks]


def _gen_max(rng: random.Random, level: int) -> tuple[str, str, list[str]]:
    # The level crowds the answer: the largest number comes closer to the second, and the 2L
    # distractors pack closer below the second.
    width = 48
    second = rng.randint(NUMBER_RANGE[0] + width, NUMBER_RANGE[1] - 1)
    first = rng.randint(second + 1, min(NUMBER_RANGE[1], second + _near_window(level, width) // 2))
    below = range(second - _near_window(level, width), second)
    nums = [first, second] + rng.sample(below, 2 * level)
    rng.shuffle(nums)
    return "", " ".join(map(str, nums)), [str(first), str(second)]


def _gen_count(rng: random.Random, level: int) -> tuple[str, str, list[str]]:
    asked = rng.sample(VOCAB, 2)
    counts = [rng.randint(1, 3) for _ in asked]
    others = [w for w in VOCAB if w not in asked]
    words = [w for w, c in zip(asked, counts) for _ in range(c)] + [rng.choice(others) for _ in range(_distractors(level))]
    rng.shuffle(words)
    return _quoted(asked), " ".join(words), [str(c) for c in counts]


def _gen_backward(rng: random.Random, level: int) -> tuple[str, str, list[str]]:
    query, inp, members = _gen_select(rng, level)
    return query, inp, members[::-1]


def _gen_repeat(rng: random.Random, level: int) -> tuple[str, str, list[str]]:
    distinct = rng.sample(VOCAB, 2 + _distractors(level))
    twice = distinct[:2]
    words = distinct + twice
    rng.shuffle(words)
    first_seen = sorted(twice, key=words.index)
    return "", " ".join(words), first_seen


_GENERATORS: dict[str, _Gen] = {
    "select": _gen_select,
    "sort": _gen_sort,
    "max": _gen_max,
    "count": _gen_count,
    "backward": _gen_backward,
    "repeat": _gen_repeat,
}
FAMILIES: tuple[str, ...] = tuple(_GENERATORS)
_NUMERIC_FAMILIES = frozenset({"max", "count"})

# Regeneration attempts per example before giving up on a unique prompt.
_MAX_ATTEMPTS = 200
_SPLIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_training_split(split: str) -> bool:
    """Training-side splits (the distillation set and the pretraining pools) never share an example
    with an evaluation split."""
    return split == "train" or split.endswith("_pool")


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
        if lv > MAX_LEVEL:
            raise ConfigError(f"synthetic {what}: difficulty level {lv} is above the largest supported "
                              f"level {MAX_LEVEL}")
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


@dataclass(frozen=True)
class NoiseConfig:
    """Reference noise in the distillation set: ``rate`` of the references in ``splits`` are wrong."""

    rate: float = 0.0
    kind: str = "swap"
    splits: tuple[str, ...] = ("train",)

    @classmethod
    def from_mapping(cls, section: Mapping | None, where: str = "noise") -> "NoiseConfig":
        if section is None:
            return cls()
        if not isinstance(section, Mapping):
            raise ConfigError(f"synthetic {where} must be a mapping with rate, kind, splits")
        unknown = sorted(set(section) - {"rate", "kind", "splits"})
        if unknown:
            raise ConfigError(f"synthetic {where}: unknown key(s) {', '.join(unknown)}; allowed: rate, kind, splits")
        rate = section.get("rate", 0.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ConfigError(f"synthetic {where}.rate must be a number in [0, 1), got {rate!r}")
        kind = section.get("kind", "swap")
        if kind not in NOISE_KINDS:
            raise ConfigError(f"synthetic {where}.kind {kind!r} is not one of {', '.join(NOISE_KINDS)}")
        splits = section.get("splits", ["train"])
        if isinstance(splits, str) or not all(isinstance(s, str) for s in splits):
            raise ConfigError(f"synthetic {where}.splits must be a list of split names")
        return cls(float(rate), kind, tuple(_check_split(s) for s in splits))


# ---------------------------------------------------------------- generation

def _derive_seed(seed: int, split: str, *tags: object) -> int:
    text = "\x1f".join(["kdbench.synthetic.v2", str(seed), split, *map(str, tags)])
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


COMPACT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
TEMPLATES = ("minillm", "compact")


def _make(rng: random.Random, family: str, level: int, template: str = "minillm") -> tuple[str, dict]:
    query, inp, items = _GENERATORS[family](rng, level)
    phrase = rng.choice(PARAPHRASES[family])
    instruction = phrase.format(query=query) if "{query}" in phrase else phrase
    instruction = instruction[0].upper() + instruction[1:]
    prompt = build_prompt(instruction, inp) if template == "minillm" else \
        COMPACT_TEMPLATE.format(instruction=instruction, input=inp)
    row = {"instruction": instruction, "input": inp, "output": " ".join(items),
           "prompt": prompt, "family": family, "difficulty": level}
    return _content_key(family, query, inp), row


def _wrong_answer(rng: random.Random, row: dict, kind: str) -> str:
    """A plausible wrong answer for ``row``: another example's answer (swap) or some items replaced
    (perturb); never the correct answer."""
    correct = row["output"]
    for _ in range(_MAX_ATTEMPTS):
        if kind == "swap":
            _, other = _make(rng, row["family"], row["difficulty"])
            answer = other["output"]
        else:
            items = correct.split(" ")
            numeric = row["family"] in _NUMERIC_FAMILIES
            for i in range(len(items)):
                if i == 0 or rng.random() < 0.5:
                    if numeric:
                        items[i] = str(min(99, max(0, int(items[i]) + rng.choice((-1, 1)) * rng.randint(1, 9))))
                    else:
                        items[i] = rng.choice(VOCAB)
            answer = " ".join(items)
        if answer != correct:
            return answer
    raise ConfigError(f"synthetic noise: cannot find a wrong answer for a {row['family']!r} example")


def _generate(split: str, n: int, seed: int, levels: tuple[int, ...], families: tuple[str, ...],
              exclude_keys: Collection[str], exclude_prompts: Collection[str],
              allow_duplicates: bool, noise: NoiseConfig = NoiseConfig(),
              template: str = "minillm") -> tuple[list[dict], set[str]]:
    seen: set[str] = set()
    rows: list[dict] = []
    for i, (family, level) in enumerate(_cells(n, families, levels)):
        rng = random.Random(_derive_seed(seed, split, "item", i))
        for _ in range(_MAX_ATTEMPTS):
            key, row = _make(rng, family, level, template)
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
    noisy = split in noise.splits and noise.rate > 0
    if noisy:
        # Which slots are noisy is drawn separately from the content, so the same seed gives the same
        # prompts whatever the noise rate.
        pick = random.Random(_derive_seed(seed, split, "noise"))
        n_noisy = round(noise.rate * len(rows))
        for i in sorted(pick.sample(range(len(rows)), n_noisy)):
            row = rows[i]
            rng = random.Random(_derive_seed(seed, split, "noise", i))
            row["clean_output"] = row["output"]
            row["output"] = _wrong_answer(rng, row, noise.kind)
            row["noisy"] = True
    random.Random(_derive_seed(seed, split, "order")).shuffle(rows)
    out = []
    for i, row in enumerate(rows):
        rec = {"id": f"syn-{split}-{i:06d}"}
        rec.update(row)
        rec["split"] = split
        if noisy:
            rec.setdefault("noisy", False)
        out.append(rec)
    return out, seen


def generate_examples(split: str, n: int, seed: int, levels: Iterable[int] = ID_LEVELS,
                      families: Iterable[str] | None = None, *,
                      exclude_prompts: Collection[str] = ()) -> list[dict]:
    """``n`` clean records for ``split``, balanced over ``families`` x ``levels`` and shuffled.

    Prompts are unique within the split; an example whose prompt is in ``exclude_prompts`` is
    regenerated. ``levels`` is used as given, also for a split named "ood" (:func:`generate_suite`
    picks ``ood_levels`` for it). A nearly exhausted example space is a ConfigError.
    """
    split = _check_split(split)
    n = _check_int(n, f"size of split {split!r}", minimum=0)
    seed = _check_int(seed, "seed")
    fams = _check_families(families)
    lvls = _check_levels(levels, f"levels for split {split!r}")
    rows, _ = _generate(split, n, seed, lvls, fams, (), frozenset(exclude_prompts), allow_duplicates=False)
    return rows


def generate_suite(seed: int, sizes: Mapping[str, int], id_levels: Iterable[int] = ID_LEVELS,
                   ood_levels: Iterable[int] = OOD_LEVELS, families: Iterable[str] | None = None,
                   noise: NoiseConfig | Mapping | None = None, template: str = "minillm") -> dict[str, list[dict]]:
    """Every split in ``sizes`` (e.g. ``{"teacher_pool": 12000, "train": 2000, "dev": 200, "test": 200,
    "ood": 200}``).

    The split named "ood" uses ``ood_levels``, every other split ``id_levels``. Training-side splits
    (``train``, then the ``*_pool`` splits) are generated first; a pool shares no example with train;
    no evaluation split shares an example with any of them. Ids ("syn-<split>-<index>")
    are unique across the suite. Returned in the order of ``sizes``.
    """
    if template not in TEMPLATES:
        raise ConfigError(f"synthetic template {template!r} is not one of {', '.join(TEMPLATES)}")
    if not isinstance(sizes, Mapping) or not sizes:
        raise ConfigError("synthetic sizes must be a non-empty mapping of split name -> number of examples")
    seed = _check_int(seed, "seed")
    fams = _check_families(families)
    id_lv = _check_levels(id_levels, "id_levels")
    ood_lv = _check_levels(ood_levels, "ood_levels")
    noise = noise if isinstance(noise, NoiseConfig) else NoiseConfig.from_mapping(noise)
    for split, n in sizes.items():
        _check_split(split)
        _check_int(n, f"size of split {split!r}", minimum=0)
    unknown = [s for s in noise.splits if s not in sizes]
    if noise.rate > 0 and unknown:
        raise ConfigError(f"synthetic noise.splits names split(s) {', '.join(unknown)} that sizes does not "
                          f"define (splits: {', '.join(sizes)})")
    order = sorted(sizes, key=lambda s: (s != "train", not is_training_split(s), s))
    suite: dict[str, list[dict]] = {}
    training_keys: set[str] = set()
    train_keys: frozenset[str] = frozenset()
    for split in order:
        lv = ood_lv if split == "ood" else id_lv
        if is_training_split(split):
            # A pool avoids the distillation set (so that training on it is not training on train) but not
            # the other pools: each pool depends only on the seed, its size and train.
            # Duplicates inside a training split are tolerated only once the example space is nearly used up.
            rows, keys = _generate(split, sizes[split], seed, lv, fams, train_keys, (),
                                   allow_duplicates=True, noise=noise, template=template)
            training_keys |= keys
            if split == "train":
                train_keys = frozenset(keys)
        else:
            rows, _ = _generate(split, sizes[split], seed, lv, fams, training_keys, (), allow_duplicates=False,
                                noise=noise, template=template)
        suite[split] = rows
    return {split: suite[split] for split in sizes}
