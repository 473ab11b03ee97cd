"""The shared training loop: resume after a kill is bitwise identical; non-finite losses stop the run."""

from __future__ import annotations

import pytest
import torch

from kdbench.batching import encode_records
from kdbench.data import record_from_json
from kdbench.data.synthetic import generate_examples
from kdbench.errors import TrainingError
from kdbench.methods import Method, ScheduleContext, SupervisedFineTuning, discover_methods, instantiate, resolve_runs
from kdbench.models import build_model, load_tokenizer, train_bpe_tokenizer
from kdbench.train import LiveTeacher, TrainConfig, epoch_order, train

ARCH = {"init": "scratch", "architecture": {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2,
                                            "n_positions": 160}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    rows = [record_from_json(r, f"syn:{i}") for i, r in enumerate(generate_examples("train", 40, seed=1))]
    tok_dir = tmp_path_factory.mktemp("tok")
    train_bpe_tokenizer([t for r in rows for t in (r.prompt, r.output)], 320, tok_dir)
    tokenizer = load_tokenizer(tok_dir)
    encoded = encode_records(tokenizer, rows, max_prompt_tokens=96, max_length=160)
    return rows, tokenizer, encoded


def _run(tiny, method, *, checkpoint_dir=None, cfg=None, fail_after=None, teacher_seed=7):
    rows, tokenizer, encoded = tiny
    cfg = cfg or TrainConfig(epochs=3, lr=3e-3, global_batch_size=8, micro_batch_size=4, log_every=1,
                             checkpoint_every=2)
    student = build_model({**ARCH, "architecture": {**ARCH["architecture"], "resid_pdrop": 0.1}}, tokenizer, 0)
    teacher = LiveTeacher(build_model(ARCH, tokenizer, teacher_seed), torch.device("cpu"), torch.float32)
    ctx = ScheduleContext(tuple(r.id for r in rows), cfg.epochs, 5, None)
    if fail_after is not None:
        original = method.after_step
        calls = {"n": 0}

        def crashing(loss, step, logged):
            original(loss, step, logged)
            calls["n"] += 1
            if calls["n"] == fail_after:
                raise KeyboardInterrupt("simulated kill")
        method.after_step = crashing
    metrics = train(student, method, encoded, ctx, cfg, pad_id=tokenizer.pad_token_id, seed=5,
                    device=torch.device("cpu"), teacher=teacher if method.needs_teacher else None,
                    checkpoint_dir=checkpoint_dir, log=lambda _: None)
    return student, metrics


def _taid():
    methods = discover_methods("methods")
    return instantiate(resolve_runs({"methods": {"include": ["taid"]}}, methods)["taid"], methods)


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert epoch_order((1, 2, 3, 4, 5), 3, 0) == epoch_order((1, 2, 3, 4, 5), 3, 0)
    assert epoch_order((1, 2, 3, 4, 5), 3, 0) != epoch_order((1, 2, 3, 4, 5), 3, 1)


@pytest.mark.parametrize("kill_at", [1, 4, 5])
def test_resume_after_kill_is_bitwise_identical(tiny, tmp_path, kill_at):
    reference, ref_metrics = _run(tiny, _taid())
    with pytest.raises(KeyboardInterrupt):
        _run(tiny, _taid(), checkpoint_dir=tmp_path, fail_after=kill_at)
    assert (tmp_path / "checkpoint.pt").exists() == (kill_at >= 2)
    resumed, metrics = _run(tiny, _taid(), checkpoint_dir=tmp_path)
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert [h["loss"] for h in metrics["history"]] == [h["loss"] for h in ref_metrics["history"]]
    assert metrics["history"][-1]["t"] == ref_metrics["history"][-1]["t"]
    assert not (tmp_path / "checkpoint.pt").exists()   # a finished run removes its checkpoint


def test_gradient_accumulation_matches_one_big_batch(tiny):
    sft = lambda: SupervisedFineTuning(SupervisedFineTuning.Config())  # noqa: E731
    base = dict(epochs=1, lr=1e-3, global_batch_size=8, log_every=1)
    _, big = _run(tiny, sft(), cfg=TrainConfig(micro_batch_size=8, **base))
    _, small = _run(tiny, sft(), cfg=TrainConfig(micro_batch_size=8 // 2, **base))
    assert big["steps"] == small["steps"] == 5
    assert small["accumulation_steps"] == 2
    # Micro-batch means are averaged, so the first step's loss differs only by token weighting.
    assert small["history"][0]["loss"] == pytest.approx(big["history"][0]["loss"], rel=0.05)


def test_non_finite_loss_stops_with_step_and_example_ids(tiny, tmp_path):
    class Exploding(Method):
        needs_teacher = False

        def loss(self, student_logits, teacher_logits, labels, step):
            value = student_logits.mean() * 0 + (float("nan") if step.step == 3 else 1.0)
            return value, {}

    with pytest.raises(TrainingError, match=r"non-finite loss nan at step 3 .*example ids: syn-train-"):
        _run(tiny, Exploding(None), checkpoint_dir=tmp_path)
    assert (tmp_path / "checkpoint.pt").exists()   # the last good checkpoint is kept


def test_bad_global_batch_is_rejected(tiny):
    cfg = TrainConfig(epochs=1, lr=1e-3, global_batch_size=10, micro_batch_size=4)
    with pytest.raises(TrainingError, match="global_batch_size=10 is not a multiple"):
        _run(tiny, _taid(), cfg=cfg)


class _TwoStageSFT(SupervisedFineTuning):
    """POCL's shape on SFT: two cumulative stages (20 then 40 examples, one epoch each), optimiser and LR
    schedule restarted per stage."""

    def schedule(self, ctx):
        from kdbench.methods import cumulative_curriculum

        return cumulative_curriculum(ctx, list(range(len(ctx.example_ids))), 2, 1, lambda s: {})


@pytest.mark.parametrize("kill_at", [4, 5])
def test_resume_at_a_stage_boundary_starts_the_next_stage_with_a_fresh_optimiser(tiny, tmp_path, kill_at):
    """Stage 0 has 3 steps, so the checkpoint at step 3 is taken at the boundary and holds stage 0's
    optimiser, which the restarted stage 1 must not load; a kill during step 4 or 5 resumes from it."""
    cfg = TrainConfig(epochs=2, lr=3e-3, global_batch_size=8, micro_batch_size=8, log_every=1, checkpoint_every=3)
    reference, ref_metrics = _run(tiny, _TwoStageSFT(SupervisedFineTuning.Config()), cfg=cfg)
    assert [s["steps"] for s in ref_metrics["stages"]] == [3, 5] and ref_metrics["restart_optimizer_per_stage"]
    with pytest.raises(KeyboardInterrupt):
        _run(tiny, _TwoStageSFT(SupervisedFineTuning.Config()), cfg=cfg, checkpoint_dir=tmp_path, fail_after=kill_at)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert (saved["step"], saved["epoch"], saved["batch"], saved["optimizer_stage"]) == (3, 1, 0, 0)
    resumed, metrics = _run(tiny, _TwoStageSFT(SupervisedFineTuning.Config()), cfg=cfg, checkpoint_dir=tmp_path)
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert [h["loss"] for h in metrics["history"]] == [h["loss"] for h in ref_metrics["history"]]
    assert [h["lr"] for h in metrics["history"]] == [h["lr"] for h in ref_metrics["history"]]
