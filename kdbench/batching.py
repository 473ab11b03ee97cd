"""Prompt/response tokenisation with lineage truncation, and padding into batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One training example, already shifted: logits at position i are scored against labels[i]."""

    example_id: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def response_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def encode_prompt(tokenizer, prompt: str, max_prompt_tokens: int) -> list[int]:
    """Prompts longer than the limit keep their first ``max_prompt_tokens`` tokens (lineage rule)."""
    return encode_prompts(tokenizer, [prompt], max_prompt_tokens)[0][0]


def encode_prompts(tokenizer, prompts: list[str], max_prompt_tokens: int) -> tuple[list[list[int]], int]:
    """:func:`encode_prompt` for many prompts in one tokenizer call; also returns how many were cut."""
    full = tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    return [ids[:max_prompt_tokens] for ids in full], sum(len(ids) > max_prompt_tokens for ids in full)


def encode_example(tokenizer, example_id: str, prompt: str, response: str,
                   max_prompt_tokens: int, max_length: int) -> Encoded:
    prompt_ids = encode_prompt(tokenizer, prompt, max_prompt_tokens)
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + response_ids)[:max_length]
    targets = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    targets = targets[:max_length]
    # Shift once here so that every consumer (loss, cache, profiler) shares one alignment.
    return Encoded(example_id, tuple(ids[:-1]), tuple(targets[1:]))


def encode_records(tokenizer, records, max_prompt_tokens: int, max_length: int) -> list[Encoded]:
    return [encode_example(tokenizer, r.id, r.prompt, r.output, max_prompt_tokens, max_length) for r in records]


def collate(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example in the batch."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        input_ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :n] = torch.tensor(ex.labels)
        attention[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
