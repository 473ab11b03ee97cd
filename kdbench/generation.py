"""Batched generation with the lineage protocol: prompts cut to their first N tokens, left padding,
length-sorted batches, KV cache, stop at EOS; sampling (T=1, top_k 0, top_p 1, no-repeat 6) or greedy."""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch

from kdbench.accounting import GpuClock
from kdbench.batching import encode_prompts
from kdbench.progress import batch_starts


def generation_kwargs(decoding: dict[str, Any], tokenizer) -> dict[str, Any]:
    kwargs = {"max_new_tokens": decoding["max_new_tokens"], "pad_token_id": tokenizer.pad_token_id,
              "eos_token_id": tokenizer.eos_token_id, "use_cache": True, "num_beams": 1,
              "no_repeat_ngram_size": decoding.get("no_repeat_ngram_size", 0) or None}
    if decoding["decoding"] == "sample":
        kwargs.update(do_sample=True, temperature=decoding["temperature"], top_k=decoding["top_k"],
                      top_p=decoding["top_p"])
    else:
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    return kwargs


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], *, max_prompt_tokens: int, decoding: dict[str, Any],
             seed: int, batch_size: int, device: torch.device,
             progress: str | None = None) -> tuple[list[str], dict[str, Any]]:
    """Return one completion per prompt (in input order) and generation statistics (``progress``: the name
    of a progress bar over the prompts)."""
    model.to(device).eval()
    encoded, truncated = encode_prompts(tokenizer, prompts, max_prompt_tokens)
    # Longest first: similar lengths share a batch, so little padding is computed.
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    outputs: list[str | None] = [None] * len(encoded)
    kwargs = generation_kwargs(decoding, tokenizer)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    new_tokens = 0
    prompt_tokens = 0
    gpu_clock = GpuClock(device).start()
    t0 = time.perf_counter()
    for start in batch_starts(len(order), batch_size, progress):
        rows = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids = encoded[i]
            input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[r, width - len(ids):] = 1
        generated = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
        completions = generated[:, width:].tolist()
        for r, i in enumerate(rows):
            tokens = completions[r]
            if tokenizer.eos_token_id in tokens:
                tokens = tokens[:tokens.index(tokenizer.eos_token_id)]
            new_tokens += len(tokens)
            prompt_tokens += len(encoded[i])
            outputs[i] = tokenizer.decode(tokens, skip_special_tokens=True)
    gpu = gpu_clock.stop()       # synchronises the device, so the wall time covers every kernel
    wall = time.perf_counter() - t0
    stats = {"wall_s": wall, "examples": len(prompts), "new_tokens": new_tokens, "prompt_tokens": prompt_tokens,
             "tokens_per_s": new_tokens / wall if wall > 0 else 0.0,
             "truncated_prompts": truncated,
             **gpu}
    return [o if o is not None else "" for o in outputs], stats
