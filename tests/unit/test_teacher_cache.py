"""The teacher-output cache: same training as the live teacher, keyed by content, no forward passes."""

from __future__ import annotations

import random

import pytest
import torch

from kdbench.batching import collate, encode_records
from kdbench.data import record_from_json
from kdbench.data.synthetic import generate_examples
from kdbench.errors import ResultError
from kdbench.methods import ScheduleContext, discover_methods, instantiate, resolve_runs
from kdbench.models import build_model, load_tokenizer, save_model, train_bpe_tokenizer
from kdbench.teacher_cache import (CachedTeacher, approximation_error, build_cache, cache_key,
                                   reconstruct_topk)
from kdbench.train import LiveTeacher, TrainConfig, train

ARCH = {"init": "scratch", "architecture": {"model_type": "llama", "num_hidden_layers": 1, "hidden_size": 32,
                                            "intermediate_size": 64, "num_attention_heads": 2,
                                            "num_key_value_heads": 2, "max_position_embeddings": 160}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    rows = [record_from_json(r, f"syn:{i}") for i, r in enumerate(generate_examples("train", 48, seed=2))]
    train_bpe_tokenizer([t for r in rows for t in (r.prompt, r.output)], 320, root / "tok")
    tokenizer = load_tokenizer(root / "tok")
    teacher = build_model(ARCH, tokenizer, 11)
    save_model(teacher, tokenizer, root / "teacher")
    encoded = encode_records(tokenizer, rows, max_prompt_tokens=96, max_length=160)
    return root, rows, tokenizer, teacher, encoded


def _cache(setup, mode="dense", top_k=None, storage="fp32"):
    root, rows, tokenizer, teacher, encoded = setup
    key = cache_key(root / "teacher", encoded, mode, storage, top_k)
    path = root / f"cache-{mode}-{top_k}-{storage}.safetensors"
    meta = build_cache(teacher, encoded, pad_id=tokenizer.pad_token_id, device=torch.device("cpu"), batch_size=7,
                       mode=mode, storage=storage, top_k=top_k, key=key, out_tensors=path, out_meta=None)
    return CachedTeacher(path, meta, key), meta


def test_cached_logits_equal_live_logits_in_any_batch_order(setup):
    _, rows, tokenizer, teacher, encoded = setup
    cached, meta = _cache(setup)
    live = LiveTeacher(teacher, torch.device("cpu"), torch.float32)
    shuffled = list(range(len(encoded)))
    random.Random(0).shuffle(shuffled)
    for start in range(0, len(shuffled), 8):
        chunk = [encoded[i] for i in shuffled[start:start + 8]]
        batch = collate(chunk, tokenizer.pad_token_id)
        ids = [e.example_id for e in chunk]
        a = cached.response_logits(batch, ids)
        b = live.response_logits(batch, ids)
        full = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        assert a.shape == b.shape == (int((batch["labels"] != -100).sum()), full.shape[-1])
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
        assert torch.allclose(b, full[batch["labels"] != -100], rtol=1e-5, atol=1e-5)
    assert cached.forward_passes == 0 and meta["forward_passes"] == 7


def _train_taid(setup, teacher_source):
    root, rows, tokenizer, _, encoded = setup
    methods = discover_methods("methods")
    method = instantiate(resolve_runs({"methods": {"include": ["taid"]}}, methods)["taid"], methods)
    cfg = TrainConfig(epochs=2, lr=3e-3, global_batch_size=8, micro_batch_size=8, log_every=1)
    student = build_model(ARCH, tokenizer, 0)
    ctx = ScheduleContext(tuple(r.id for r in rows), cfg.epochs, 3)
    return train(student, method, encoded, ctx, cfg, pad_id=tokenizer.pad_token_id, seed=3,
                 device=torch.device("cpu"), teacher=teacher_source, log=lambda _: None)


def test_training_from_dense_cache_matches_live_teacher(setup):
    _, _, _, teacher, _ = setup
    live = _train_taid(setup, LiveTeacher(teacher, torch.device("cpu"), torch.float32))
    cached = _train_taid(setup, _cache(setup)[0])
    assert live["teacher_forward_passes"] == live["steps"] == 12
    assert cached["teacher_forward_passes"] == 0
    for a, b in zip(live["history"], cached["history"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["t"] == pytest.approx(a["t"], rel=1e-5)


def test_key_changes_with_weights_data_and_mode(setup, tmp_path):
    root, rows, tokenizer, teacher, encoded = setup
    base = cache_key(root / "teacher", encoded, "dense", "fp32", None)
    assert base == cache_key(root / "teacher", encoded, "dense", "fp32", None)
    shorter = encode_records(tokenizer, rows, max_prompt_tokens=40, max_length=160)
    assert cache_key(root / "teacher", shorter, "dense", "fp32", None) != base
    assert cache_key(root / "teacher", encoded, "dense", "bf16", None) != base
    assert cache_key(root / "teacher", encoded, "topk", "fp32", 8) != base
    assert cache_key(root / "teacher", encoded, "dense", "fp32", None, torch.bfloat16) != base
    other = build_model(ARCH, tokenizer, 99)
    save_model(other, tokenizer, tmp_path / "other")
    assert cache_key(tmp_path / "other", encoded, "dense", "fp32", None) != base


def test_stale_cache_is_refused(setup):
    root, *_ = setup
    cached, meta = _cache(setup)
    with pytest.raises(ResultError, match="does not match the current teacher"):
        CachedTeacher(root / "cache-dense-None-fp32.safetensors", meta, "0" * 64)


def test_topk_reconstruction_is_a_distribution_and_error_shrinks_with_k(setup):
    torch.manual_seed(0)
    logits = torch.randn(50, 300) * 3
    errors = [approximation_error(logits, k)["kl_mean"] for k in (4, 32, 128, 299)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-4
    logp = torch.log_softmax(logits, -1).topk(16, -1)
    full = reconstruct_topk(logp.values, logp.indices, 300)
    assert torch.allclose(full.exp().sum(-1), torch.ones(50), atol=1e-5)
    cached, meta = _cache(setup, mode="topk", top_k=16)
    assert meta["bytes"] > 0 and cached.forward_passes == 0
