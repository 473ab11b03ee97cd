"""Tokenizers and causal LMs: loaded by hub id or local path, or built from an architecture config."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable

import torch

from kdbench.batching import IGNORE_INDEX
from kdbench.errors import ConfigError, ResultError

SPECIAL_TOKENS = {"eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike) -> None:
    """Train a byte-level BPE on the training split and save it as a HF tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
    fast.save_pretrained(str(out_dir))


def load_tokenizer(name_or_path: str | os.PathLike):
    from transformers import AutoTokenizer

    with unreadable_artifact(name_or_path, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=False)
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer {name_or_path} has no EOS token; responses must end with one")
    if tokenizer.pad_token_id is None:
        # GPT-2's tokenizer ships without a pad token; the lineage pads with EOS.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# Architectures whose LM head is one linear layer on the base model's last hidden state (no logit
# soft-capping or scaling), so it can run on the response positions alone. tests/unit/test_models.py
# checks each against the full forward; any other architecture takes the full forward and a gather.
LINEAR_HEAD_MODEL_TYPES = frozenset({"llama", "gpt2", "qwen2", "mistral"})


class ResponseLM(torch.nn.Module):
    """A causal LM that returns logits at the response positions only (``labels != -100``), as [N, V] in
    row-major (example, position) order — the order of ``logits[labels != -100]``.

    Every loss in kdbench reads logits at response positions only, and prompts are most of each sequence
    (~90 % of the tokens in the default config), so the LM head and the losses' softmaxes run on those N
    rows instead of B x L. Wrap this module, not the bare model, in DistributedDataParallel so that its
    forward is the one DDP sees."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.head_on_responses_only = getattr(model.config, "model_type", None) in LINEAR_HEAD_MODEL_TYPES

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        keep = labels != IGNORE_INDEX
        if not self.head_on_responses_only:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[keep]
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.model.get_output_embeddings()(hidden[keep])


def build_model(section: dict, tokenizer, seed: int):
    """A model from a config section: {init: scratch, architecture: {...}} or {init: pretrained, name_or_path}."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if section["init"] == "pretrained":
        return load_model(section["name_or_path"])
    arch = dict(section["architecture"])
    model_type = arch.pop("model_type")
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **arch,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def load_model(name_or_path: str | os.PathLike, dtype: torch.dtype | None = None):
    from transformers import AutoModelForCausalLM

    kwargs = {"trust_remote_code": False}
    if dtype is not None:
        kwargs["dtype"] = dtype
    with unreadable_artifact(name_or_path, "model"):
        return AutoModelForCausalLM.from_pretrained(str(name_or_path), **kwargs)


@contextlib.contextmanager
def unreadable_artifact(path: str | os.PathLike, what: str):
    """A local file or directory that fails to load (truncated safetensors, broken JSON) is a ResultError
    naming it, not a bare SafetensorError; hub ids keep their own errors."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, SafetensorError) as exc:
        if not Path(path).exists():
            raise
        shards = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
        if isinstance(exc, SafetensorError) and len(shards) == 1:
            path = shards[0]
        raise ResultError(f"{path}: cannot load the {what} ({type(exc).__name__}: {str(exc)[:300]}); it is truncated "
                          f"or corrupt: delete it and re-run the job that writes it") from None


def save_model(model, tokenizer, out_dir: str | os.PathLike) -> None:
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
