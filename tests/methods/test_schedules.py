"""Per-method schedule properties: what each paper says each epoch/stage sees."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdbench.difficulty import easy_to_hard, ranks, reciprocal_rank_fusion
from kdbench.methods import StepInfo, budget_matched_epochs_per_stage
from tests.methods.conftest import build, make_context, make_profile


def test_rrf_matches_reference_formula():
    # POCL tools/rank.py: 1/(rouge_rank + 60) + 1/(loss_rank + 60), both ranks 1 = easiest.
    rouge = np.array([90.0, 10.0, 50.0])
    ce = np.array([2.0, 1.0, 3.0])
    r_rank = ranks(rouge, larger_is_easier=True)      # [1, 3, 2]
    c_rank = ranks(ce, larger_is_easier=False)        # [2, 1, 3]
    assert r_rank.tolist() == [1, 3, 2] and c_rank.tolist() == [2, 1, 3]
    score = reciprocal_rank_fusion([r_rank, c_rank], k=60)
    assert score == pytest.approx([1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62 + 1 / 63])


def test_pocl_stages_sizes_temperatures_and_kd_ratios(methods, runs):
    ctx = make_context(n=103, epochs=10)
    method = build(methods, runs, "pocl-fkl")
    schedule = method.schedule(ctx)
    assert schedule.restart_optimizer_per_stage
    assert [len(s.epochs[0].indices) for s in schedule.stages] == [25, 50, 75, 103]
    assert [len(s.epochs) for s in schedule.stages] == [4] * 4          # round(2*10/5)
    temps = [s.epochs[0].params["temperature"] for s in schedule.stages]
    ratios = [s.epochs[0].params["kd_ratio"] for s in schedule.stages]
    assert temps == pytest.approx([1.0, 4 / 3, 5 / 3, 2.0])
    assert ratios == pytest.approx([0.7, 0.8, 0.9, 1.0])
    # Cumulative prefixes of one easy->hard order.
    order = easy_to_hard(ctx.difficulty, ["student_rouge_l", "student_ce"], 60)
    position = {i: p for p, i in enumerate(ctx.example_ids)}
    for stage in schedule.stages:
        subset = stage.epochs[0].indices
        assert list(subset) == [position[i] for i in order[:len(subset)]]
    assert sorted(schedule.stages[-1].epochs[0].indices) == list(range(103))


def test_pocl_budget_matches_paper():
    assert budget_matched_epochs_per_stage(20, 4) == 8  # POCL: 8 epochs/stage vs 20-epoch KD
    ctx = make_context(n=400, epochs=20)
    assert budget_matched_epochs_per_stage(ctx.epochs, 4) * (0.25 + 0.5 + 0.75 + 1.0) == 20


def test_pocl_t2_policy_follows_released_code(methods, runs):
    expected = {"fkl": True, "rkl": False, "jsd": True, "tvd": False, "sfkl": False, "srkl": True}
    for loss, scaled in expected.items():
        assert build(methods, runs, f"pocl-{loss}").scale_by_t2() is scaled
    assert build(methods, runs, "pocl-rkl", t2_policy="always").scale_by_t2() is True
    assert build(methods, runs, "pocl-fkl", t2_policy="never").scale_by_t2() is False


@pytest.mark.parametrize("run_name", ["pocl-fkl", "cpd", "l2m_kd", "taid", "vanilla_kd-fkl"])
def test_schedules_are_deterministic_and_cover_every_example(methods, runs, run_name):
    ctx = make_context(n=97, epochs=6, seed=3)
    first = build(methods, runs, run_name).schedule(ctx)
    second = build(methods, runs, run_name).schedule(ctx)
    assert first == second
    # Every method ends on (or always uses) the full training set.
    assert sorted(first.epochs[-1].indices) == list(range(97))


def test_cpd_mean_difficulty_rises_in_equal_steps(methods, runs):
    from kdbench_methods.cpd import difficulty_values  # registered by discovery

    profile = make_profile(2000, seed=5)
    ctx = make_context(epochs=8, profile=profile)
    method = build(methods, runs, "cpd")
    schedule = method.schedule(ctx)
    values = difficulty_values(profile, method.config)
    means = [values[list(e.indices)].mean() for e in schedule.epochs]
    steps = np.diff(means)
    assert len(means) == 8 and np.all(steps > 0)
    assert steps == pytest.approx(np.full(7, (means[-1] - means[0]) / 7), rel=0.02)
    # Subsets are nested easiest prefixes, the first is start_fraction of the data, the last all of it.
    sizes = [len(e.indices) for e in schedule.epochs]
    assert sizes[0] == 500 and sizes[-1] == 2000 and sizes == sorted(sizes)
    # Mixing coefficient and temperature follow the progression: teacher-dominated first.
    alphas = [e.params["alpha"] for e in schedule.epochs]
    temps = [e.params["temperature"] for e in schedule.epochs]
    assert alphas[0] == 0.0 and alphas[-1] == pytest.approx(0.2) and np.all(np.diff(alphas) > 0)
    assert temps[0] == 1.0 and temps[-1] == pytest.approx(2.0)
    # Fewer examples than E full epochs: where CPD's runtime saving comes from.
    assert schedule.examples_seen() < 0.9 * 8 * 2000


def test_cpd_subset_sizes_adapt_to_profile_shape(methods, runs):
    """A skewed profile (most examples easy) needs different subset sizes than a uniform one."""
    method = build(methods, runs, "cpd", difficulty="normalised_signals", signals=["student_ce"])
    uniform = make_profile(1000, seed=1)
    uniform["student_ce"] = np.linspace(0, 1, 1000)
    skewed = uniform.copy()
    skewed["student_ce"] = np.linspace(0, 1, 1000) ** 4
    sizes_u = [len(e.indices) for e in method.schedule(make_context(epochs=5, profile=uniform)).epochs]
    sizes_s = [len(e.indices) for e in method.schedule(make_context(epochs=5, profile=skewed)).epochs]
    assert sizes_u != sizes_s


def test_l2m_kd_ranks_by_rouge_and_moves_from_kld_to_skew_kld(methods, runs):
    ctx = make_context(n=80, epochs=5)
    method = build(methods, runs, "l2m_kd")
    schedule = method.schedule(ctx)
    alphas = [s.epochs[0].params["alpha"] for s in schedule.stages]
    assert alphas[0] == 0.0 and alphas[-1] == pytest.approx(0.1) and np.all(np.diff(alphas) > 0)
    first_stage = [ctx.example_ids[i] for i in schedule.stages[0].epochs[0].indices]
    rouge = ctx.difficulty["student_rouge_l"]
    assert rouge[first_stage].min() >= rouge.drop(first_stage).max()
    step = build(methods, runs, "l2m_kd", transition="step").schedule(ctx)
    assert [s.epochs[0].params["alpha"] for s in step.stages] == [0.0, 0.1, 0.1, 0.1]


def _taid_trace(method, losses, total_steps):
    ts = []
    for n, loss in enumerate(losses):
        method.after_step(loss, StepInfo(step=n, total_steps=total_steps, stage=0, num_stages=1, epoch=0, params={}),
                          {"kd": loss})
        ts.append(method.t)
    return ts


def test_taid_t_is_monotone_above_linear_and_capped(methods, runs):
    rng = np.random.default_rng(0)
    losses = list(np.exp(-np.linspace(0, 3, 200)) + 0.05 * rng.random(200))
    method = build(methods, runs, "taid", alpha=0.05)
    ts = _taid_trace(method, losses, total_steps=200)
    linear = [0.4 + 0.6 * n / 200 for n in range(200)]
    assert ts[0] == 0.4                                  # first step only records the loss
    assert all(b >= a for a, b in zip(ts, ts[1:]))
    assert all(t >= lin - 1e-12 for t, lin in zip(ts[1:], linear[1:]))
    assert max(ts) <= 1.0
    assert any(t > lin + 1e-6 for t, lin in zip(ts, linear))  # the adaptive term matters with alpha 0.05


def test_taid_update_matches_reference_formula(methods, runs):
    method = build(methods, runs, "taid")
    _taid_trace(method, [2.0], total_steps=100)
    _taid_trace(method, [1.5], total_steps=100)   # called with step index 0 again: linear term at step 0
    delta = (2.0 - 1.5) / (2.0 + 1e-15)
    momentum = 0.01 * delta
    expected = min(1.0, max(0.4, 0.4 + 5e-4 / (1 + math.exp(-momentum)) * 0.6))
    assert method.momentum == pytest.approx(momentum)
    assert method.t == pytest.approx(expected)
    restored = build(methods, runs, "taid")
    restored.load_state_dict(method.state_dict())
    assert restored.state_dict() == method.state_dict()


def test_taid_adaptive_term_acts_only_beyond_the_budget_its_alpha_implies(methods, runs):
    """With the paper's alpha = 5e-4 the adaptive increment alpha·sigmoid(m)·(1 − t) <= 3e-4 per step at
    t_start 0.4 is smaller than the linear floor's slope 0.6/N unless N is above ~4000 steps: in a
    1000-step run t is exactly linear (methods/taid/README.md), in a 12000-step run the adaptive term acts."""
    for total, acts in ((1000, False), (12000, True)):
        losses = list(np.exp(-np.linspace(0, 3, total)) + 0.5)
        method = build(methods, runs, "taid")
        ts = _taid_trace(method, losses, total_steps=total)
        assert (method.adaptive_steps > 0) == acts, (total, method.adaptive_steps)
        linear = [0.4 + 0.6 * n / total for n in range(total)]
        assert any(t > lin + 1e-9 for t, lin in zip(ts, linear)) == acts
